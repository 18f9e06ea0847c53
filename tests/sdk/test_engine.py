"""turnout.engine: bucketing, decision order, compare sampling, errors, evaluate(), explain_cohort().

Runs without Django.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import subprocess
import sys
from typing import Any

import pytest
from turnout import engine
from turnout.engine import (
    Ruleset,
    RulesetError,
    bucket,
    compile_ruleset,
    evaluate,
    explain_cohort,
    validate_ruleset,
)
from turnout.types import Decision, ErrorCode, Path, Reason


def make_doc(
    flags: dict[str, Any] | None = None, cohorts: dict[str, Any] | None = None, version: int = 7
) -> dict[str, Any]:
    return {"schema": 1, "environment": "test", "version": version, "cohorts": cohorts or {}, "flags": flags or {}}


def make_flag(**fields: Any) -> dict[str, Any]:
    flag: dict[str, Any] = {
        "enabled": True,
        "retired": False,
        "salt": "f",
        "bucket_by": None,
        "overrides": {},
        "exclude_cohorts": [],
        "include_cohorts": [],
        "percentage": 0.0,
        "compare_percentage": 0.0,
        "stage": 3,
    }
    flag.update(fields)
    return flag


def decide(flag: dict[str, Any], key: Any = "user-1", attributes: Any = None, cohorts: Any = None) -> Decision:
    return compile_ruleset(make_doc({"f": flag}, cohorts)).decide("f", key, attributes)


def ref_bucket(salt: str, value: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}/{value}".encode()).digest()[:8], "big") % 1_000_000


# -- bucket ------------------------------------------------------------------------------------

# Known answers, computed once with hashlib from DESIGN's formula. Any SDK must reproduce them.
BUCKET_VECTORS = [
    ("invoice-engine", "user-1", 167360),
    ("invoice-engine", "user-2", 678714),
    ("invoice-engine/compare", "user-1", 674039),
    ("salt", "tenant-42", 680464),
    ("x", "", 444870),
    ("flag", "True", 477638),
    ("flag", "42", 640941),
    ("ünï", "кей", 681002),
    ("a/b", "c", 863788),
]


@pytest.mark.parametrize(("salt", "value", "expected"), BUCKET_VECTORS)
def test_bucket__known_vector__matches(salt: str, value: str, expected: int) -> None:
    assert bucket(salt, value) == expected
    assert ref_bucket(salt, value) == expected


@pytest.mark.parametrize(("salt", "value", "expected"), [v for v in BUCKET_VECTORS if v[1]])
def test_decide__split_bucket__equals_bucket_function(salt: str, value: str, expected: int) -> None:
    d = decide(make_flag(salt=salt, percentage=50), key=value)
    assert d.bucket == expected
    assert d.path is (Path.PARALLEL if expected < 500_000 else Path.LEGACY)


def test_split__threshold__is_round_percentage_times_10000() -> None:
    # user-1 under salt "invoice-engine" is in bucket 167360: in at 16.7361%, out at 16.736%.
    assert decide(make_flag(salt="invoice-engine", percentage=16.7361)).path is Path.PARALLEL
    assert decide(make_flag(salt="invoice-engine", percentage=16.736)).path is Path.LEGACY
    assert decide(make_flag(salt="invoice-engine", percentage=0)).path is Path.LEGACY
    assert decide(make_flag(salt="invoice-engine", percentage=100)).path is Path.PARALLEL


def test_split__in__parallel_split_with_bucket() -> None:
    d = decide(make_flag(percentage=100))
    assert d == Decision("f", Path.PARALLEL, Reason.SPLIT, False, None, "split", ref_bucket("f", "user-1"), 3, 7)


def test_split__out__legacy_default_with_bucket() -> None:
    d = decide(make_flag(percentage=0))
    assert d == Decision("f", Path.LEGACY, Reason.DEFAULT, False, None, "default", ref_bucket("f", "user-1"), 3, 7)


def test_split__no_salt__defaults_to_flag_key() -> None:
    flag = make_flag(percentage=50)
    del flag["salt"]
    assert decide(flag).bucket == ref_bucket("f", "user-1")


def test_split__bucket_by_attribute__buckets_that_value() -> None:
    d = decide(make_flag(percentage=100, bucket_by="tenant_id"), attributes={"tenant_id": "t-9"})
    assert d.bucket == ref_bucket("f", "t-9")
    assert d.reason is Reason.SPLIT


@pytest.mark.parametrize("attributes", [None, {}, {"tenant_id": None}, {"other": "x"}])
def test_split__bucket_by_missing__legacy_default_without_bucket(attributes: Any) -> None:
    d = decide(make_flag(percentage=100, bucket_by="tenant_id"), attributes=attributes)
    assert (d.path, d.reason, d.rule, d.bucket) == (Path.LEGACY, Reason.DEFAULT, "default", None)


@pytest.mark.parametrize(
    ("value", "as_string"),
    [(42, "42"), (True, "True"), (False, "False"), (4.0, "4.0"), (-1, "-1"), (["a", 1], "['a', 1]")],
)
def test_split__non_string_bucket_value__bucketed_by_str(value: Any, as_string: str) -> None:
    d = decide(make_flag(percentage=100, bucket_by="tenant_id"), attributes={"tenant_id": value})
    assert d.bucket == ref_bucket("f", as_string)


@pytest.mark.parametrize("percentage", [0, 0.01, 25, 50, 99.99, 100])
def test_split__specialised_plain_split__same_as_general_path(percentage: float) -> None:
    flag = make_flag(salt="s", percentage=percentage)
    fast = engine._compile_flag("f", flag, {}, 7)
    general = engine._compile_flag("f", flag, {}, 7, specialize=False)
    assert fast.__name__ == "plain_split" and general.__name__ == "decide_flag"
    for i in range(500):
        assert fast(f"k{i}", None) == general(f"k{i}", None)


# -- compare -----------------------------------------------------------------------------------


def test_compare__zero_percentage__always_false() -> None:
    assert not decide(make_flag(percentage=100, compare_percentage=0)).compare


def test_compare__hundred_percentage__always_true() -> None:
    assert decide(make_flag(percentage=100, compare_percentage=100)).compare
    assert decide(make_flag(percentage=0, compare_percentage=100)).compare


def test_compare__sampled__uses_salt_compare_bucket_of_key() -> None:
    flag = make_flag(salt="invoice-engine", percentage=50, bucket_by="tenant_id", compare_percentage=50)
    ruleset = compile_ruleset(make_doc({"f": flag}))
    for i in range(300):
        key = f"user-{i}"
        expected = ref_bucket("invoice-engine/compare", key) < 500_000
        assert ruleset.decide("f", key, {"tenant_id": "t-1"}).compare is expected


def test_compare__sampled__about_the_percentage() -> None:
    ruleset = compile_ruleset(make_doc({"f": make_flag(percentage=30, compare_percentage=10)}))
    share = sum(ruleset.decide("f", f"k{i}").compare for i in range(20_000)) / 20_000
    assert 0.09 < share < 0.11


@pytest.mark.parametrize(
    "flag",
    [
        make_flag(enabled=False, compare_percentage=100),
        make_flag(retired=True, compare_percentage=100),
    ],
)
def test_compare__disabled_or_static__false(flag: dict[str, Any]) -> None:
    assert decide(flag).compare is False


def test_compare__error__false() -> None:
    ruleset = compile_ruleset(make_doc({"f": make_flag(compare_percentage=100)}))
    assert ruleset.decide("f", None).compare is False
    assert ruleset.decide("nope", "k").compare is False


@pytest.mark.parametrize("where", ["override", "exclude", "include", "unbucketed"])
def test_compare__targeting_and_default__sampled_over_key(where: str) -> None:
    cohorts = {"c": {"include": ["user-1"]}}
    fields: dict[str, Any] = {"compare_percentage": 100}
    if where == "override":
        fields["overrides"] = {"user-1": "parallel"}
    elif where == "exclude":
        fields["exclude_cohorts"] = ["c"]
    elif where == "include":
        fields["include_cohorts"] = ["c"]
    else:
        fields["bucket_by"] = "tenant_id"
    assert decide(make_flag(**fields), cohorts=cohorts).compare is True


# -- decision order ----------------------------------------------------------------------------


def oracle(
    enabled: bool, retired: bool, override: str | None, excluded: bool, included: bool, in_split: bool
) -> tuple[Path, Reason, str]:
    """DESIGN's decision order, spelled out."""
    if not enabled:
        return Path.LEGACY, Reason.DISABLED, "disabled"
    if retired:
        return Path.PARALLEL, Reason.STATIC, "retired"
    if override is not None:
        return Path(override), Reason.TARGETING_MATCH, "override"
    if excluded:
        return Path.LEGACY, Reason.TARGETING_MATCH, "cohort:blocked"
    if included:
        return Path.PARALLEL, Reason.TARGETING_MATCH, "cohort:pilot"
    if in_split:
        return Path.PARALLEL, Reason.SPLIT, "split"
    return Path.LEGACY, Reason.DEFAULT, "default"


