"""The SDK wire contract, typed once (see ``docs/sdk-protocol.md``).

Everything here is part of the contract between the server and every SDK: the endpoint paths,
the latency histogram's bucket bounds, the **ruleset document** (``RulesetDocument``, with
``FlagRule`` and ``CohortRule``) the server builds and the SDK evaluates, and the **metrics
batch** (``MetricsBatch``, with ``FlagRow``, ``MismatchSample``, ``BreakerEvent``) the SDK
sends and the server parses. The server's builder (``rollout/delivery/ruleset.py``) and parser
(``rollout/telemetry/batches.py``), the SDK, ``turnout.testing`` and the tests' fake server all use these
types. Changing one is a protocol change.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from typing import Any, Final, Literal, NotRequired, TypedDict

__all__ = [
    "LATENCY_BUCKETS_MS",
    "MEMBERS_MEDIA_TYPE",
    "MEMBERS_PATH",
    "METRICS_PATH",
    "RULESET_MEMBERS_QUERY",
    "RULESET_PATH",
    "SCHEMA",
    "SDK_NAME",
    "STREAM_PATCHES_QUERY",
    "STREAM_PATH",
    "BreakerEvent",
    "CohortRule",
    "ConsistencySample",
    "DivergenceReport",
    "FlagRow",
    "FlagRule",
    "MemberListRef",
    "MetricsBatch",
    "MigrationRow",
    "MigrationRule",
    "MigrationSplit",
    "MismatchSample",
    "PathName",
    "RulesetDocument",
    "RulesetPatch",
    "StageCohort",
    "apply_patch",
    "key_hash",
    "latency_bucket",
]

SDK_NAME: Final = "turnout-python"

#: the ruleset document's ``schema``
SCHEMA: Final = 1

RULESET_PATH: Final = "/api/v1/sdk/ruleset"
#: the ruleset's (and the stream's) query asking for member-list references instead of large inline
#: lists (docs/sdk-protocol.md, "Member lists"); servers that do not know it send inline lists
RULESET_MEMBERS_QUERY: Final = "members=1"
#: a large cohort's member-list document (``turnout.members``); ``{key}`` is the cohort key, URL-quoted
MEMBERS_PATH: Final = "/api/v1/sdk/cohorts/{key}/members"
MEMBERS_MEDIA_TYPE: Final = "application/vnd.turnout.members"
STREAM_PATH: Final = "/api/v1/sdk/stream"
#: the stream's query asking for ``patch`` events (servers that do not know it send ``ruleset`` events only)
STREAM_PATCHES_QUERY: Final = "patches=1"
METRICS_PATH: Final = "/api/v1/sdk/metrics"

#: Upper bounds (inclusive, milliseconds) of the fixed, log-scaled latency histogram. A
#: histogram has ``len(LATENCY_BUCKETS_MS) + 1`` counts: the last one counts everything
#: above the last bound.
LATENCY_BUCKETS_MS: Final[tuple[float, ...]] = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
)
_BOUNDS_NS: Final = tuple(round(b * 1_000_000) for b in LATENCY_BUCKETS_MS)


def latency_bucket(elapsed_ns: int) -> int:
    """Index of the histogram count that a duration of ``elapsed_ns`` nanoseconds falls in."""
    return bisect_left(_BOUNDS_NS, elapsed_ns)


def key_hash(key: object) -> str:
    """SHA-256 (hex) of a subject's key: how a key leaves the process, never in clear."""
    return hashlib.sha256(str(key).encode("utf-8")).hexdigest()


class FlagRow(TypedDict):
    """Counts for one (flag, served path, ruleset version) in a metrics window."""

    flag: str
    path: str
    version: int | None
    calls: int
    #: runs of this path whose outcome is known (``run()``/``arun()``, reported outcomes): the
    #: denominator of its error rate. Optional on the wire: absent, ``sum(latency_ms)``.
    runs: NotRequired[int]
    errors: int
    fallbacks: int
    latency_ms: list[int]
    comparisons: int
    mismatches: int
    compare_skipped: int
    compare_errors: int
    compare_timeouts: int
    error_codes: dict[str, int]


class MismatchSample(TypedDict):
    flag: str
    version: int | None
    key_hash: str
    served: str
    legacy: Any
    parallel: Any
    truncated: bool
    at: str


class BreakerEvent(TypedDict):
    flag: str
    state: str
    reason: str
    at: str


class MigrationRow(TypedDict):
    """Counts for one (flag, ruleset version, stage, origin, operation) of a data migration in a window.
    ``late`` counts non-authoritative runs that outlasted the budget (the call did not wait for them);
    ``checks``/``inconsistent``/``check_errors`` (reads, on the authoritative origin's row) count
    consistency checks; ``divergences`` (writes, on the non-authoritative origin's row) failed writes."""

    flag: str
    version: int | None
    stage: str
    origin: str
    operation: str
    calls: int
    errors: int
    late: int
    skipped: int
    latency_ms: list[int]
    checks: int
    inconsistent: int
    check_errors: int
    divergences: int


class ConsistencySample(TypedDict):
    """A read whose two origins disagreed, as the host's redaction hook left the results."""

    flag: str
    version: int | None
    stage: str
    key_hash: str
    authoritative: str
    legacy: Any
    parallel: Any
    truncated: bool
    at: str


