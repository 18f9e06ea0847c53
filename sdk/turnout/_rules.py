"""Cohort rules: validation, compilation to predicates, and explanation (private).

A rule node is either a condition ``{"attr": str, "op": str, "values": [...]}`` or a
combinator with exactly one of ``all`` (list of nodes), ``any`` (list of nodes) or ``not``
(one node). Validation names the bad part with a path such as ``rules.all[2].op``.

Evaluation semantics (DESIGN.md, "Cohort rules"), made precise here:

- An attribute that is absent, or present with the value ``None``, is *missing*: every
  condition on it is false, ``ne`` and ``not_in`` included (``not`` over it is true).
- Values are compared within one of three kinds only: strings, numbers (``int``/``float``
  and their subclasses, but never ``bool``) and booleans. ``True`` never equals ``1``.
  A condition whose attribute kind matches none of its values is false (incomparable).
- ``eq``/``in``: the attribute equals one of ``values``; ``ne``/``not_in``: it is
  comparable with at least one value and equals none of them.
- ``contains``: for a string attribute, one of the (string) values is a substring; for a
  list/tuple attribute, one of the values is an element (same kind rules as ``eq``).
- ``starts_with``/``ends_with``/``matches``: string attribute, any value. ``matches`` searches
  with RE2's syntax and meaning in linear time: RE2 when ``google-re2`` is installed, else
  Python's ``re`` for patterns proven unable to backtrack catastrophically (the only ones saved),
  else false (``turnout._regex``). A value over ``MAX_MATCH_LENGTH`` (1,024) chars never matches.
- ``lt lte gt gte``: numeric attribute against the first value (a number).
- ``semver_lt``/``semver_gte``: attribute and first value are ``MAJOR.MINOR.PATCH``
  (three non-negative decimal integers, nothing else); an attribute that does not parse is
  false.
- ``before``/``after``: attribute and first value are ISO-8601 timestamps (as accepted by
  ``datetime.fromisoformat``, ``Z`` allowed; naive means UTC) or epoch seconds (a number);
  a ``datetime``/``date`` attribute is accepted too. Unparseable attribute: false.
- ``exists``: the attribute is present and not ``None``; takes no values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from turnout._regex import MAX_MATCH_LENGTH, compile_search, pattern_problem

__all__ = [
    "OPS",
    "RuleError",
    "compile_rules",
    "explain_rules",
    "pattern_warnings",
    "rules_are_empty",
    "validate_rules",
]

Predicate = Callable[[Mapping[str, Any]], bool]

OPS = frozenset(
    {
        *("eq", "ne", "in", "not_in", "contains", "starts_with", "ends_with", "matches"),
        *("lt", "lte", "gt", "gte", "semver_lt", "semver_gte", "before", "after", "exists"),
    }
)
_NUMERIC_OPS = frozenset({"lt", "lte", "gt", "gte"})
_SEMVER_OPS = frozenset({"semver_lt", "semver_gte"})
_TIME_OPS = frozenset({"before", "after"})
_STRING_OPS = frozenset({"starts_with", "ends_with", "matches"})
_EQUALITY_OPS = frozenset({"eq", "ne", "in", "not_in"})
_MAX_DEPTH = 32
_SEMVER = re.compile(r"(\d+)\.(\d+)\.(\d+)", re.ASCII)


class RuleError(ValueError):
    """A cohort rule is invalid; the message starts with the path of the bad part."""


# -- value kinds ---------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_scalar(value: object) -> bool:
    return isinstance(value, (str, int, float))  # bool is an int


def _parse_semver(value: object) -> tuple[int, int, int] | None:
    if not isinstance(value, str):
        return None
    m = _SEMVER.fullmatch(value)
    if m is None:
        return None
    return (int(m[1]), int(m[2]), int(m[3]))


def _parse_time(value: object) -> float | None:
    """Epoch seconds for an ISO-8601 string, a number, or a datetime/date; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
    elif isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


# -- validation ----------------------------------------------------------------------------


def _values_repr(values: object) -> str:
    return repr(values) if not isinstance(values, list) else ", ".join(str(v) for v in values)


def validate_rules(rules: object, path: str = "rules", *, check_patterns: bool = True) -> None:
    """Raise RuleError naming the bad part; ``None`` and ``{}`` are valid (no rules).

    ``check_patterns`` (the default, used when rules are saved) also refuses ``matches`` patterns
    that RE2 or Python's ``re`` cannot compile or that could backtrack catastrophically
    (``turnout._regex.pattern_problem``). A ruleset being read passes False: a pattern that is not
    usable makes its condition false (see ``pattern_warnings``), never the whole ruleset invalid.
    """
    if rules is None:
        return
    if isinstance(rules, Mapping) and not rules:
        return
    _validate_node(rules, path, 0, check_patterns)