ORDER_CASES = list(
    itertools.product(
        [True, False], [False, True], [None, "legacy", "parallel"], [False, True], [False, True], [False, True]
    )
)


@pytest.mark.parametrize(("enabled", "retired", "override", "excluded", "included", "in_split"), ORDER_CASES)
def test_decide__every_combination__follows_design_order(
    enabled: bool, retired: bool, override: str | None, excluded: bool, included: bool, in_split: bool
) -> None:
    cohorts = {
        "blocked": {"include": ["user-1"] if excluded else ["someone-else"]},
        "pilot": {"include": ["user-1"] if included else ["someone-else"]},
    }
    flag = make_flag(
        enabled=enabled,
        retired=retired,
        overrides={"user-1": override} if override else {},
        exclude_cohorts=["blocked"],
        include_cohorts=["pilot"],
        percentage=100 if in_split else 0,
    )
    d = decide(flag, cohorts=cohorts)
    assert (d.path, d.reason, d.rule) == oracle(enabled, retired, override, excluded, included, in_split)
    assert d.error_code is None
    assert (d.stage, d.version, d.flag) == (3, 7, "f")
    assert (d.bucket is not None) == (d.rule in ("split", "default"))


def test_decide__several_cohorts__first_matching_named() -> None:
    cohorts = {"a": {"include": ["x"]}, "b": {"include": ["user-1"]}, "c": {"include": ["user-1"]}}
    d = decide(make_flag(include_cohorts=["a", "b", "c"]), cohorts=cohorts)
    assert d.rule == "cohort:b"


