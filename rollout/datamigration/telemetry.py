"""What SDKs report about migration calls (``migrations``, ``consistency_samples``, ``divergences`` in a
metrics batch; docs/sdk-protocol.md): parsed strictly, then counted per minute, sampled, and folded into
the divergence list.

The fields are optional: a batch without them (an older SDK) is counted as before. A bad field refuses the
whole batch with ``400`` naming it, like the rest of the batch. Counts go straight to the database (one
row per flag, stage, origin, operation and minute): migration calls are writes of the host's own data,
orders of magnitude rarer than decisions.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.db.models import F
from turnout.wire import LATENCY_BUCKETS_MS

from common import clock
from rollout.delivery.lean import BadRequest
from rollout.models import (
    ConsistencySample,
    Divergence,
    FlagKind,
    FlagState,
    MigrationMinute,
    MigrationStage,
)

COUNTERS = ("calls", "errors", "late", "skipped", "checks", "inconsistent", "check_errors", "divergences")
ORIGINS = ("legacy", "parallel")
OPERATIONS = ("read", "write")
HISTOGRAM_SIZE = len(LATENCY_BUCKETS_MS) + 1
MAX_COUNT = 10**12
MAX_ROWS = 2_000
MAX_SAMPLES = 100
MAX_DIVERGENCES = 1_000
MAX_SAMPLE_SIDE_BYTES = 16 * 1024
SAMPLES_PER_MINUTE = 50
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")
_KEY_HASH = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class MigrationCounts:
    flag: str
    stage: str
    origin: str
    operation: str
    counts: dict[str, int]
    latency: list[int]


@dataclass(frozen=True)
class Sample:
    flag: str
    stage: str
    key_hash: str
    authoritative: str
    legacy: Any
    parallel: Any
    truncated: bool
    at: datetime


@dataclass(frozen=True)
class Report:
    flag: str
    stage: str
    key_hash: str
    origin: str
    operation: str
    identifier: str
    error: str
    at: datetime


@dataclass(frozen=True)
class MigrationBatch:
    rows: list[MigrationCounts]
    samples: list[Sample]
    divergences: list[Report]

    def __bool__(self) -> bool:
        return bool(self.rows or self.samples or self.divergences)


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(where, "must be an object")
    return value


def _list(value: Any, where: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise BadRequest(where, "must be a list")
    if len(value) > limit:
        raise BadRequest(where, f"has more than {limit} items")
    return value


def _count(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
        raise BadRequest(where, f"must be an integer from 0 to {MAX_COUNT}")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise BadRequest(where, "must be a string of 1 to 100 printable characters")
    return value


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices or not isinstance(value, str):
        raise BadRequest(where, f"must be one of {', '.join(choices)}")
    return value


def _time(value: Any, where: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise BadRequest(where, "must be an ISO-8601 timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(where, "must be an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise BadRequest(where, "must carry a time zone (e.g. Z)")
    return parsed


def _key_hash(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _KEY_HASH.match(value):
        raise BadRequest(where, "must be the SHA-256 of the key, 64 lowercase hex digits")
    return value


def _text(value: Any, where: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(where, f"must be a string of at most {limit} characters, or null")
    return value


def _side(value: Any, where: str) -> Any:
    if len(json.dumps(value, ensure_ascii=False).encode()) > MAX_SAMPLE_SIDE_BYTES:
        raise BadRequest(where, f"is larger than {MAX_SAMPLE_SIDE_BYTES} bytes")
    return value


STAGES = tuple(MigrationStage.values)


def _row(raw: Any, where: str) -> MigrationCounts:
    row = _obj(raw, where)
    latency = _list(row.get("latency_ms"), f"{where}.latency_ms", HISTOGRAM_SIZE)
    if len(latency) != HISTOGRAM_SIZE:
        raise BadRequest(f"{where}.latency_ms", f"must have exactly {HISTOGRAM_SIZE} counts (one per bucket)")
    if row.get("version") is not None:
        _count(row["version"], f"{where}.version")
    return MigrationCounts(
        flag=_name(row.get("flag"), f"{where}.flag"), stage=_choice(row.get("stage"), f"{where}.stage", STAGES),
        origin=_choice(row.get("origin"), f"{where}.origin", ORIGINS),
        operation=_choice(row.get("operation"), f"{where}.operation", OPERATIONS),
        counts={name: _count(row.get(name, 0), f"{where}.{name}") for name in COUNTERS},
        latency=[_count(n, f"{where}.latency_ms[{i}]") for i, n in enumerate(latency)])


def _sample(raw: Any, where: str) -> Sample:
    sample = _obj(raw, where)
    truncated = sample.get("truncated", False)
    if not isinstance(truncated, bool):
        raise BadRequest(f"{where}.truncated", "must be true or false")
    for side in ORIGINS:
        if side not in sample:
            raise BadRequest(f"{where}.{side}", "is required")
    return Sample(flag=_name(sample.get("flag"), f"{where}.flag"),
                  stage=_choice(sample.get("stage"), f"{where}.stage", STAGES),
                  key_hash=_key_hash(sample.get("key_hash"), f"{where}.key_hash"),
                  authoritative=_choice(sample.get("authoritative"), f"{where}.authoritative", ORIGINS),
                  legacy=_side(sample["legacy"], f"{where}.legacy"),
                  parallel=_side(sample["parallel"], f"{where}.parallel"),
                  truncated=truncated, at=_time(sample.get("at"), f"{where}.at"))


def _report(raw: Any, where: str) -> Report:
    report = _obj(raw, where)
    return Report(flag=_name(report.get("flag"), f"{where}.flag"),
                  stage=_choice(report.get("stage"), f"{where}.stage", STAGES),
                  key_hash=_key_hash(report.get("key_hash"), f"{where}.key_hash"),
                  origin=_choice(report.get("origin"), f"{where}.origin", ORIGINS),
                  operation=_choice(report.get("operation", "write"), f"{where}.operation", OPERATIONS),
                  identifier=_text(report.get("identifier"), f"{where}.identifier", 200),
                  error=_text(report.get("error"), f"{where}.error", 300),
                  at=_time(report.get("at"), f"{where}.at"))


def parse_migration_batch(data: Any) -> MigrationBatch:
    """The migration fields of a metrics batch (``turnout.wire``), checked; BadRequest names the first bad
    field (``migrations[2].origin``). Absent fields are empty."""
    batch = _obj(data, "body")
    rows = [_row(r, f"migrations[{i}]") for i, r in enumerate(_list(batch.get("migrations", []), "migrations",
                                                                      MAX_ROWS))]
    samples = [_sample(s, f"consistency_samples[{i}]") for i, s in
               enumerate(_list(batch.get("consistency_samples", []), "consistency_samples", MAX_SAMPLES))]
    reports = [_report(d, f"divergences[{i}]") for i, d in
               enumerate(_list(batch.get("divergences", []), "divergences", MAX_DIVERGENCES))]
    return MigrationBatch(rows, samples, reports)


def _minute(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(second=0, microsecond=0)


def migration_record(*, environment_id: int, batch: MigrationBatch, now: datetime | None = None) -> None:
    """Count a batch's migration fields for the environment, in the minute the server received them.
    Telemetry, not a change: no audit event (resolving a divergence is one)."""
    if not batch:
        return
    minute = _minute(now or clock.now())
    with transaction.atomic():
        _add_counts(environment_id, minute, batch.rows)
        _store_samples(environment_id, minute, batch.samples)
        _fold_divergences(environment_id, batch.divergences)


def _add_counts(environment_id: int, minute: datetime, rows: list[MigrationCounts]) -> None:
    merged: dict[tuple[str, str, str, str], tuple[dict[str, int], list[int]]] = {}
    for row in rows:
        key = (row.flag, row.stage, row.origin, row.operation)
        counts, latency = merged.setdefault(key, (dict.fromkeys(COUNTERS, 0), [0] * HISTOGRAM_SIZE))
        for name, n in row.counts.items():
            counts[name] += n
        for i, n in enumerate(row.latency):
            latency[i] += n
    for (flag, stage, origin, operation), (counts, latency) in sorted(merged.items()):
        found, _ = MigrationMinute.objects.select_for_update().get_or_create(
            environment_id=environment_id, flag_key=flag, stage=stage, origin=origin, operation=operation,
            minute=minute, defaults={"latency_ms": [0] * HISTOGRAM_SIZE})
        for name, n in counts.items():
            setattr(found, name, getattr(found, name) + n)
        found.latency_ms = [a + b for a, b in zip(found.latency_ms or [0] * HISTOGRAM_SIZE, latency, strict=True)]
        found.save()


def _store_samples(environment_id: int, minute: datetime, samples: list[Sample]) -> None:
    if not samples:
        return
    room = SAMPLES_PER_MINUTE - ConsistencySample.objects.filter(environment_id=environment_id,
                                                                 minute=minute).count()
    ConsistencySample.objects.bulk_create([
        ConsistencySample(environment_id=environment_id, flag_key=s.flag, stage=s.stage, key_hash=s.key_hash,
                          authoritative=s.authoritative, legacy=s.legacy, parallel=s.parallel,
                          truncated=s.truncated, at=s.at, minute=minute)
        for s in samples[:max(0, room)]])


def _fold_divergences(environment_id: int, reports: list[Report]) -> None:
    """One row per diverged record (flag state, key hash, origin, operation, identifier): repeats count on
    it; a record that diverges again after it was resolved is open again."""
    if not reports:
        return
    states = {s.flag.key: s for s in FlagState.objects.select_related("flag").filter(
        environment_id=environment_id, flag__key__in={r.flag for r in reports}, flag__kind=FlagKind.MIGRATION)}
    grouped: dict[tuple[int, str, str, str, str], list[Report]] = defaultdict(list)
    for r in reports:
        state = states.get(r.flag)
        if state is not None:  # a flag that is not a migration here has no reconciliation trail
            grouped[(state.pk, r.key_hash, r.origin, r.operation, r.identifier)].append(r)
    for (state_id, key_hash, origin, operation, identifier), same in sorted(grouped.items()):
        first, last = min(r.at for r in same), max(same, key=lambda r: r.at)
        row, created = Divergence.objects.select_for_update().get_or_create(
            flag_state_id=state_id, key_hash=key_hash, origin=origin, operation=operation, identifier=identifier,
            defaults={"stage": last.stage, "count": len(same), "first_seen": first, "last_seen": last.at,
                      "last_error": last.error})
        if created:
            continue
        Divergence.objects.filter(pk=row.pk).update(
            count=F("count") + len(same), stage=last.stage, last_error=last.error,
            last_seen=max(row.last_seen, last.at), first_seen=min(row.first_seen, first),
            resolved_at=None, resolved_by="", resolution="")
