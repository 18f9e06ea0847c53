"""Cohort rule operators, all/any/not nesting and rule validation messages. Runs without Django."""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import IntEnum, StrEnum
from typing import Any

import pytest
from turnout.engine import RuleError, compile_ruleset, validate_rules


def matches(rule: dict[str, Any], attributes: Any) -> bool:
    """Whether a subject lands in a cohort holding only this rule (via a real decision)."""
    validate_rules(rule)
    doc = {
        "schema": 1,
        "environment": "t",
        "version": 1,
        "cohorts": {"c": {"rules": rule}},
        "flags": {"f": {"enabled": True, "percentage": 0, "include_cohorts": ["c"]}},
    }
    d = compile_ruleset(doc).decide("f", "user-1", attributes)
    assert d.error_code is None
    return d.rule == "cohort:c"


def cond(attr: str, op: str, *values: Any) -> dict[str, Any]:
    return {"attr": attr, "op": op, "values": list(values)} if op != "exists" else {"attr": attr, "op": op}


class Plan(StrEnum):
    PRO = "pro"


class Level(IntEnum):
    FIVE = 5


# (condition, attribute value, expected); "MISSING" means the attribute is absent.
MISSING = object()
OP_CASES: list[tuple[str, dict[str, Any], Any, bool]] = [
    # eq / ne
    ("eq_true", cond("a", "eq", "pro", "team"), "team", True),
    ("eq_false", cond("a", "eq", "pro"), "free", False),
    ("eq_missing", cond("a", "eq", "pro"), MISSING, False),
    ("eq_none", cond("a", "eq", "pro"), None, False),
    ("eq_incomparable", cond("a", "eq", "1"), 1, False),
    ("eq_number", cond("a", "eq", 1), 1.0, True),
    ("eq_bool_is_not_number", cond("a", "eq", 1), True, False),
    ("eq_number_is_not_bool", cond("a", "eq", True), 1, False),
    ("eq_bool", cond("a", "eq", False), False, True),
    ("eq_mixed_values", cond("a", "eq", "x", 2), 2, True),
    ("eq_list_attr", cond("a", "eq", "x"), ["x"], False),
    ("eq_str_enum", cond("a", "eq", "pro"), Plan.PRO, True),
    ("ne_true", cond("a", "ne", "pro"), "free", True),
    ("ne_false", cond("a", "ne", "pro", "free"), "free", False),
    ("ne_missing", cond("a", "ne", "pro"), MISSING, False),
    ("ne_incomparable", cond("a", "ne", "pro"), 3, False),
    ("ne_number", cond("a", "ne", 3, "x"), 4, True),
    # in / not_in
    ("in_true", cond("a", "in", "DE", "FR"), "FR", True),
    ("in_false", cond("a", "in", "DE", "FR"), "IT", False),
    ("in_missing", cond("a", "in", "DE"), MISSING, False),
    ("in_incomparable", cond("a", "in", "DE"), {"DE": 1}, False),
    ("in_numbers", cond("a", "in", 1, 2, 3), 2, True),
    ("not_in_true", cond("a", "not_in", "DE", "FR"), "IT", True),
    ("not_in_false", cond("a", "not_in", "DE", "FR"), "DE", False),
    ("not_in_missing", cond("a", "not_in", "DE"), MISSING, False),
    ("not_in_incomparable", cond("a", "not_in", "DE"), 7, False),
    # contains
    ("contains_substring", cond("a", "contains", "@corp"), "x@corp.com", True),
    ("contains_substring_false", cond("a", "contains", "@corp"), "x@home.com", False),
    ("contains_list_member", cond("a", "contains", "admin"), ["dev", "admin"], True),
    ("contains_list_non_member", cond("a", "contains", "admin"), ["dev"], False),
    ("contains_list_number", cond("a", "contains", 3), [1, 3], True),
    ("contains_list_bool_not_number", cond("a", "contains", 1), [True], False),
    ("contains_missing", cond("a", "contains", "x"), MISSING, False),
    ("contains_incomparable", cond("a", "contains", "1"), 1, False),
    # starts_with / ends_with
    ("starts_with_true", cond("a", "starts_with", "eu-", "us-"), "us-east", True),
    ("starts_with_false", cond("a", "starts_with", "eu-"), "us-east", False),
    ("starts_with_missing", cond("a", "starts_with", "eu-"), MISSING, False),
    ("starts_with_incomparable", cond("a", "starts_with", "1"), 12, False),
    ("ends_with_true", cond("a", "ends_with", ".de"), "shop.de", True),
    ("ends_with_false", cond("a", "ends_with", ".de"), "shop.fr", False),
    ("ends_with_missing", cond("a", "ends_with", ".de"), MISSING, False),
    ("ends_with_incomparable", cond("a", "ends_with", "e"), ["de"], False),
    # matches
    ("matches_true", cond("a", "matches", r"^user-\d+$"), "user-12", True),
    ("matches_search_not_full", cond("a", "matches", r"\d"), "abc1def", True),
    ("matches_false", cond("a", "matches", r"^user-\d+$"), "user-x", False),
    ("matches_missing", cond("a", "matches", "x"), MISSING, False),
    ("matches_incomparable", cond("a", "matches", "1"), 1, False),
    # lt lte gt gte
    ("lt_true", cond("a", "lt", 18), 17, True),
    ("lt_false", cond("a", "lt", 18), 18, False),
    ("lte_true", cond("a", "lte", 18), 18, True),
    ("lte_false", cond("a", "lte", 18), 18.5, False),
    ("gt_true", cond("a", "gt", 1.5), 2, True),
    ("gt_false", cond("a", "gt", 1.5), 1.5, False),
    ("gte_true", cond("a", "gte", 18), 18, True),
    ("gte_false", cond("a", "gte", 18), 17.99, False),
    ("gte_int_enum", cond("a", "gte", 5), Level.FIVE, True),
    ("gte_missing", cond("a", "gte", 18), MISSING, False),
    ("gte_string_incomparable", cond("a", "gte", 18), "30", False),
    ("gte_bool_is_not_number", cond("a", "gte", 0), True, False),
    ("lt_bool_is_not_number", cond("a", "lt", 5), False, False),
    ("gt_nan", cond("a", "gt", 0), float("nan"), False),
    ("lt_uses_first_value", cond("a", "lt", 10, 100), 50, False),
    # semver
    ("semver_lt_true", cond("a", "semver_lt", "2.10.0"), "2.9.9", True),
    ("semver_lt_false", cond("a", "semver_lt", "2.10.0"), "2.10.0", False),
    ("semver_gte_true", cond("a", "semver_gte", "2.10.0"), "10.0.0", True),
    ("semver_gte_equal", cond("a", "semver_gte", "2.10.0"), "2.10.0", True),
    ("semver_gte_false", cond("a", "semver_gte", "2.10.0"), "2.9.10", False),
    ("semver_missing", cond("a", "semver_gte", "1.0.0"), MISSING, False),
    ("semver_unparseable", cond("a", "semver_gte", "1.0.0"), "1.2", False),
    ("semver_prerelease_unparseable", cond("a", "semver_lt", "9.0.0"), "1.2.3-beta", False),
    ("semver_incomparable", cond("a", "semver_lt", "9.0.0"), 1, False),
    # before / after
    ("before_true", cond("a", "before", "2026-01-01T00:00:00Z"), "2025-12-31T23:59:59Z", True),
    ("before_false", cond("a", "before", "2026-01-01T00:00:00Z"), "2026-01-01T00:00:00Z", False),
    ("before_offset", cond("a", "before", "2026-01-01T00:00:00Z"), "2026-01-01T00:30:00+01:00", True),
    ("before_naive_is_utc", cond("a", "before", "2026-01-01T00:00:00+00:00"), "2025-12-31T23:00:00", True),
    ("before_epoch_attr", cond("a", "before", "2026-01-01T00:00:00Z"), 1_767_225_599, True),
    ("before_epoch_value", cond("a", "before", 1_767_225_600), "2025-12-31T23:59:59Z", True),
    ("after_true", cond("a", "after", "2026-01-01"), "2026-01-02", True),
    ("after_false", cond("a", "after", "2026-01-01"), "2025-06-01T12:00:00", False),
    ("after_datetime_attr", cond("a", "after", "2026-01-01T00:00:00Z"), datetime(2026, 1, 2, tzinfo=UTC), True),
    ("after_date_attr", cond("a", "after", "2026-01-01T00:00:00Z"), date(2026, 1, 2), True),
    ("after_missing", cond("a", "after", "2026-01-01"), MISSING, False),
    ("after_unparseable", cond("a", "after", "2026-01-01"), "next tuesday", False),
    ("after_bool_incomparable", cond("a", "after", 0), True, False),
    # exists
    ("exists_true", cond("a", "exists"), "x", True),
    ("exists_false_value_counts", cond("a", "exists"), False, True),
    ("exists_empty_string", cond("a", "exists"), "", True),
    ("exists_none", cond("a", "exists"), None, False),
    ("exists_missing", cond("a", "exists"), MISSING, False),
]