def _validate_node(node: object, path: str, depth: int, check_patterns: bool = True) -> None:
    if depth > _MAX_DEPTH:
        raise RuleError(f"{path}: rules nest deeper than {_MAX_DEPTH} levels")
    if not isinstance(node, Mapping):
        raise RuleError(f"{path}: must be an object (a condition, or all/any/not)")
    combinators = [k for k in ("all", "any", "not") if k in node]
    if "attr" in node or "op" in node:
        if combinators:
            raise RuleError(f"{path}: a condition cannot also have '{combinators[0]}'")
        _validate_condition(node, path, check_patterns)
        return
    if len(combinators) != 1 or len(node) != 1:
        keys = ", ".join(sorted(map(str, node))) or "nothing"
        raise RuleError(f"{path}: must have exactly one of all/any/not, or attr/op (got {keys})")
    (kind,) = combinators
    child = node[kind]
    if kind == "not":
        _validate_node(child, f"{path}.not", depth + 1, check_patterns)
        return
    if not isinstance(child, list):
        raise RuleError(f"{path}.{kind}: must be a list of rules")
    if not child and depth > 0:
        raise RuleError(f"{path}.{kind}: must not be empty")
    for i, sub in enumerate(child):
        _validate_node(sub, f"{path}.{kind}[{i}]", depth + 1, check_patterns)


def _validate_condition(node: Mapping[str, Any], path: str, check_patterns: bool = True) -> None:
    extra = set(node) - {"attr", "op", "values"}
    if extra:
        raise RuleError(f"{path}: unknown field '{sorted(map(str, extra))[0]}'")
    attr = node.get("attr")
    if not isinstance(attr, str) or not attr:
        raise RuleError(f"{path}.attr: must be a non-empty string")
    op = node.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise RuleError(f"{path}.op: unknown operator {op!r}")
    values = node.get("values")
    vpath = f"{path}.values"
    if op == "exists":
        if values is not None and values != []:
            raise RuleError(f"{vpath}: 'exists' takes no values")
        return
    if not isinstance(values, list) or not values:
        raise RuleError(f"{vpath}: '{op}' needs a non-empty list of values")
    for i, v in enumerate(values):
        if not _is_scalar(v):
            raise RuleError(f"{vpath}[{i}]: must be a string, number or boolean")
        if isinstance(v, float) and not math.isfinite(v):
            raise RuleError(f"{vpath}[{i}]: must be a finite number")
    first = values[0]
    if op in _NUMERIC_OPS and not _is_number(first):
        raise RuleError(f"{vpath}: '{op}' needs a number")
    if op in _SEMVER_OPS and _parse_semver(first) is None:
        raise RuleError(f"{vpath}: '{op}' needs a version MAJOR.MINOR.PATCH, got {first!r}")
    if op in _TIME_OPS and (isinstance(first, bool) or _parse_time(first) is None):
        raise RuleError(f"{vpath}: '{op}' needs an ISO-8601 timestamp or epoch seconds, got {first!r}")
    if op in _STRING_OPS:
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise RuleError(f"{vpath}[{i}]: '{op}' needs strings")
            if op == "matches" and check_patterns:
                problem = pattern_problem(v)
                if problem is not None:
                    raise RuleError(f"{vpath}[{i}]: {problem}")


def rules_are_empty(rules: object) -> bool:
    """True for a cohort without rules: ``None``, ``{}``, ``{"all": []}`` or ``{"any": []}``."""
    if rules is None:
        return True
    if isinstance(rules, Mapping):
        if not rules:
            return True
        if len(rules) == 1 and ("all" in rules or "any" in rules):
            child = rules.get("all", rules.get("any"))
            return isinstance(child, list) and not child
    return False


# -- compilation ---------------------------------------------------------------------------
#
# Every predicate takes the attributes mapping and returns a bool. Closures bind their
# constants as default arguments (fast local loads); kinds are checked with a cheap
# ``__class__ is`` test first and ``isinstance`` only as the fallback for subclasses.


def compile_rules(rules: object) -> Predicate | None:
    """A predicate for validated rules, or None when the cohort has no rules."""
    if rules_are_empty(rules) or not isinstance(rules, Mapping):
        return None
    return _compile_node(rules)