def test_decide__exclude_cohort__wins_over_include_cohort() -> None:
    cohorts = {"pilot": {"include": ["user-1"]}, "regulated": {"include": ["user-1"]}}
    d = decide(make_flag(exclude_cohorts=["regulated"], include_cohorts=["pilot"], percentage=100), cohorts=cohorts)
    assert (d.path, d.rule) == (Path.LEGACY, "cohort:regulated")


# -- cohort membership -------------------------------------------------------------------------


def cohort_decision(cohort: dict[str, Any], key: str = "user-1", attributes: Any = None) -> bool:
    d = decide(make_flag(include_cohorts=["c"]), key=key, attributes=attributes, cohorts={"c": cohort})
    return d.rule == "cohort:c"


def test_cohort__listed_in_include__matches() -> None:
    assert cohort_decision({"include": ["user-1"]})


def test_cohort__rules_match_but_listed_in_exclude__no_match() -> None:
    rules = {"all": [{"attr": "plan", "op": "eq", "values": ["pro"]}]}
    assert cohort_decision({"rules": rules}, attributes={"plan": "pro"})
    assert not cohort_decision({"rules": rules, "exclude": ["user-1"]}, attributes={"plan": "pro"})


def test_cohort__in_include_and_exclude__no_match() -> None:
    assert not cohort_decision({"include": ["user-1"], "exclude": ["user-1"]})


@pytest.mark.parametrize("rules", [None, {}, {"all": []}, {"any": []}])
def test_cohort__no_rules__matches_only_by_include(rules: Any) -> None:
    assert not cohort_decision({"rules": rules, "include": []}, attributes={"plan": "pro"})
    assert cohort_decision({"rules": rules, "include": ["user-1"]})


def test_cohort__match_on__lists_hold_attribute_values() -> None:
    cohort = {"match_on": "tenant_id", "include": ["t-1"], "exclude": ["t-9"]}
    assert cohort_decision(cohort, key="anyone", attributes={"tenant_id": "t-1"})
    assert not cohort_decision(cohort, key="t-1", attributes={"tenant_id": "t-2"})
    assert not cohort_decision(cohort, key="t-1")


def test_cohort__match_on_non_string__compared_as_str() -> None:
    cohort = {"match_on": "tenant_id", "include": ["42"]}
    assert cohort_decision(cohort, attributes={"tenant_id": 42})