@pytest.mark.parametrize(("rule", "value", "expected"), [c[1:] for c in OP_CASES], ids=[c[0] for c in OP_CASES])
def test_condition__op_case__expected(rule: dict[str, Any], value: Any, expected: bool) -> None:
    attributes = {} if value is MISSING else {"a": value}
    assert matches(rule, attributes) is expected


def test_condition__every_op__covered() -> None:
    from turnout._rules import OPS

    assert {c[1]["op"] for c in OP_CASES} == OPS


def test_condition__exists_with_empty_values__valid() -> None:
    assert matches({"attr": "a", "op": "exists", "values": []}, {"a": 1})


# -- all / any / not ---------------------------------------------------------------------------

PRO = cond("plan", "eq", "pro")
ADULT = cond("age", "gte", 18)
EU = cond("country", "in", "DE", "FR")


@pytest.mark.parametrize(
    ("rule", "attributes", "expected"),
    [
        ({"all": [PRO, ADULT]}, {"plan": "pro", "age": 20}, True),
        ({"all": [PRO, ADULT]}, {"plan": "pro", "age": 10}, False),
        ({"any": [PRO, ADULT]}, {"plan": "free", "age": 20}, True),
        ({"any": [PRO, ADULT]}, {"plan": "free", "age": 10}, False),
        ({"not": PRO}, {"plan": "free"}, True),
        ({"not": PRO}, {"plan": "pro"}, False),
        ({"not": PRO}, {}, True),
        ({"not": cond("plan", "ne", "pro")}, {}, True),
        ({"all": [{"any": [PRO, EU]}, {"not": ADULT}]}, {"country": "DE", "age": 12}, True),
        ({"all": [{"any": [PRO, EU]}, {"not": ADULT}]}, {"country": "DE", "age": 40}, False),
        ({"all": [{"any": [PRO, EU]}, {"not": ADULT}]}, {"country": "US", "age": 12}, False),
        ({"any": [{"all": [PRO, ADULT]}, {"all": [EU]}]}, {"country": "FR"}, True),
        ({"not": {"not": {"all": [PRO]}}}, {"plan": "pro"}, True),
        ({"not": {"all": [PRO, ADULT, EU]}}, {"plan": "pro", "age": 30, "country": "DE"}, False),
        ({"not": {"all": [PRO, ADULT, EU]}}, {"plan": "pro", "age": 30, "country": "US"}, True),
        (PRO, {"plan": "pro"}, True),  # a bare condition at the top
    ],
)
def test_rules__nesting__expected(rule: dict[str, Any], attributes: dict[str, Any], expected: bool) -> None:
    assert matches(rule, attributes) is expected


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("rules", [None, {}, {"all": []}, {"any": []}, {"all": [PRO]}, {"not": PRO}, PRO])
def test_validate_rules__valid__no_error(rules: Any) -> None:
    validate_rules(rules)