class DivergenceReport(TypedDict):
    """A write that reached the authoritative origin but not the other one: the reconciliation trail.
    ``identifier`` is what the host's hook chose (a row id...), or null."""

    flag: str
    version: int | None
    stage: str
    key_hash: str
    origin: str
    operation: str
    identifier: str | None
    error: str
    at: str


class MetricsBatch(TypedDict):
    sdk: dict[str, str | None]
    #: unique per batch; a retry of the batch carries the same id, so the server counts it once
    batch_id: str
    window: dict[str, str]
    flags: list[FlagRow]
    mismatch_samples: list[MismatchSample]
    breaker_events: list[BreakerEvent]
    dropped: dict[str, int]
    migrations: NotRequired[list[MigrationRow]]
    consistency_samples: NotRequired[list[ConsistencySample]]
    divergences: NotRequired[list[DivergenceReport]]


# -- the ruleset document (GET /api/v1/sdk/ruleset; DESIGN.md, "The evaluation engine") -------

PathName = Literal["legacy", "parallel"]


class MemberListRef(TypedDict):
    """A cohort whose lists travel as a member-list document (``MEMBERS_PATH``) at this version or later;
    ``count`` is the number of listed members (include + exclude), for information."""

    version: int
    count: NotRequired[int]


class CohortRule(TypedDict):
    """One cohort: who is in it. ``rules`` is the attribute-rule tree (``all``/``any``/``not``
    over ``{attr, op, values}`` conditions; ``turnout._rules`` checks it), ``include``/``exclude``
    list values of the ``match_on`` attribute (absent: the context key). ``members`` (schema 2, only
    for SDKs that asked with ``RULESET_MEMBERS_QUERY``) replaces ``include``/``exclude`` by a reference
    to the cohort's member-list document."""

    match_on: NotRequired[str | None]
    rules: NotRequired[dict[str, Any] | None]
    include: NotRequired[list[str]]
    exclude: NotRequired[list[str]]
    members: NotRequired[MemberListRef]


class MigrationSplit(TypedDict):
    """A share of subjects (0-100) at ``stage`` or beyond."""

    stage: str
    percentage: float


class StageCohort(TypedDict):
    cohort: str
    stage: str


class MigrationRule(TypedDict):
    """A data migration's stages (docs/migrations.md): the base ``stage``, ``splits`` further ahead by
    share (in stage order, shares not growing), ``cohorts`` placed at a stage (first match wins)."""

    stage: str
    splits: NotRequired[list[MigrationSplit]]
    cohorts: NotRequired[list[StageCohort]]


class FlagRule(TypedDict):
    """One flag's rollout in the document's environment. ``enabled`` and ``percentage`` are
    required; the others default as in DESIGN.md (``retired`` false, ``salt`` the flag key...)."""

    enabled: bool
    percentage: float
    retired: NotRequired[bool]
    salt: NotRequired[str | None]
    bucket_by: NotRequired[str | None]
    overrides: NotRequired[dict[str, PathName]]
    exclude_cohorts: NotRequired[list[str]]
    include_cohorts: NotRequired[list[str]]
    compare_percentage: NotRequired[float]
    stage: NotRequired[int | None]
    migration: NotRequired[MigrationRule]


class RulesetDocument(TypedDict):
    """An environment's ruleset (``schema`` 1; 2 when a cohort carries a ``members`` reference). ``version``
    only grows. Readers ignore fields
    they do not know, so a newer server can add some."""

    schema: int
    environment: str
    version: int
    cohorts: NotRequired[dict[str, CohortRule]]
    flags: dict[str, FlagRule]


class RulesetPatch(TypedDict):
    """The data of a stream ``patch`` event: what changed from version ``base`` to ``version``.
    Each named flag or cohort is replaced whole (``null``: removed); everything else is as in
    ``base``. Applied only on top of exactly ``base`` (else the whole document is fetched);
    ``etag`` is the new version's ruleset ETag."""

    environment: str
    base: int
    version: int
    etag: str
    flags: dict[str, FlagRule | None]
    cohorts: dict[str, CohortRule | None]


def apply_patch(doc: RulesetDocument, patch: RulesetPatch) -> RulesetDocument:
    """The document of ``patch["version"]``: ``doc`` (which must be version ``patch["base"]``) with
    the patch's flags and cohorts replaced or removed. ``doc`` is left as it was. ValueError when the
    patch does not apply to ``doc`` or is malformed."""
    if not isinstance(patch, dict):
        raise ValueError("a patch is a JSON object")
    base, version = patch.get("base"), patch.get("version")
    flags, cohorts = patch.get("flags"), patch.get("cohorts")
    if patch.get("environment") != doc.get("environment") or base != doc.get("version"):
        raise ValueError(f"patch from version {base!r} does not apply to version {doc.get('version')!r}")
    if type(version) is not int or type(base) is not int or version <= base:
        raise ValueError("patch versions must be integers, the new one above the base")
    if not isinstance(flags, dict) or not isinstance(cohorts, dict):
        raise ValueError("patch flags and cohorts must be objects")
    new: dict[str, Any] = dict(doc)
    new["version"] = version
    for name, changes in (("flags", flags), ("cohorts", cohorts)):
        current: dict[str, Any] = dict(doc.get(name) or {})  # type: ignore[call-overload]  # flags or cohorts
        merged = current
        for key, value in changes.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        new[name] = merged
    result: RulesetDocument = new  # type: ignore[assignment]  # the same keys, new values
    return result