def _compile_node(node: Mapping[str, Any]) -> Predicate:
    if "attr" in node:
        return compile_condition(node)
    if "not" in node:
        inner = _compile_node(node["not"])

        def not_(attrs: Mapping[str, Any], inner: Predicate = inner) -> bool:
            return not inner(attrs)

        return not_
    if "all" in node:
        preds = tuple(_compile_node(n) for n in node["all"])
        if len(preds) == 1:
            return preds[0]

        def all_(attrs: Mapping[str, Any], preds: tuple[Predicate, ...] = preds) -> bool:
            for p in preds:  # noqa: SIM110 - a plain loop beats all(genexpr) here
                if not p(attrs):
                    return False
            return True

        return all_
    preds = tuple(_compile_node(n) for n in node["any"])
    if len(preds) == 1:
        return preds[0]

    def any_(attrs: Mapping[str, Any], preds: tuple[Predicate, ...] = preds) -> bool:
        for p in preds:  # noqa: SIM110 - a plain loop beats any(genexpr) here
            if p(attrs):
                return True
        return False

    return any_


def _partition(values: list[Any]) -> tuple[frozenset[str], frozenset[float], frozenset[bool]]:
    strs = frozenset(v for v in values if isinstance(v, str))
    bools = frozenset(v for v in values if isinstance(v, bool))
    nums = frozenset(v for v in values if _is_number(v))
    return strs, nums, bools


def _kind_set(v: object, strs: frozenset[str], nums: frozenset[float], bools: frozenset[bool]) -> frozenset[Any] | None:
    """The value set of v's kind, or None when v is of no comparable kind."""
    if isinstance(v, str):
        return strs
    if isinstance(v, bool):
        return bools
    if isinstance(v, (int, float)):
        return nums
    return None


def compile_condition(cond: Mapping[str, Any]) -> Predicate:
    attr: str = cond["attr"]
    op: str = cond["op"]
    values: list[Any] = cond.get("values") or []
    _str = str

    if op == "exists":

        def exists(attrs: Mapping[str, Any], attr: str = attr) -> bool:
            return attrs.get(attr) is not None

        return exists

    if op in _EQUALITY_OPS:
        strs, nums, bools = _partition(values)
        positive = op in ("eq", "in")
        if not nums and not bools:
            # Only strings (the common case): one set lookup.
            if positive:

                def eq_str(attrs: Mapping[str, Any], attr: str = attr, strs: frozenset[str] = strs) -> bool:
                    v = attrs.get(attr)
                    return (v.__class__ is _str or isinstance(v, _str)) and v in strs

                return eq_str

            def ne_str(attrs: Mapping[str, Any], attr: str = attr, strs: frozenset[str] = strs) -> bool:
                v = attrs.get(attr)
                return (v.__class__ is _str or isinstance(v, _str)) and v not in strs

            return ne_str

        def eq_any(
            attrs: Mapping[str, Any],
            attr: str = attr,
            strs: frozenset[str] = strs,
            nums: frozenset[float] = nums,
            bools: frozenset[bool] = bools,
            positive: bool = positive,
        ) -> bool:
            v = attrs.get(attr)
            if v is None:
                return False
            kind = _kind_set(v, strs, nums, bools)
            if not kind:
                return False
            return (v in kind) is positive

        return eq_any

    if op == "contains":
        strs, nums, bools = _partition(values)
        needles = tuple(strs)

        def contains(
            attrs: Mapping[str, Any],
            attr: str = attr,
            needles: tuple[str, ...] = needles,
            strs: frozenset[str] = strs,
            nums: frozenset[float] = nums,
            bools: frozenset[bool] = bools,
        ) -> bool:
            v = attrs.get(attr)
            if isinstance(v, str):
                for n in needles:  # noqa: SIM110 - faster than any(genexpr)
                    if n in v:
                        return True
                return False
            if isinstance(v, (list, tuple, set, frozenset)):
                for item in v:
                    kind = _kind_set(item, strs, nums, bools)
                    if kind and item in kind:
                        return True
            return False

        return contains

    if op == "starts_with" or op == "ends_with":
        affixes = tuple(values)
        method = str.startswith if op == "starts_with" else str.endswith

        def affix(
            attrs: Mapping[str, Any], attr: str = attr, affixes: tuple[str, ...] = affixes, method: Any = method
        ) -> bool:
            v = attrs.get(attr)
            return isinstance(v, str) and method(v, affixes)

        return affix

    if op == "matches":
        # Patterns that are not usable here (pattern_warnings says why) match nothing.
        compiled = (compile_search(p) for p in values)
        patterns = tuple(search for search in compiled if not isinstance(search, str))

        def matches(attrs: Mapping[str, Any], attr: str = attr, patterns: tuple[Any, ...] = patterns) -> bool:
            v = attrs.get(attr)
            if not isinstance(v, str) or len(v) > MAX_MATCH_LENGTH:
                return False
            for search in patterns:  # noqa: SIM110 - faster than any(genexpr)
                if search(v) is not None:
                    return True
            return False

        return matches

    if op in _NUMERIC_OPS:
        bound = values[0]
        if op == "gte":

            def gte(attrs: Mapping[str, Any], attr: str = attr, bound: float = bound) -> bool:
                v: Any = attrs.get(attr)
                c = v.__class__
                if c is int or c is float or (c is not bool and isinstance(v, (int, float))):
                    return v >= bound  # type: ignore[no-any-return]
                return False

            return gte
        if op == "gt":

            def gt(attrs: Mapping[str, Any], attr: str = attr, bound: float = bound) -> bool:
                v: Any = attrs.get(attr)
                c = v.__class__
                if c is int or c is float or (c is not bool and isinstance(v, (int, float))):
                    return v > bound  # type: ignore[no-any-return]
                return False

            return gt
        if op == "lte":

            def lte(attrs: Mapping[str, Any], attr: str = attr, bound: float = bound) -> bool:
                v: Any = attrs.get(attr)
                c = v.__class__
                if c is int or c is float or (c is not bool and isinstance(v, (int, float))):
                    return v <= bound  # type: ignore[no-any-return]
                return False

            return lte

        def lt(attrs: Mapping[str, Any], attr: str = attr, bound: float = bound) -> bool:
            v: Any = attrs.get(attr)
            c = v.__class__
            if c is int or c is float or (c is not bool and isinstance(v, (int, float))):
                return v < bound  # type: ignore[no-any-return]
            return False

        return lt

    if op in _SEMVER_OPS:
        ref = _parse_semver(values[0])
        want_lt = op == "semver_lt"

        def semver(attrs: Mapping[str, Any], attr: str = attr, ref: Any = ref, want_lt: bool = want_lt) -> bool:
            parsed = _parse_semver(attrs.get(attr))
            if parsed is None:
                return False
            return (parsed < ref) is want_lt

        return semver

    if op in _TIME_OPS:
        ref_t = _parse_time(values[0])
        want_before = op == "before"

        def when(attrs: Mapping[str, Any], attr: str = attr, ref: Any = ref_t, want_before: bool = want_before) -> bool:
            v = attrs.get(attr)
            if v is None:
                return False
            t: Any = _parse_time(v)
            if t is None:
                return False
            return t < ref if want_before else t > ref  # type: ignore[no-any-return]

        return when

    raise RuleError(f"unknown operator {op!r}")  # unreachable after validation