RULE_ERRORS = [
    ([PRO], "rules: must be an object"),
    ({"all": [PRO, PRO, {"attr": "a", "op": "foo", "values": [1]}]}, r"rules\.all\[2\]\.op: unknown operator 'foo'"),
    ({"any": [{"attr": "a", "op": "lt", "values": ["x"]}]}, r"rules\.any\[0\]\.values: 'lt' needs a number"),
    ({"any": [{"attr": "a", "op": "gte", "values": [True]}]}, r"rules\.any\[0\]\.values: 'gte' needs a number"),
    (
        {"all": [{"attr": "a", "op": "matches", "values": ["ok", "(unclosed"]}]},
        r"rules\.all\[0\]\.values\[1\]: bad regex for 'matches'",
    ),
    (
        {"all": [{"attr": "a", "op": "semver_lt", "values": ["1.2"]}]},
        r"rules\.all\[0\]\.values: 'semver_lt' needs a version",
    ),
    (
        {"all": [{"attr": "a", "op": "semver_gte", "values": [1]}]},
        r"rules\.all\[0\]\.values: 'semver_gte' needs a version",
    ),
    (
        {"all": [{"attr": "a", "op": "before", "values": ["soon"]}]},
        r"rules\.all\[0\]\.values: 'before' needs an ISO-8601 timestamp",
    ),
    ({"all": [{"attr": "a", "op": "after", "values": [False]}]}, r"rules\.all\[0\]\.values: 'after' needs an ISO-8601"),
    (
        {"all": [{"attr": "a", "op": "starts_with", "values": [1]}]},
        r"rules\.all\[0\]\.values\[0\]: 'starts_with' needs strings",
    ),
    ({"all": [{"attr": "a", "op": "eq", "values": []}]}, r"rules\.all\[0\]\.values: 'eq' needs a non-empty list"),
    ({"all": [{"attr": "a", "op": "eq", "values": "pro"}]}, r"rules\.all\[0\]\.values: 'eq' needs a non-empty list"),
    ({"all": [{"attr": "a", "op": "eq"}]}, r"rules\.all\[0\]\.values: 'eq' needs"),
    (
        {"all": [{"attr": "a", "op": "in", "values": ["x", None]}]},
        r"rules\.all\[0\]\.values\[1\]: must be a string, number or boolean",
    ),
    ({"all": [{"attr": "a", "op": "in", "values": [["x"]]}]}, r"rules\.all\[0\]\.values\[0\]: must be a string"),
    (
        {"all": [{"attr": "a", "op": "eq", "values": [float("inf")]}]},
        r"rules\.all\[0\]\.values\[0\]: must be a finite number",
    ),
    ({"all": [{"attr": "a", "op": "exists", "values": ["x"]}]}, r"rules\.all\[0\]\.values: 'exists' takes no values"),
    ({"all": [{"attr": "", "op": "exists"}]}, r"rules\.all\[0\]\.attr: must be a non-empty string"),
    ({"all": [{"attr": 3, "op": "exists"}]}, r"rules\.all\[0\]\.attr:"),
    ({"all": [{"op": "exists"}]}, r"rules\.all\[0\]\.attr:"),
    ({"all": [{"attr": "a", "op": "eq", "values": [1], "extra": 1}]}, r"rules\.all\[0\]: unknown field 'extra'"),
    ({"all": [{"attr": "a", "op": None}]}, r"rules\.all\[0\]\.op: unknown operator None"),
    ({"all": PRO}, r"rules\.all: must be a list of rules"),
    ({"all": [{"any": []}]}, r"rules\.all\[0\]\.any: must not be empty"),
    ({"all": [PRO], "any": [PRO]}, r"rules: must have exactly one of all/any/not"),
    ({"some": [PRO]}, r"rules: must have exactly one of all/any/not, or attr/op \(got some\)"),
    ({"not": [PRO]}, r"rules\.not: must be an object"),
    (
        {"not": {"not": {"all": [{"attr": "a", "op": "lte", "values": [None]}]}}},
        r"rules\.not\.not\.all\[0\]\.values\[0\]:",
    ),
    ({"all": [PRO], "attr": "a", "op": "exists"}, r"rules: a condition cannot also have 'all'"),
    ("plan == pro", r"rules: must be an object"),
]


@pytest.mark.parametrize(("rules", "message"), RULE_ERRORS)
def test_validate_rules__invalid__message_names_the_part(rules: Any, message: str) -> None:
    with pytest.raises(RuleError, match="^" + message):
        validate_rules(rules)


def test_validate_rules__too_deep__rule_error_not_recursion_error() -> None:
    rules: dict[str, Any] = PRO
    for _ in range(5_000):
        rules = {"not": rules}
    with pytest.raises(RuleError, match="deeper than"):
        validate_rules(rules)


def test_rule_error__is_a_value_error() -> None:
    assert issubclass(RuleError, ValueError)