def test_cohort__match_on_excluded__rules_do_not_count() -> None:
    cohort = {"match_on": "tenant_id", "exclude": ["t-9"], "rules": {"all": [{"attr": "plan", "op": "exists"}]}}
    assert cohort_decision(cohort, attributes={"tenant_id": "t-1", "plan": "pro"})
    assert not cohort_decision(cohort, attributes={"tenant_id": "t-9", "plan": "pro"})
    assert cohort_decision(cohort, attributes={"plan": "pro"})  # no tenant: not excluded, rules decide


def test_cohort__not_rule_without_attributes__matches() -> None:
    cohort = {"rules": {"not": {"attr": "plan", "op": "eq", "values": ["pro"]}}}
    assert cohort_decision(cohort, attributes=None)


# -- errors ------------------------------------------------------------------------------------


def test_decide__unknown_flag__flag_not_found() -> None:
    d = compile_ruleset(make_doc({"f": make_flag()})).decide("nope", "k")
    assert (d.path, d.reason, d.error_code, d.rule, d.version) == (
        Path.LEGACY,
        Reason.ERROR,
        ErrorCode.FLAG_NOT_FOUND,
        "error",
        7,
    )


@pytest.mark.parametrize("key", [None, ""])
def test_decide__missing_key__targeting_key_missing(key: Any) -> None:
    d = decide(make_flag(percentage=100), key=key)
    assert (d.path, d.reason, d.error_code, d.stage) == (Path.LEGACY, Reason.ERROR, ErrorCode.TARGETING_KEY_MISSING, 3)


@pytest.mark.parametrize("flag", [make_flag(enabled=False), make_flag(retired=True)])
def test_decide__missing_key_on_killed_or_retired_flag__targeting_key_missing(flag: dict[str, Any]) -> None:
    assert decide(flag, key=None).error_code is ErrorCode.TARGETING_KEY_MISSING


def test_decide__unknown_flag_and_missing_key__flag_not_found_first() -> None:
    assert compile_ruleset(make_doc()).decide("nope", None).error_code is ErrorCode.FLAG_NOT_FOUND


@pytest.mark.parametrize("key", [5, 0, 1.5, b"bytes", ["k"], object()])
def test_decide__non_string_key__invalid_context(key: Any) -> None:
    d = decide(make_flag(percentage=100), key=key)
    assert (d.path, d.reason, d.error_code) == (Path.LEGACY, Reason.ERROR, ErrorCode.INVALID_CONTEXT)


def test_decide__str_subclass_key__accepted() -> None:
    class Key(str):
        pass

    assert decide(make_flag(percentage=100), key=Key("user-1")).bucket == ref_bucket("f", "user-1")


@pytest.mark.parametrize("attributes", [["plan"], "plan=pro", 5])
def test_decide__attributes_not_a_mapping__invalid_context(attributes: Any) -> None:
    cohorts = {"c": {"rules": {"attr": "plan", "op": "exists"}}}
    d = decide(make_flag(include_cohorts=["c"]), attributes=attributes, cohorts=cohorts)
    assert (d.path, d.reason, d.error_code) == (Path.LEGACY, Reason.ERROR, ErrorCode.INVALID_CONTEXT)


def test_decide__unencodable_key__general_error_not_raised() -> None:
    d = decide(make_flag(percentage=100), key="bad\udc80")
    assert (d.path, d.reason, d.error_code) == (Path.LEGACY, Reason.ERROR, ErrorCode.GENERAL)


def test_decide__unhashable_flag_name__error_not_raised() -> None:
    d = compile_ruleset(make_doc({"f": make_flag()})).decide(["f"], "k")  # type: ignore[arg-type]
    assert d.reason is Reason.ERROR


def test_decide__constant_outcomes__shared_instances() -> None:
    ruleset = compile_ruleset(make_doc({"off": make_flag(enabled=False), "old": make_flag(retired=True)}))
    assert ruleset.decide("off", "a") is ruleset.decide("off", "b")
    assert ruleset.decide("old", "a") is ruleset.decide("old", "b")


def test_decision__fast_construction__is_a_real_frozen_decision() -> None:
    d = decide(make_flag(percentage=100))
    assert type(d) is Decision
    assert engine._decision is engine._twin_decision  # the fast path is active on CPython
    assert d == Decision(**{f.name: getattr(d, f.name) for f in dataclasses.fields(Decision)})
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.path = Path.LEGACY  # type: ignore[misc]


