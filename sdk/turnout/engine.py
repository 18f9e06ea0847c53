"""The Turnout evaluation engine: one implementation for the server and the SDK.

Pure Python, stdlib only, no Django. DESIGN.md ("The evaluation engine") is the contract;
this module implements it exactly and documents the points the contract leaves open:

- ``bucket(salt, value)`` is ``int.from_bytes(sha256(f"{salt}/{value}".encode()).digest()[:8],
  "big") % 1_000_000``; a subject is in the split when ``bucket < round(percentage * 10_000)``.
- The split value is the ``bucket_by`` attribute, or the context key. An attribute that is
  absent or ``None`` means "not in the split" (``legacy``, ``DEFAULT``, no bucket, and a
  ``detail`` naming the missing attribute). It never falls back to the key: a flag bucketed by
  ``tenant_id`` moves whole tenants, and a key that is a user would split a tenant. Any other
  non-string value is bucketed by Python's ``str(value)``: ``True`` -> ``"True"``, ``42`` ->
  ``"42"``, ``4.0`` -> ``"4.0"``.
- Cohort member lists (``include``/``exclude``) hold strings; the subject's value (the
  ``match_on`` attribute, or the key) is compared as ``str(value)`` the same way.
- ``compare`` is false for ``ERROR``/``DISABLED``/``STATIC``; otherwise it is
  ``bucket(f"{salt}/compare", key) < round(compare_percentage * 10_000)``.
- The context key must be a non-empty string: ``None`` or ``""`` give ``TARGETING_KEY_MISSING``
  (after the unknown-flag check), any other type ``INVALID_CONTEXT``; attributes that are not a
  mapping give ``INVALID_CONTEXT`` when they are read.

Ruleset document fields (schema 1): ``schema`` (1), ``environment`` (str), ``version``
(int >= 0), ``cohorts`` (object, optional), ``flags`` (object). Per flag: ``enabled`` (bool)
and ``percentage`` (0..100) are required; ``retired`` (false), ``salt`` (the flag key),
``bucket_by`` (null), ``overrides`` ({}), ``exclude_cohorts``/``include_cohorts`` ([]),
``compare_percentage`` (0) and ``stage`` (null) default as shown. Unknown fields are ignored
so that older SDKs accept newer documents. Cohort rules are described in ``turnout._rules``.
A ``matches`` pattern this host cannot run in linear time (``turnout._regex``) does not make a
document invalid: its condition is false and ``Ruleset.warnings`` names it.

Speed: ``compile_ruleset`` turns every flag into one closure over precomputed constants
(thresholds, pre-hashed salt prefixes, frozensets, compiled predicates), and every decision
that does not depend on the subject is a shared, immutable ``Decision`` built once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import struct
from collections.abc import Callable, Mapping
from itertools import chain
from typing import Any

from turnout._rules import RuleError, compile_rules, explain_rules, pattern_warnings, rules_are_empty, validate_rules
from turnout.members import MemberList
from turnout.types import Decision, ErrorCode, Path, Reason, Stage, StageDecision

__all__ = [
    "RuleError",
    "Ruleset",
    "RulesetError",
    "bucket",
    "compile_ruleset",
    "evaluate",
    "evaluate_stage",
    "explain_cohort",
    "validate_migration",
    "validate_rules",
    "validate_ruleset",
]

SCHEMA = 1
#: schema 2 is schema 1 plus cohort member-list references (``turnout.members``): a document carries
#: it only when it references a list, so an SDK that predates references refuses it (keeping its last
#: good ruleset) instead of reading such a cohort as having no members.
SCHEMAS = (1, 2)
BUCKETS = 1_000_000

_LEGACY = Path.LEGACY
_PARALLEL = Path.PARALLEL
_EMPTY: Mapping[str, Any] = {}
_unpack_u64 = struct.Struct(">Q").unpack_from  # == int.from_bytes(digest[:8], "big")


class RulesetError(ValueError):
    """A ruleset document is invalid; the message starts with the path of the bad part."""


def bucket(salt: str, value: str) -> int:
    """The subject's bucket, 0 <= bucket < 1_000_000 (DESIGN: "Bucketing")."""
    digest = hashlib.sha256(f"{salt}/{value}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def _threshold(percentage: float) -> int:
    return round(percentage * 10_000)


# -- Decision construction -----------------------------------------------------------------
#
# ``Decision`` is a frozen slotted dataclass; its generated ``__init__`` goes through
# ``object.__setattr__`` once per field, which costs more (~1.6 us) than the sha256 we need.
# ``_DecisionTwin`` has the same slots, so an instance can be filled with plain (specialised)
# attribute stores and then become a real ``Decision`` by ``__class__`` assignment: the
# result is indistinguishable from ``Decision(...)`` (type, equality, hash, repr, frozen).
# A self-check at import falls back to the plain constructor if that ever stops holding
# (for instance when ``Decision`` gains a field).

_FIELDS = ("flag", "path", "reason", "compare", "error_code", "rule", "bucket", "stage", "version", "detail")


class _DecisionTwin:
    __slots__ = _FIELDS


def _twin_decision(
    flag: str,
    path: Path,
    reason: Reason,
    compare: bool,
    error_code: ErrorCode | None,
    rule: str | None,
    bucket: int | None,
    stage: int | None,
    version: int | None,
    _twin: type = _DecisionTwin,
    _decision: type = Decision,
) -> Decision:
    d: Any = _twin()
    d.flag = flag
    d.path = path
    d.reason = reason
    d.compare = compare
    d.error_code = error_code
    d.rule = rule
    d.bucket = bucket
    d.stage = stage
    d.version = version
    d.detail = None
    d.__class__ = _decision
    return d  # type: ignore[no-any-return]


def _pick_decision_factory() -> Callable[..., Decision]:
    args = ("f", _PARALLEL, Reason.SPLIT, True, None, "split", 7, 2, 3)
    try:
        if tuple(f.name for f in dataclasses.fields(Decision)) != _FIELDS:
            return Decision
        fast = _twin_decision(*args)
        slow = Decision(*args)
        if type(fast) is Decision and fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow):
            return _twin_decision
    except Exception:  # pragma: no cover - depends on the interpreter
        pass
    return Decision  # pragma: no cover


