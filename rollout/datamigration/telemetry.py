"""What SDKs report about migration calls (``migrations``, ``consistency_samples``, ``divergences`` in a
metrics batch; docs/sdk-protocol.md): parsed strictly, then counted per minute, sampled, and folded into
the divergence list.

The fields are optional: a batch without them (an older SDK) is counted as before. A bad field refuses the
whole batch with ``400`` naming it, like the rest of the batch (one validator for both:
``rollout/telemetry/rows.py``). With Redis they travel with the batch through the metrics stream and are
applied by the roll-up in the same transaction as its counts (``rollout/telemetry/ingest.py``); without
Redis (embedded mode) ``migration_record`` writes them at once. One row per flag, stage, origin, operation
and minute.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.db.models import F

from common import clock
from rollout.models import (
    ConsistencySample,
    Divergence,
    FlagKind,
    FlagState,
    MigrationMinute,
    MigrationStage,
)
from rollout.telemetry import rows as check
from rollout.telemetry.rows import HISTOGRAM_SIZE, PATHS

COUNTERS = ("calls", "errors", "late", "skipped", "checks", "inconsistent", "check_errors", "divergences")
ORIGINS = PATHS
OPERATIONS = ("read", "write")
MAX_ROWS = 2_000
MAX_SAMPLES = 100
MAX_DIVERGENCES = 1_000
SAMPLES_PER_MINUTE = 50


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


STAGES = tuple(MigrationStage.values)


def _row(raw: Any, where: str) -> MigrationCounts:
    row = check.counted_row(raw, where, dimensions={"stage": STAGES, "origin": ORIGINS, "operation": OPERATIONS},
                            counters=COUNTERS)
    return MigrationCounts(flag=row.flag, stage=row.keys["stage"], origin=row.keys["origin"],
                           operation=row.keys["operation"], counts=row.counts, latency=row.latency)


def _sample(raw: Any, where: str) -> Sample:
    sample = check.obj(raw, where)
    legacy, parallel, truncated = check.sample_sides(sample, where)
    return Sample(flag=check.name(sample.get("flag"), f"{where}.flag"),
                  stage=check.choice(sample.get("stage"), f"{where}.stage", STAGES),
                  key_hash=check.key_hash(sample.get("key_hash"), f"{where}.key_hash"),
                  authoritative=check.choice(sample.get("authoritative"), f"{where}.authoritative", ORIGINS),
                  legacy=legacy, parallel=parallel, truncated=truncated,
                  at=check.timestamp(sample.get("at"), f"{where}.at"))


def _text(value: Any, where: str, limit: int) -> str:
    return check.optional_text(value, where, limit) or ""


def _report(raw: Any, where: str) -> Report:
    report = check.obj(raw, where)
    return Report(flag=check.name(report.get("flag"), f"{where}.flag"),
                  stage=check.choice(report.get("stage"), f"{where}.stage", STAGES),
                  key_hash=check.key_hash(report.get("key_hash"), f"{where}.key_hash"),
                  origin=check.choice(report.get("origin"), f"{where}.origin", ORIGINS),
                  operation=check.choice(report.get("operation", "write"), f"{where}.operation", OPERATIONS),
                  identifier=_text(report.get("identifier"), f"{where}.identifier", 200),
                  error=_text(report.get("error"), f"{where}.error", 300),
                  at=check.timestamp(report.get("at"), f"{where}.at"))


def parse_migration_batch(data: Any) -> MigrationBatch:
    """The migration fields of a metrics batch (``turnout.wire``), checked; BadRequest names the first bad
    field (``migrations[2].origin``). Absent fields are empty."""
    batch = check.obj(data, "body")
    rows = [_row(r, f"migrations[{i}]") for i, r in enumerate(check.items(batch.get("migrations", []), "migrations",
                                                                           MAX_ROWS))]
    samples = [_sample(s, f"consistency_samples[{i}]") for i, s in
               enumerate(check.items(batch.get("consistency_samples", []), "consistency_samples", MAX_SAMPLES))]
    reports = [_report(d, f"divergences[{i}]") for i, d in
               enumerate(check.items(batch.get("divergences", []), "divergences", MAX_DIVERGENCES))]
    return MigrationBatch(rows, samples, reports)


def _minute(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(second=0, microsecond=0)


def migration_record(*, environment_id: int, batch: MigrationBatch, now: datetime | None = None) -> None:
    """Count a batch's migration fields for the environment, in the minute the server received them.
    Telemetry, not a change: no audit event (resolving a divergence is one)."""
    if not batch:
        return
    with transaction.atomic():
        migration_apply(environment_id=environment_id, minute=_minute(now or clock.now()), batch=batch)


def migration_apply(*, environment_id: int, minute: datetime, batch: MigrationBatch) -> None:
    """``migration_record``'s writes, inside the caller's transaction (the metrics roll-up applies the
    migration fields of many batches with their counts, rollout/telemetry/ingest.py)."""
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