# -- evaluate() --------------------------------------------------------------------------------


def test_evaluate__no_ruleset__provider_not_ready() -> None:
    d = evaluate(None, "f", "k")
    assert (d.path, d.reason, d.error_code, d.flag) == (Path.LEGACY, Reason.ERROR, ErrorCode.PROVIDER_NOT_READY, "f")


@pytest.mark.parametrize("doc", [{}, {"schema": 2}, {"schema": 1, "flags": []}, [], "ruleset", 42])
def test_evaluate__malformed_document__parse_error(doc: Any) -> None:
    d = evaluate(doc, "f", "k")
    assert (d.path, d.reason, d.error_code) == (Path.LEGACY, Reason.ERROR, ErrorCode.PARSE_ERROR)


def test_evaluate__dict_and_ruleset__same_decision() -> None:
    doc = make_doc({"f": make_flag(percentage=50, compare_percentage=50)})
    ruleset = compile_ruleset(doc)
    for i in range(50):
        assert evaluate(doc, "f", f"k{i}", {}) == evaluate(ruleset, "f", f"k{i}", {}) == ruleset.decide("f", f"k{i}")


def test_evaluate__new_version_of_same_dict__recompiled() -> None:
    doc = make_doc({"f": make_flag(percentage=100)})
    assert evaluate(doc, "f", "k").path is Path.PARALLEL
    doc["flags"]["f"]["enabled"] = False
    doc["version"] += 1
    assert evaluate(doc, "f", "k").reason is Reason.DISABLED


def test_evaluate__dict_mutated_in_place_without_new_version__documented_stale() -> None:
    # evaluate() caches by (id, environment, version): a document is a value, and a change
    # must come with a new version. This pins that documented behaviour.
    doc = make_doc({"f": make_flag(percentage=100)})
    assert evaluate(doc, "f", "k").path is Path.PARALLEL
    doc["flags"]["f"]["enabled"] = False
    assert evaluate(doc, "f", "k").path is Path.PARALLEL
    engine.clear_cache()
    assert evaluate(doc, "f", "k").reason is Reason.DISABLED


def test_evaluate__equal_copies__each_compiled_correctly() -> None:
    docs = [make_doc({"f": make_flag(percentage=p)}) for p in (0, 100)]
    assert [evaluate(d, "f", "k").path for d in docs] == [Path.LEGACY, Path.PARALLEL]
    assert [evaluate(copy.deepcopy(d), "f", "k").path for d in docs] == [Path.LEGACY, Path.PARALLEL]


def test_evaluate__many_documents__cache_stays_small() -> None:
    for i in range(50):
        evaluate(make_doc({"f": make_flag()}, version=i), "f", "k")
    assert len(engine._cache) <= engine._CACHE_SIZE


# -- compile / validate --------------------------------------------------------------------------


def test_compile_ruleset__valid__exposes_metadata() -> None:
    doc = make_doc({"a": make_flag(), "b": make_flag()})
    ruleset = compile_ruleset(doc)
    assert isinstance(ruleset, Ruleset)
    assert (ruleset.environment, ruleset.version, ruleset.doc, ruleset.flag_keys) == (
        "test",
        7,
        doc,
        frozenset({"a", "b"}),
    )


def test_compile_ruleset__design_example__decides() -> None:
    doc = {
        "schema": 1,
        "environment": "production",
        "version": 1234,
        "cohorts": {
            "pilot-eu": {
                "match_on": None,
                "rules": {"all": [{"attr": "country", "op": "in", "values": ["DE", "FR"]}]},
                "include": ["user-7"],
                "exclude": ["user-9"],
            },
            "regulated": {"match_on": "tenant_id", "rules": None, "include": ["t-reg"], "exclude": []},
        },
        "flags": {
            "invoice-engine": {
                "enabled": True,
                "retired": False,
                "salt": "invoice-engine",
                "bucket_by": "tenant_id",
                "overrides": {"user-1": "parallel"},
                "exclude_cohorts": ["regulated"],
                "include_cohorts": ["pilot-eu"],
                "percentage": 25.0,
                "compare_percentage": 10.0,
                "stage": 2,
            }
        },
    }
    rs = compile_ruleset(doc)
    assert rs.decide("invoice-engine", "user-1").rule == "override"
    assert rs.decide("invoice-engine", "user-2", {"country": "DE", "tenant_id": "t-reg"}).rule == "cohort:regulated"
    assert rs.decide("invoice-engine", "user-2", {"country": "FR"}).rule == "cohort:pilot-eu"
    assert rs.decide("invoice-engine", "user-9", {"country": "FR"}).rule == "default"  # excluded from pilot
    d = rs.decide("invoice-engine", "user-3", {"country": "US", "tenant_id": "t-1"})
    assert d.bucket == ref_bucket("invoice-engine", "t-1")
    assert d.compare is (ref_bucket("invoice-engine/compare", "user-3") < 100_000)