_decision = _pick_decision_factory()


def _missing_bucket_by(attribute: str | None) -> str:
    """The receipt's ``detail`` when the context lacks the flag's ``bucket_by`` attribute."""
    return f"bucket_by attribute {attribute!r} missing from the attributes: not in the split"


def _error(flag: str, code: ErrorCode, version: int | None = None, stage: int | None = None) -> Decision:
    return Decision(flag, _LEGACY, Reason.ERROR, False, code, "error", None, stage, version)


# -- validation ----------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_percentage(value: object, path: str) -> None:
    if not _is_number(value) or not 0 <= value <= 100:  # type: ignore[operator]
        raise RulesetError(f"{path}: must be a number from 0 to 100, got {value!r}")


def _check_name(value: object, path: str) -> None:
    if not isinstance(value, str) or not value:
        raise RulesetError(f"{path}: must be a non-empty string, got {value!r}")


def _check_string_list(value: object, path: str) -> None:
    if not isinstance(value, list):
        raise RulesetError(f"{path}: must be a list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise RulesetError(f"{path}[{i}]: must be a string, got {item!r}")


def validate_ruleset(doc: object) -> None:
    """Raise RulesetError naming the bad part of a ruleset document (schema 1)."""
    if not isinstance(doc, Mapping):
        raise RulesetError("ruleset: must be an object")
    schema = doc.get("schema")
    if schema not in SCHEMAS or isinstance(schema, bool):
        raise RulesetError(f"schema: unsupported schema {schema!r} (expected {SCHEMA} or 2)")
    if not isinstance(doc.get("environment"), str):
        raise RulesetError("environment: must be a string")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise RulesetError(f"version: must be an integer >= 0, got {version!r}")
    cohorts = doc.get("cohorts", {})
    if cohorts is None:
        cohorts = {}
    if not isinstance(cohorts, Mapping):
        raise RulesetError("cohorts: must be an object")
    for ckey, cohort in cohorts.items():
        _check_name(ckey, "cohorts: key")
        _validate_cohort(cohort, f"cohorts.{ckey}")
    flags = doc.get("flags")
    if not isinstance(flags, Mapping):
        raise RulesetError("flags: must be an object")
    for fkey, flag in flags.items():
        _check_name(fkey, "flags: key")
        _validate_flag(flag, f"flags.{fkey}", cohorts)


def _validate_cohort(cohort: object, path: str) -> None:
    if not isinstance(cohort, Mapping):
        raise RulesetError(f"{path}: must be an object")
    match_on = cohort.get("match_on")
    if match_on is not None:
        _check_name(match_on, f"{path}.match_on")
    try:
        # Patterns are not judged here: one that is not usable on this host makes its condition
        # false (Ruleset.warnings says which), it never makes the whole ruleset unusable.
        validate_rules(cohort.get("rules"), f"{path}.rules", check_patterns=False)
    except RuleError as exc:
        raise RulesetError(str(exc)) from None
    for field in ("include", "exclude"):
        members = cohort.get(field)
        if members is not None:
            _check_string_list(members, f"{path}.{field}")
    ref = cohort.get("members")
    if ref is not None:
        if not isinstance(ref, Mapping):
            raise RulesetError(f"{path}.members: must be an object")
        version = ref.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise RulesetError(f"{path}.members.version: must be an integer >= 0, got {version!r}")
        if cohort.get("include") or cohort.get("exclude"):
            raise RulesetError(f"{path}: a cohort with a member-list reference lists no members inline")


def _validate_flag(flag: object, path: str, cohorts: Mapping[str, Any]) -> None:
    if not isinstance(flag, Mapping):
        raise RulesetError(f"{path}: must be an object")
    for field, required in (("enabled", True), ("retired", False)):
        value = flag.get(field)
        if not isinstance(value, bool) and (required or value is not None):
            raise RulesetError(f"{path}.{field}: must be true or false, got {value!r}")
    for field in ("salt", "bucket_by"):
        if flag.get(field) is not None:
            _check_name(flag[field], f"{path}.{field}")
    _check_percentage(flag.get("percentage"), f"{path}.percentage")
    if flag.get("compare_percentage") is not None:
        _check_percentage(flag["compare_percentage"], f"{path}.compare_percentage")
    stage = flag.get("stage")
    if stage is not None and (not isinstance(stage, int) or isinstance(stage, bool)):
        raise RulesetError(f"{path}.stage: must be an integer or null, got {stage!r}")
    overrides = flag.get("overrides")
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            raise RulesetError(f"{path}.overrides: must be an object")
        for subject, value in overrides.items():
            if not isinstance(subject, str):
                raise RulesetError(f"{path}.overrides: keys must be strings, got {subject!r}")
            if value not in ("legacy", "parallel") or not isinstance(value, str):
                raise RulesetError(f"{path}.overrides.{subject}: must be 'legacy' or 'parallel', got {value!r}")
    for field in ("exclude_cohorts", "include_cohorts"):
        keys = flag.get(field)
        if keys is None:
            continue
        _check_string_list(keys, f"{path}.{field}")
        for i, ckey in enumerate(keys):
            if ckey not in cohorts:
                raise RulesetError(f"{path}.{field}[{i}]: unknown cohort {ckey!r}")
    # ``migration`` is not checked here: a field this host cannot read makes the flag's stage
    # decisions 'off' with a warning, never the whole document unusable (``_compile_stages``).


# -- compilation ---------------------------------------------------------------------------

Matcher = Callable[[str, Mapping[str, Any]], bool]
FlagFn = Callable[[str, Any], Decision]


def _compile_cohort(cohort: Mapping[str, Any], listed: MemberList | None = None) -> Matcher:
    """``(key, attrs) -> bool``: (value in include or rules match) and value not in exclude. With
    ``listed``, the lists are that member list's (a cohort with a ``members`` reference)."""
    match_on: str | None = cohort.get("match_on")
    if listed is not None:
        return _compile_listed(match_on, listed, compile_rules(cohort.get("rules")))
    include = frozenset(cohort.get("include") or ())
    exclude = frozenset(cohort.get("exclude") or ())
    pred = compile_rules(cohort.get("rules"))
    _str = str

    if match_on is None and not include and not exclude and pred is not None:
        only: Callable[[Mapping[str, Any]], bool] = pred

        def rules_only(
            key: str, attrs: Mapping[str, Any], pred: Callable[[Mapping[str, Any]], bool] = only
        ) -> bool:
            return pred(attrs)

        return rules_only

    def member(
        key: str,
        attrs: Mapping[str, Any],
        match_on: str | None = match_on,
        include: frozenset[str] = include,
        exclude: frozenset[str] = exclude,
        pred: Callable[..., bool] | None = pred,
    ) -> bool:
        if match_on is None:
            value: Any = key
        else:
            value = attrs.get(match_on)
            if value is not None and value.__class__ is not _str:
                value = _str(value)
        if value is not None:
            if value in exclude:
                return False
            if value in include:
                return True
        return pred is not None and pred(attrs)

    return member


def _compile_listed(match_on: str | None, listed: MemberList, pred: Callable[..., bool] | None) -> Matcher:
    probe: Callable[[str], int] = listed.probe()
    _str = str

    def member(key: str, attrs: Mapping[str, Any], match_on: str | None = match_on,
               probe: Callable[[str], int] = probe, pred: Callable[..., bool] | None = pred) -> bool:
        if match_on is None:
            value: Any = key
        else:
            value = attrs.get(match_on)
            if value is not None and value.__class__ is not _str:
                value = _str(value)
        if value is not None:
            kind = probe(value)
            if kind:
                return kind == 1
        return pred is not None and pred(attrs)

    return member


def _present(matcher: Matcher | None) -> Matcher:
    if matcher is None:  # pragma: no cover - callers return a waiting decision first
        raise RulesetError("a member list is missing")
    return matcher


def _waiting_for(cohorts: list[str]) -> str:
    return "member list of cohort " + ", ".join(repr(c) for c in cohorts) + " not loaded yet: deciding legacy"


def _compile_flag(
    fkey: str, flag: Mapping[str, Any], matchers: Mapping[str, Matcher | None], version: int, specialize: bool = True
) -> FlagFn:
    stage: int | None = flag.get("stage")
    if not flag["enabled"]:
        disabled = Decision(fkey, _LEGACY, Reason.DISABLED, False, None, "disabled", None, stage, version)
        return lambda key, attrs: disabled
    if flag.get("retired"):
        retired = Decision(fkey, _PARALLEL, Reason.STATIC, False, None, "retired", None, stage, version)
        return lambda key, attrs: retired
    waiting = [c for c in chain(flag.get("exclude_cohorts") or (), flag.get("include_cohorts") or ())
               if matchers[c] is None]
    if waiting:
        # A member list this process has not loaded yet: the flag decides legacy, as with no ruleset.
        pending = Decision(fkey, _LEGACY, Reason.ERROR, False, ErrorCode.PROVIDER_NOT_READY, "error", None, stage,
                           version, _waiting_for(waiting))
        return lambda key, attrs: pending

    salt: str = flag.get("salt") or fkey
    bucket_by: str | None = flag.get("bucket_by")
    threshold = _threshold(flag["percentage"])
    cthreshold = _threshold(flag.get("compare_percentage") or 0)
    # The compare sample: 0 = never (no hash), BUCKETS = always (no hash), else hashed.
    compare_mode = 0 if cthreshold <= 0 else (2 if cthreshold >= BUCKETS else 1)
    split_hasher = hashlib.sha256(f"{salt}/".encode())
    compare_hasher = hashlib.sha256(f"{salt}/compare/".encode())

    def pair(path: Path, reason: Reason, rule: str) -> tuple[Decision, Decision]:
        """The constant decision without / with compare, indexed by the compare bool."""
        return (
            Decision(fkey, path, reason, False, None, rule, None, stage, version),
            Decision(fkey, path, reason, True, None, rule, None, stage, version),
        )

    overrides = {
        subject: pair(_PARALLEL if value == "parallel" else _LEGACY, Reason.TARGETING_MATCH, "override")
        for subject, value in (flag.get("overrides") or {}).items()
    }
    excludes = tuple(
        (_present(matchers[c]), pair(_LEGACY, Reason.TARGETING_MATCH, f"cohort:{c}"))
        for c in flag.get("exclude_cohorts") or ()
    )
    includes = tuple(
        (_present(matchers[c]), pair(_PARALLEL, Reason.TARGETING_MATCH, f"cohort:{c}"))
        for c in flag.get("include_cohorts") or ()
    )
    unbucketed = (
        Decision(fkey, _LEGACY, Reason.DEFAULT, False, None, "default", None, stage, version,
                 _missing_bucket_by(bucket_by)),
        Decision(fkey, _LEGACY, Reason.DEFAULT, True, None, "default", None, stage, version,
                 _missing_bucket_by(bucket_by)),
    )
    make = _decision
    unpack = _unpack_u64
    _str = str

    if specialize and not overrides and not excludes and not includes and bucket_by is None and compare_mode == 0:
        # The most common shape during a rollout, and the hottest: a split over the key alone.

        def plain_split(
            key: str,
            attrs: Any,
            split_hasher: Any = split_hasher,
            threshold: int = threshold,
            fkey: str = fkey,
            stage: int | None = stage,
            version: int = version,
            split: Reason = Reason.SPLIT,
            default: Reason = Reason.DEFAULT,
            parallel: Path = _PARALLEL,
            legacy: Path = _LEGACY,
        ) -> Decision:
            h = split_hasher.copy()
            h.update(key.encode())
            b = unpack(h.digest())[0] % 1_000_000
            if b < threshold:
                return make(fkey, parallel, split, False, None, "split", b, stage, version)
            return make(fkey, legacy, default, False, None, "default", b, stage, version)

        return plain_split

    def decide_flag(
        key: str,
        attrs: Any,
        overrides: dict[str, tuple[Decision, Decision]] = overrides,
        excludes: tuple[tuple[Matcher, tuple[Decision, Decision]], ...] = excludes,
        includes: tuple[tuple[Matcher, tuple[Decision, Decision]], ...] = includes,
        bucket_by: str | None = bucket_by,
        threshold: int = threshold,
        cthreshold: int = cthreshold,
        compare_mode: int = compare_mode,
        split_hasher: Any = split_hasher,
        compare_hasher: Any = compare_hasher,
        fkey: str = fkey,
        stage: int | None = stage,
        version: int = version,
        unbucketed: tuple[Decision, Decision] = unbucketed,
        split: Reason = Reason.SPLIT,
        default: Reason = Reason.DEFAULT,
        parallel: Path = _PARALLEL,
        legacy: Path = _LEGACY,
    ) -> Decision:
        if attrs is None:
            attrs = _EMPTY
        if compare_mode == 0:
            compare = False
        elif compare_mode == 2:
            compare = True
        else:
            h = compare_hasher.copy()
            h.update(key.encode())
            compare = unpack(h.digest())[0] % 1_000_000 < cthreshold
        if overrides:
            fixed = overrides.get(key)
            if fixed is not None:
                return fixed[compare]
        for matcher, fixed in excludes:
            if matcher(key, attrs):
                return fixed[compare]
        for matcher, fixed in includes:
            if matcher(key, attrs):
                return fixed[compare]
        if bucket_by is None:
            value = key
        else:
            value = attrs.get(bucket_by)
            if value is None:
                return unbucketed[compare]
            if value.__class__ is not _str:
                value = _str(value)
        h = split_hasher.copy()
        h.update(value.encode())
        b = unpack(h.digest())[0] % 1_000_000
        if b < threshold:
            return make(fkey, parallel, split, compare, None, "split", b, stage, version)
        return make(fkey, legacy, default, compare, None, "default", b, stage, version)

    return decide_flag


# -- data migrations: the ``migration`` field of a flag (docs/migrations.md) -----------------------
#
# ``{"stage": "shadow", "splits": [{"stage": "live", "percentage": 10}], "cohorts": [{"cohort": "pilot",
# "stage": "live"}]}``. A subject's stage: the first listed cohort it is in; else the furthest split whose
# share its bucket falls under (the flag's own bucket: same salt, ``bucket_by`` and key); else the base
# ``stage``. Splits name stages beyond the base in order, with shares that do not grow, so raising a share
# only moves subjects forward. A killed flag is ``off`` (``DISABLED``), a retired one ``complete``
# (``STATIC``), and a flag without the field follows its path (legacy ``off``, parallel ``complete``).
# A field this host cannot read (a newer server's stage, say) does not make the document invalid: the
# flag's stage decisions are ``off`` with ``PARSE_ERROR`` and ``Ruleset.warnings`` names it.

StageFn = Callable[[str, Any], StageDecision]
_STAGES = {s.value: s for s in Stage}


def _stage_error(flag: str, code: ErrorCode, version: int | None = None) -> StageDecision:
    return StageDecision(flag, Stage.OFF, Reason.ERROR, code, "error", None, version)


def migration_cohorts(migration: object) -> list[str]:
    """The cohort keys a ``migration`` field names (none when it is not readable)."""
    if not isinstance(migration, Mapping):
        return []
    entries = migration.get("cohorts")
    if not isinstance(entries, list):
        return []
    return [e["cohort"] for e in entries if isinstance(e, Mapping) and isinstance(e.get("cohort"), str)]


def validate_migration(migration: object, path: str, cohorts: Mapping[str, Any]) -> None:
    """Raise RulesetError naming the bad part of a flag's ``migration`` field."""
    if not isinstance(migration, Mapping):
        raise RulesetError(f"{path}: must be an object")
    base = migration.get("stage")
    if base not in _STAGES or not isinstance(base, str):
        raise RulesetError(f"{path}.stage: must be one of {', '.join(_STAGES)}, got {base!r}")
    base_stage = _STAGES[base]
    splits = migration.get("splits")
    if splits is not None:
        if not isinstance(splits, list):
            raise RulesetError(f"{path}.splits: must be a list")
        previous_stage, previous_share = base_stage, 100.0
        for i, split in enumerate(splits):
            where = f"{path}.splits[{i}]"
            if not isinstance(split, Mapping):
                raise RulesetError(f"{where}: must be an object")
            stage = split.get("stage")
            if stage not in _STAGES or not isinstance(stage, str) or stage == Stage.COMPLETE:
                raise RulesetError(f"{where}.stage: must be a stage from dual_write to rampdown, got {stage!r}")
            if _STAGES[stage].position <= previous_stage.position:
                raise RulesetError(f"{where}.stage: '{stage}' must come after '{previous_stage}' (splits go forward)")
            _check_percentage(split.get("percentage"), f"{where}.percentage")
            if split["percentage"] > previous_share:
                raise RulesetError(f"{where}.percentage: a later stage cannot hold more subjects than an earlier "
                                   f"one ({split['percentage']} > {previous_share})")
            previous_stage, previous_share = _STAGES[stage], float(split["percentage"])
    entries = migration.get("cohorts")
    if entries is not None:
        if not isinstance(entries, list):
            raise RulesetError(f"{path}.cohorts: must be a list")
        for i, entry in enumerate(entries):
            where = f"{path}.cohorts[{i}]"
            if not isinstance(entry, Mapping):
                raise RulesetError(f"{where}: must be an object")
            ckey, stage = entry.get("cohort"), entry.get("stage")
            if not isinstance(ckey, str) or ckey not in cohorts:
                raise RulesetError(f"{where}.cohort: unknown cohort {ckey!r}")
            if stage not in _STAGES or not isinstance(stage, str) or stage == Stage.COMPLETE:
                raise RulesetError(f"{where}.stage: must be a stage from off to rampdown, got {stage!r}")


def _compile_stages(
    fkey: str, flag: Mapping[str, Any], matchers: Mapping[str, Matcher | None], version: int, decide: FlagFn,
    problems: list[str],
) -> StageFn:
    migration = flag.get("migration")
    if migration is None:
        def by_path(key: str, attrs: Any) -> StageDecision:
            d = decide(key, attrs)
            stage = Stage.COMPLETE if d.path is _PARALLEL else Stage.OFF
            return StageDecision(fkey, stage, d.reason, d.error_code, "error" if d.error_code else "path", d.bucket,
                                 version)

        return by_path
    try:
        validate_migration(migration, f"flags.{fkey}.migration", {c: None for c in matchers})
    except RulesetError as exc:
        problems.append(f"{exc}: stage decisions for '{fkey}' are 'off'")
        unreadable = _stage_error(fkey, ErrorCode.PARSE_ERROR, version)
        return lambda key, attrs: unreadable
    if not flag["enabled"]:
        disabled = StageDecision(fkey, Stage.OFF, Reason.DISABLED, None, "disabled", None, version)
        return lambda key, attrs: disabled
    base = _STAGES[migration["stage"]]
    waiting = [e["cohort"] for e in migration.get("cohorts") or () if matchers[e["cohort"]] is None]
    if waiting and not flag.get("retired") and base is not Stage.COMPLETE:
        pending = _stage_error(fkey, ErrorCode.PROVIDER_NOT_READY, version)
        return lambda key, attrs: pending
    if flag.get("retired") or base is Stage.COMPLETE:
        complete = StageDecision(fkey, Stage.COMPLETE, Reason.STATIC, None, "retired" if flag.get("retired")
                                 else "stage", None, version)
        return lambda key, attrs: complete
    by_cohort = tuple(
        (_present(matchers[e["cohort"]]), StageDecision(fkey, _STAGES[e["stage"]], Reason.TARGETING_MATCH, None,
                                               f"cohort:{e['cohort']}", None, version))
        for e in migration.get("cohorts") or ()
    )
    # furthest first: the first threshold a bucket is under names its stage
    splits = tuple(
        (_threshold(s["percentage"]), _STAGES[s["stage"]], f"split:{s['stage']}")
        for s in reversed(migration.get("splits") or ())
    )
    salt: str = flag.get("salt") or fkey
    bucket_by: str | None = flag.get("bucket_by")
    split_hasher = hashlib.sha256(f"{salt}/".encode())
    standing = StageDecision(fkey, base, Reason.DEFAULT, None, "stage", None, version)

    def decide_stage(key: str, attrs: Any) -> StageDecision:
        if attrs is None:
            attrs = _EMPTY
        for matcher, fixed in by_cohort:
            if matcher(key, attrs):
                return fixed
        if not splits:
            return standing
        if bucket_by is None:
            value: Any = key
        else:
            value = attrs.get(bucket_by)
            if value is None:
                return standing
            if value.__class__ is not str:
                value = str(value)
        h = split_hasher.copy()
        h.update(value.encode())
        b = _unpack_u64(h.digest())[0] % BUCKETS
        for threshold, stage, rule in splits:
            if b < threshold:
                return StageDecision(fkey, stage, Reason.SPLIT, None, rule, b, version)
        return StageDecision(fkey, base, Reason.DEFAULT, None, "stage", b, version)

    return decide_stage


class Ruleset:
    """A validated, precompiled ruleset document. Immutable; safe to share across threads."""

    __slots__ = ("_cohorts", "_fns", "_keyless", "_stages", "doc", "environment", "flag_keys", "member_lists",
                 "member_refs", "version", "warnings")

    environment: str
    version: int
    doc: Mapping[str, Any]
    flag_keys: frozenset[str]
    #: One message per ``matches`` pattern this host cannot run in linear time (its condition is
    #: false): without ``google-re2``, a pattern not proven safe for Python's ``re``.
    warnings: tuple[str, ...]
    #: cohort -> the member-list version the document references (cohorts whose lists are not inline)
    member_refs: Mapping[str, int]
    #: cohort -> the member list in use (any version: the last good one while a newer one is fetched);
    #: a referenced cohort missing here makes the flags that use it decide legacy (PROVIDER_NOT_READY)
    member_lists: Mapping[str, MemberList]

    def __init__(self, doc: Mapping[str, Any], members: Mapping[str, MemberList] | None = None) -> None:
        """Compile a document that ``validate_ruleset`` accepted (use ``compile_ruleset``)."""
        self.doc = doc
        self.environment = doc["environment"]
        self.version = version = doc["version"]
        cohorts: Mapping[str, Any] = doc.get("cohorts") or {}
        self._cohorts = cohorts
        flags: Mapping[str, Any] = doc["flags"]
        used = {
            c for f in flags.values() for c in chain(f.get("exclude_cohorts") or (), f.get("include_cohorts") or ())
        }
        used |= {c for f in flags.values() for c in migration_cohorts(f.get("migration")) if c in cohorts}
        self.member_refs = {c: int(cohorts[c]["members"]["version"]) for c in cohorts
                            if isinstance(cohorts[c].get("members"), Mapping)}
        lists = {c: m for c, m in (members or {}).items() if c in self.member_refs and isinstance(m, MemberList)}
        self.member_lists = lists
        matchers: dict[str, Matcher | None] = {
            c: None if c in self.member_refs and c not in lists else _compile_cohort(cohorts[c], lists.get(c))
            for c in used
        }
        self._fns: dict[str, FlagFn] = {k: _compile_flag(k, f, matchers, version) for k, f in flags.items()}
        stage_problems: list[str] = []
        self._stages: dict[str, StageFn] = {
            k: _compile_stages(k, f, matchers, version, self._fns[k], stage_problems) for k, f in flags.items()
        }
        self._keyless = {
            k: _error(k, ErrorCode.TARGETING_KEY_MISSING, version, f.get("stage")) for k, f in flags.items()
        }
        self.flag_keys = frozenset(flags)
        self.warnings = tuple(
            w for ckey, c in cohorts.items() for w in pattern_warnings(c.get("rules"), f"cohorts.{ckey}.rules")
        ) + tuple(stage_problems)

    def __repr__(self) -> str:
        return f"<Ruleset {self.environment!r} v{self.version} ({len(self.flag_keys)} flags)>"

    def decide(self, flag: str, key: str | None, attributes: Mapping[str, Any] | None = None) -> Decision:
        """Legacy or parallel for this subject, and why. Never raises."""
        try:
            fn = self._fns.get(flag)
            if fn is None:
                return _error(flag, ErrorCode.FLAG_NOT_FOUND, self.version)
            if key.__class__ is not str or not key:
                if key is None or key == "":
                    return self._keyless[flag]
                if not isinstance(key, str):
                    return _error(flag, ErrorCode.INVALID_CONTEXT, self.version)
            return fn(key, attributes)
        except Exception:
            return self._failed(flag, attributes)

    def decide_stage(self, flag: str, key: str | None, attributes: Mapping[str, Any] | None = None) -> StageDecision:
        """Where this subject stands in the data migration ``flag``, and why. Never raises."""
        try:
            fn = self._stages.get(flag)
            if fn is None:
                return _stage_error(flag, ErrorCode.FLAG_NOT_FOUND, self.version)
            if key.__class__ is not str or not key:
                code = ErrorCode.TARGETING_KEY_MISSING if key is None or key == "" else ErrorCode.INVALID_CONTEXT
                return _stage_error(flag, code, self.version)
            return fn(key, attributes)
        except Exception:
            code = ErrorCode.GENERAL
            if attributes is not None and not isinstance(attributes, Mapping):
                code = ErrorCode.INVALID_CONTEXT
            return _stage_error(str(flag), code, self.version)

    def _failed(self, flag: Any, attributes: object) -> Decision:
        try:
            code = ErrorCode.GENERAL
            if attributes is not None and not isinstance(attributes, Mapping):
                code = ErrorCode.INVALID_CONTEXT
            return _error(flag, code, self.version)
        except Exception:  # pragma: no cover - a flag name whose repr explodes, etc.
            return _error("", ErrorCode.GENERAL, None)


def compile_ruleset(doc: Mapping[str, Any], members: Mapping[str, MemberList] | None = None) -> Ruleset:
    """Validate and precompile a ruleset document; raises RulesetError if it is invalid. ``members``:
    the member lists of cohorts the document references (``turnout.members``), by cohort key."""
    try:
        validate_ruleset(doc)
        return Ruleset(doc, members)
    except RulesetError:
        raise
    except Exception as exc:  # a structure validation did not foresee: still "invalid"
        raise RulesetError(f"ruleset: cannot be compiled ({type(exc).__name__}: {exc})") from exc


# -- evaluate(): the dict-or-Ruleset front door ----------------------------------------------
#
# Compiling a document costs far more than deciding, so evaluate() keeps the last few compiled
# documents, keyed by the dict's id() and re-checked on every call against the same object
# (``is``, the cache holds a reference, so the id cannot be reused) and its ``environment`` and
# ``version``. A ruleset document is a value: whoever changes it must give it a new version
# (the server's versions only grow). Mutating a dict in place and keeping its version returns
# decisions of the old content; hot callers should hold a Ruleset from compile_ruleset().

_CACHE_SIZE = 8
_cache: dict[int, tuple[Any, Any, Any, Ruleset | None]] = {}


def _compile_and_cache(doc: Mapping[str, Any]) -> Ruleset | None:
    try:
        compiled: Ruleset | None = compile_ruleset(doc)
    except RulesetError:
        compiled = None
    if len(_cache) >= _CACHE_SIZE:
        _cache.clear()
    _cache[id(doc)] = (doc, doc.get("version"), doc.get("environment"), compiled)
    return compiled


def clear_cache() -> None:
    """Forget the documents evaluate() compiled."""
    _cache.clear()


def evaluate(
    ruleset: Mapping[str, Any] | Ruleset | None,
    flag: str,
    key: str | None,
    attributes: Mapping[str, Any] | None = None,
) -> Decision:
    """Decide with a Ruleset or a ruleset document. Never raises.

    ``None`` -> legacy/ERROR/PROVIDER_NOT_READY; an invalid document -> legacy/ERROR/PARSE_ERROR.
    """
    try:
        if ruleset.__class__ is Ruleset:  # not isinstance(): the hot path, and exact is enough here
            return ruleset.decide(flag, key, attributes)  # type: ignore[union-attr]
        if ruleset is None:
            return _error(flag, ErrorCode.PROVIDER_NOT_READY)
        entry = _cache.get(id(ruleset))
        if (
            entry is not None
            and entry[0] is ruleset  # only mappings are cached: no isinstance() on the hot path
            and ruleset.get("version") == entry[1]  # type: ignore[union-attr]  # it is the cached mapping
            and ruleset.get("environment") == entry[2]  # type: ignore[union-attr]
        ):
            compiled = entry[3]
        elif isinstance(ruleset, Ruleset):
            return ruleset.decide(flag, key, attributes)
        elif isinstance(ruleset, Mapping):
            compiled = _compile_and_cache(ruleset)
        else:
            return _error(flag, ErrorCode.PARSE_ERROR)
        if compiled is None:
            return _error(flag, ErrorCode.PARSE_ERROR)
        return compiled.decide(flag, key, attributes)
    except Exception:
        try:
            return _error(flag, ErrorCode.GENERAL)
        except Exception:  # pragma: no cover
            return _error("", ErrorCode.GENERAL)


def evaluate_stage(
    ruleset: Mapping[str, Any] | Ruleset | None,
    flag: str,
    key: str | None,
    attributes: Mapping[str, Any] | None = None,
) -> StageDecision:
    """``evaluate`` for a data migration: where the subject stands. Never raises.

    ``None`` -> off/ERROR/PROVIDER_NOT_READY; an invalid document -> off/ERROR/PARSE_ERROR."""
    try:
        if isinstance(ruleset, Ruleset):
            return ruleset.decide_stage(flag, key, attributes)
        if ruleset is None:
            return _stage_error(flag, ErrorCode.PROVIDER_NOT_READY)
        entry = _cache.get(id(ruleset))
        if (entry is not None and entry[0] is ruleset and ruleset.get("version") == entry[1]
                and ruleset.get("environment") == entry[2]):
            compiled = entry[3]
        elif isinstance(ruleset, Mapping):
            compiled = _compile_and_cache(ruleset)
        else:
            return _stage_error(flag, ErrorCode.PARSE_ERROR)
        if compiled is None:
            return _stage_error(flag, ErrorCode.PARSE_ERROR)
        return compiled.decide_stage(flag, key, attributes)
    except Exception:
        return _stage_error(str(flag), ErrorCode.GENERAL)


# -- explain_cohort(): the server's "test a subject" box -------------------------------------


def explain_cohort(
    ruleset_or_doc: Ruleset | Mapping[str, Any],
    cohort_key: str,
    key: str | None,
    attributes: Mapping[str, Any] | None = None,
) -> tuple[bool, str]:
    """Whether a subject is in a cohort, and why, in words for a person.

    Accepts a Ruleset or a document (validated first: RulesetError if it is invalid).
    """
    listed: MemberList | None = None
    if isinstance(ruleset_or_doc, Ruleset):
        cohorts = ruleset_or_doc._cohorts
        listed = ruleset_or_doc.member_lists.get(cohort_key)
    else:
        validate_ruleset(ruleset_or_doc)
        cohorts = ruleset_or_doc.get("cohorts") or {}
    cohort = cohorts.get(cohort_key)
    if cohort is None:
        return False, f"unknown cohort {cohort_key!r}"
    attrs: Mapping[str, Any] = attributes if attributes is not None else {}
    if not isinstance(attrs, Mapping):
        return False, "attributes must be an object"
    match_on = cohort.get("match_on")
    if match_on is None:
        value: Any = key if isinstance(key, str) and key else None
        who = f"key {value!r}" if value is not None else "no key"
    else:
        value = attrs.get(match_on)
        if value is not None and not isinstance(value, str):
            value = str(value)
        who = f"{match_on} {value!r}" if value is not None else f"no '{match_on}' attribute"
    if value is not None:
        kind = listed.lookup(value) if listed is not None else 0
        if kind == 2 or value in (cohort.get("exclude") or ()):
            return False, f"excluded: {who} is listed in exclude"
        if kind == 1 or value in (cohort.get("include") or ()):
            return True, f"{who} is listed in include"
    if listed is None and cohort.get("members") is not None:
        return False, f"the member list of cohort {cohort_key!r} is not loaded"
    rules = cohort.get("rules")
    if rules_are_empty(rules):
        if value is None:
            return False, f"{who}, and the cohort has no rules"
        return False, f"{who} is not listed in include and the cohort has no rules"
    return explain_rules(rules, attrs)
