"""Reads of a data migration: where it stands, what SDKs reported per origin and operation, the divergence
list and its export, and whether it may complete (docs/migrations.md)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, TypedDict

from django.db.models import Count, Max, Min, Q, QuerySet, Sum
from turnout.wire import LATENCY_BUCKETS_MS

from common import clock
from rollout.datamigration.rules import MEANING, STAGES, Config, position, state_of
from rollout.models import Divergence, FlagState, MigrationMinute, MigrationStage

DEFAULT_WINDOW = 3600
COUNTERS = ("calls", "errors", "late", "skipped", "checks", "inconsistent", "check_errors", "divergences")
EXPORT_FIELDS = ("id", "flag", "environment", "origin", "operation", "identifier", "key_hash", "stage", "count",
                 "first_seen", "last_seen", "last_error", "resolved_at", "resolved_by", "resolution")


class OriginFigures(TypedDict):
    origin: str
    operation: str
    calls: int
    errors: int
    error_rate: float | None
    late: int
    skipped: int
    p95_ms: float | None
    checks: int
    inconsistent: int
    check_errors: int
    consistency_rate: float | None
    divergences: int


class DivergenceCount(TypedDict):
    origin: str
    operation: str
    records: int
    unresolved: int
    failed_writes: int
    first_seen: str | None
    last_seen: str | None


class Readiness(TypedDict):
    ready: bool
    reasons: list[str]


class MigrationStatus(TypedDict):
    flag: str
    environment: str
    enabled: bool
    stage: str
    splits: list[dict[str, Any]]
    cohorts: list[dict[str, Any]]
    furthest: str
    next_stage: str | None
    stages: list[dict[str, str]]
    window_seconds: int
    origins: list[OriginFigures]
    divergences: list[DivergenceCount]
    unresolved_divergences: int
    complete: Readiness


def _p95(histogram: list[int]) -> float | None:
    total = sum(histogram)
    if not total:
        return None
    seen, target = 0, 0.95 * total
    for i, n in enumerate(histogram):
        seen += n
        if seen >= target:
            return LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else float("inf")
    return None  # pragma: no cover


def origin_figures(state: FlagState, *, window_seconds: int = DEFAULT_WINDOW) -> list[OriginFigures]:
    """SDK reports of the last ``window_seconds`` per origin × operation (every stage together)."""
    since = clock.now() - timedelta(seconds=window_seconds)
    rows = MigrationMinute.objects.filter(environment_id=state.environment_id, flag_key=state.flag.key,
                                          minute__gte=since)
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        m = merged.setdefault((row.origin, row.operation),
                              {"latency": [0] * (len(LATENCY_BUCKETS_MS) + 1)} | dict.fromkeys(COUNTERS, 0))
        for name in COUNTERS:
            m[name] += getattr(row, name)
        m["latency"] = [a + b for a, b in zip(m["latency"], row.latency_ms or [], strict=False)]
    out: list[OriginFigures] = []
    for (origin, operation), m in sorted(merged.items()):
        out.append({"origin": origin, "operation": operation, "calls": m["calls"], "errors": m["errors"],
                    "error_rate": round(100 * m["errors"] / m["calls"], 4) if m["calls"] else None,
                    "late": m["late"], "skipped": m["skipped"], "p95_ms": _p95(m["latency"]),
                    "checks": m["checks"], "inconsistent": m["inconsistent"], "check_errors": m["check_errors"],
                    "consistency_rate": (round(100 * (m["checks"] - m["inconsistent"]) / m["checks"], 4)
                                         if m["checks"] else None),
                    "divergences": m["divergences"]})
    return out


def divergence_counts(state: FlagState) -> list[DivergenceCount]:
    rows = (Divergence.objects.filter(flag_state=state).values("origin", "operation")
            .annotate(records=Count("id"), unresolved=Count("id", filter=Q(resolved_at__isnull=True)),
                      failed=Sum("count"), first=Min("first_seen"), last=Max("last_seen"))
            .order_by("origin", "operation"))
    return [{"origin": r["origin"], "operation": r["operation"], "records": r["records"],
             "unresolved": r["unresolved"], "failed_writes": r["failed"] or 0,
             "first_seen": r["first"].isoformat() if r["first"] else None,
             "last_seen": r["last"].isoformat() if r["last"] else None} for r in rows]


def complete_readiness(state: FlagState, config: Config | None = None) -> Readiness:
    """May this migration complete now? ``rampdown`` everywhere and no unresolved divergence."""
    config = config or Config.of(state_of(state))
    reasons = []
    if config.stage == MigrationStage.COMPLETE:
        return {"ready": False, "reasons": ["the migration is already complete"]}
    if config.stage != MigrationStage.RAMPDOWN:
        reasons.append(f"the base stage is '{config.stage}', not 'rampdown'")
    behind = [c["cohort"] for c in config.cohorts if position(c["stage"]) < position(MigrationStage.RAMPDOWN)]
    if behind:
        reasons.append(f"cohort(s) {', '.join(behind)} are not at 'rampdown'")
    unresolved = Divergence.objects.filter(flag_state=state, resolved_at__isnull=True).count()
    if unresolved:
        reasons.append(f"{unresolved} unresolved divergence(s)")
    return {"ready": not reasons, "reasons": reasons}


def migration_status(state: FlagState, *, window_seconds: int = DEFAULT_WINDOW) -> MigrationStatus:
    config = Config.of(state_of(state))
    nxt = STAGES[position(config.stage) + 1] if config.stage != MigrationStage.COMPLETE else None
    counts = divergence_counts(state)
    return {
        "flag": state.flag.key, "environment": state.environment.key, "enabled": state.enabled,
        "stage": config.stage, "splits": [dict(s) for s in config.splits],
        "cohorts": [dict(c) for c in config.cohorts], "furthest": config.furthest, "next_stage": nxt,
        "stages": [{"stage": s, "meaning": MEANING[s]} for s in STAGES], "window_seconds": window_seconds,
        "origins": origin_figures(state, window_seconds=window_seconds), "divergences": counts,
        "unresolved_divergences": sum(c["unresolved"] for c in counts),
        "complete": complete_readiness(state, config),
    }


def divergence_list(state: FlagState, *, resolved: bool | None = None) -> QuerySet[Divergence]:
    rows = Divergence.objects.filter(flag_state=state).order_by("-last_seen", "id")
    if resolved is not None:
        rows = rows.filter(resolved_at__isnull=not resolved)
    return rows


def divergence_row(state: FlagState, d: Divergence) -> dict[str, Any]:
    return {"id": d.pk, "flag": state.flag.key, "environment": state.environment.key, "origin": d.origin,
            "operation": d.operation, "identifier": d.identifier, "key_hash": d.key_hash, "stage": d.stage,
            "count": d.count, "first_seen": d.first_seen.isoformat(), "last_seen": d.last_seen.isoformat(),
            "last_error": d.last_error, "resolved_at": d.resolved_at.isoformat() if d.resolved_at else None,
            "resolved_by": d.resolved_by, "resolution": d.resolution}


def export_lines(state: FlagState, *, fmt: str, resolved: bool | None = None) -> Iterator[str]:
    """The divergence list as CSV (a header, then one row each) or JSON Lines, streamed in constant memory."""
    rows = divergence_list(state, resolved=resolved).iterator(chunk_size=2_000)
    if fmt == "jsonl":
        for d in rows:
            yield json.dumps(divergence_row(state, d), ensure_ascii=False, sort_keys=True) + "\n"
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for d in rows:
        row = divergence_row(state, d)
        writer.writerow({k: ("" if row[k] is None else _csv_safe(row[k])) for k in EXPORT_FIELDS})
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _csv_safe(value: Any) -> Any:
    """A cell a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``) is quoted with a leading ``'``."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