INVALID_DOCS = [
    (None, "ruleset: must be an object"),
    ({"schema": 3, "environment": "e", "version": 1, "flags": {}}, "schema: unsupported schema 3"),
    ({"schema": True, "environment": "e", "version": 1, "flags": {}}, "schema:"),
    ({"schema": 1, "version": 1, "flags": {}}, "environment: must be a string"),
    ({"schema": 1, "environment": "e", "version": -1, "flags": {}}, "version: must be an integer >= 0"),
    ({"schema": 1, "environment": "e", "version": "3", "flags": {}}, "version:"),
    ({"schema": 1, "environment": "e", "version": 1}, "flags: must be an object"),
    ({"schema": 1, "environment": "e", "version": 1, "flags": {}, "cohorts": []}, "cohorts: must be an object"),
]


@pytest.mark.parametrize(("doc", "message"), INVALID_DOCS)
def test_validate_ruleset__bad_top_level__names_the_part(doc: Any, message: str) -> None:
    with pytest.raises(RulesetError, match="^" + message.replace("(", r"\(")):
        validate_ruleset(doc)


INVALID_FLAGS = [
    ({"enabled": "yes"}, "flags.f.enabled: must be true or false"),
    ({"retired": 1}, "flags.f.retired: must be true or false"),
    ({"percentage": 101}, "flags.f.percentage: must be a number from 0 to 100"),
    ({"percentage": -0.5}, "flags.f.percentage:"),
    ({"percentage": True}, "flags.f.percentage:"),
    ({"percentage": float("nan")}, "flags.f.percentage:"),
    ({"percentage": "25"}, "flags.f.percentage:"),
    ({"compare_percentage": 200}, "flags.f.compare_percentage:"),
    ({"salt": ""}, "flags.f.salt: must be a non-empty string"),
    ({"bucket_by": 3}, "flags.f.bucket_by:"),
    ({"stage": "2"}, "flags.f.stage: must be an integer or null"),
    ({"overrides": {"u": "yes"}}, "flags.f.overrides.u: must be 'legacy' or 'parallel'"),
    ({"overrides": {"u": True}}, "flags.f.overrides.u:"),
    ({"overrides": ["u"]}, "flags.f.overrides: must be an object"),
    ({"include_cohorts": ["nope"]}, "flags.f.include_cohorts[0]: unknown cohort 'nope'"),
    ({"exclude_cohorts": "c"}, "flags.f.exclude_cohorts: must be a list of strings"),
    ({"exclude_cohorts": [1]}, r"flags.f.exclude_cohorts\[0\]: must be a string"),
]