def pattern_warnings(rules: object, path: str = "rules") -> list[str]:
    """For validated rules: one message per ``matches`` pattern that is not usable on this host
    (its condition is false), naming it by path."""
    found: list[str] = []
    if not isinstance(rules, Mapping):
        return found
    if "attr" in rules:
        if rules.get("op") == "matches":
            for i, pattern in enumerate(rules.get("values") or ()):
                why = compile_search(pattern) if isinstance(pattern, str) else "not a string"
                if isinstance(why, str):
                    found.append(f"{path}.values[{i}]: 'matches' pattern {pattern!r} is not used, the condition "
                                 f"is false: {why}")
        return found
    if "not" in rules:
        return pattern_warnings(rules["not"], f"{path}.not")
    for kind in ("all", "any"):
        for i, sub in enumerate(rules.get(kind) or ()):
            found += pattern_warnings(sub, f"{path}.{kind}[{i}]")
    return found


# -- explanation ---------------------------------------------------------------------------


def describe_condition(cond: Mapping[str, Any]) -> str:
    values = cond.get("values")
    if cond["op"] == "exists":
        return f"{cond['attr']} exists"
    return f"{cond['attr']} {cond['op']} {_values_repr(values)}"


def explain_rules(node: Mapping[str, Any], attrs: Mapping[str, Any], path: str = "rules") -> tuple[bool, str]:
    """Evaluate validated rules and say which part decided, e.g.
    ``rule rules.all[1] (plan eq pro) did not match``."""
    if "attr" in node:
        ok = compile_condition(node)(attrs)
        missing = "" if ok or attrs.get(node["attr"]) is not None else f"; attribute '{node['attr']}' is missing"
        verdict = "matched" if ok else "did not match"
        return ok, f"rule {path} ({describe_condition(node)}) {verdict}{missing}"
    if "not" in node:
        ok, why = explain_rules(node["not"], attrs, f"{path}.not")
        verdict = "did not match" if ok else "matched"
        return (not ok), f"{why}, so {path} (not) {verdict}"
    if "all" in node:
        for i, sub in enumerate(node["all"]):
            ok, why = explain_rules(sub, attrs, f"{path}.all[{i}]")
            if not ok:
                return False, why
        return True, f"all of {path}.all matched"
    for i, sub in enumerate(node["any"]):
        ok, why = explain_rules(sub, attrs, f"{path}.any[{i}]")
        if ok:
            return True, why
    return False, f"none of {path}.any matched"