@pytest.mark.parametrize(("fields", "message"), INVALID_FLAGS)
def test_validate_ruleset__bad_flag_field__names_the_part(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(RulesetError, match="^" + message.replace("[0]", r"\[0\]")):
        validate_ruleset(make_doc({"f": make_flag(**fields)}))


def test_validate_ruleset__missing_required_flag_field__names_it() -> None:
    flag = make_flag()
    del flag["percentage"]
    with pytest.raises(RulesetError, match=r"^flags\.f\.percentage:"):
        validate_ruleset(make_doc({"f": flag}))


INVALID_COHORTS = [
    ("nope", "cohorts.c: must be an object"),
    ({"match_on": ""}, "cohorts.c.match_on: must be a non-empty string"),
    ({"include": "u"}, "cohorts.c.include: must be a list of strings"),
    ({"exclude": [None]}, r"cohorts.c.exclude\[0\]: must be a string"),
    (
        {"rules": {"all": [{"attr": "a", "op": "foo", "values": [1]}]}},
        r"cohorts.c.rules.all\[0\].op: unknown operator 'foo'",
    ),
]


@pytest.mark.parametrize(("cohort", "message"), INVALID_COHORTS)
def test_validate_ruleset__bad_cohort__names_the_part(cohort: Any, message: str) -> None:
    with pytest.raises(RulesetError, match="^" + message):
        validate_ruleset(make_doc(cohorts={"c": cohort}))


def test_validate_ruleset__unknown_fields__ignored_for_forward_compatibility() -> None:
    doc = make_doc({"f": make_flag(new_thing=1)}, cohorts={"c": {"colour": "red"}})
    doc["future"] = True
    validate_ruleset(doc)


def test_compile_ruleset__invalid__raises_ruleset_error() -> None:
    with pytest.raises(RulesetError):
        compile_ruleset({"schema": 1})


# -- explain_cohort() --------------------------------------------------------------------------

EXPLAIN_DOC = make_doc(
    cohorts={
        "pilot": {
            "rules": {
                "all": [
                    {"attr": "country", "op": "in", "values": ["DE", "FR"]},
                    {"attr": "plan", "op": "eq", "values": ["pro"]},
                ]
            },
            "include": ["user-7"],
            "exclude": ["user-9"],
        },
        "tenants": {"match_on": "tenant_id", "include": ["t-1"]},
        "either": {
            "rules": {"any": [{"attr": "beta", "op": "exists"}, {"not": {"attr": "age", "op": "lt", "values": [18]}}]}
        },
    }
)


@pytest.mark.parametrize(
    ("cohort", "key", "attributes", "expected"),
    [
        ("pilot", "user-7", {}, (True, "key 'user-7' is listed in include")),
        ("pilot", "user-9", {"country": "DE", "plan": "pro"}, (False, "excluded: key 'user-9' is listed in exclude")),
        (
            "pilot",
            "user-2",
            {"country": "DE", "plan": "free"},
            (False, "rule rules.all[1] (plan eq pro) did not match"),
        ),
        (
            "pilot",
            "user-2",
            {"country": "DE"},
            (False, "rule rules.all[1] (plan eq pro) did not match; attribute 'plan' is missing"),
        ),
        ("pilot", "user-2", {"country": "DE", "plan": "pro"}, (True, "all of rules.all matched")),
        ("tenants", "u", {"tenant_id": "t-1"}, (True, "tenant_id 't-1' is listed in include")),
        ("tenants", "u", {}, (False, "no 'tenant_id' attribute, and the cohort has no rules")),
        (
            "tenants",
            "u",
            {"tenant_id": "t-2"},
            (False, "tenant_id 't-2' is not listed in include and the cohort has no rules"),
        ),
        ("either", "u", {"beta": 1}, (True, "rule rules.any[0] (beta exists) matched")),
        (
            "either",
            "u",
            {"age": 30},
            (True, "rule rules.any[1].not (age lt 18) did not match, so rules.any[1] (not) matched"),
        ),
        ("either", "u", {"age": 10}, (False, "none of rules.any matched")),
        ("nope", "u", {}, (False, "unknown cohort 'nope'")),
    ],
)
def test_explain_cohort__subject__says_why(
    cohort: str, key: str, attributes: dict[str, Any], expected: tuple[bool, str]
) -> None:
    assert explain_cohort(EXPLAIN_DOC, cohort, key, attributes) == expected
    assert explain_cohort(compile_ruleset(EXPLAIN_DOC), cohort, key, attributes) == expected


def test_explain_cohort__agrees_with_decide() -> None:
    doc = copy.deepcopy(EXPLAIN_DOC)
    doc["flags"] = {name: make_flag(include_cohorts=[name]) for name in ("pilot", "tenants", "either")}
    rs = compile_ruleset(doc)
    contexts = [
        ("user-7", {}),
        ("user-9", {"country": "DE", "plan": "pro"}),
        ("user-2", {"country": "FR", "plan": "pro"}),
        ("u", {"tenant_id": "t-1", "age": 12}),
        ("u", {"age": 40}),
        ("u", {"beta": False}),
    ]
    for name in ("pilot", "tenants", "either"):
        for key, attrs in contexts:
            assert explain_cohort(rs, name, key, attrs)[0] is (rs.decide(name, key, attrs).rule == f"cohort:{name}")


def test_explain_cohort__invalid_document__raises_ruleset_error() -> None:
    with pytest.raises(RulesetError):
        explain_cohort({"schema": 1}, "c", "k", {})


# -- packaging -----------------------------------------------------------------------------------


def test_import_engine__fresh_interpreter__loads_no_django() -> None:
    code = "import sys, turnout.engine; print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
