"""Reads of a data migration: where it stands, what SDKs reported per origin and operation (over a window and
per minute, for the charts), the divergence list and its export, and whether it may complete
(docs/migrations.md)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, TypedDict

from django.db.models import Count, Max, Min, Q, QuerySet, Sum
from turnout.wire import LATENCY_BUCKETS_MS

from common import clock
from rollout.datamigration.rules import MEANING, STAGES, Config, position, state_of
from rollout.models import Divergence, FlagKind, FlagState, MigrationMinute, MigrationStage

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
    p50_ms: float | None
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


def _quantile(histogram: list[int], q: float) -> float | None:
    """The upper bound of the latency bucket holding the ``q`` quantile (the last bound for the overflow
    bucket: "at least"), None without calls."""
    total = sum(histogram)
    if not total:
        return None
    seen, target = 0, q * total
    for i, n in enumerate(histogram):
        seen += n
        if seen >= target:
            return LATENCY_BUCKETS_MS[min(i, len(LATENCY_BUCKETS_MS) - 1)]
    return None  # pragma: no cover


def _rate(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 4) if whole else None


def _minutes(state: FlagState, *, start: datetime, end: datetime | None = None) -> QuerySet[MigrationMinute]:
    rows = MigrationMinute.objects.filter(environment_id=state.environment_id, flag_key=state.flag.key,
                                          minute__gte=start)
    return rows if end is None else rows.filter(minute__lt=end)


def _empty() -> dict[str, Any]:
    return {"latency": [0] * (len(LATENCY_BUCKETS_MS) + 1)} | dict.fromkeys(COUNTERS, 0)


def _add(into: dict[str, Any], row: MigrationMinute) -> None:
    for name in COUNTERS:
        into[name] += getattr(row, name)
    into["latency"] = [a + b for a, b in zip(into["latency"], row.latency_ms or [], strict=False)]


def _figures(origin: str, operation: str, m: dict[str, Any]) -> OriginFigures:
    return {"origin": origin, "operation": operation, "calls": m["calls"], "errors": m["errors"],
            "error_rate": _rate(m["errors"], m["calls"]), "late": m["late"], "skipped": m["skipped"],
            "p50_ms": _quantile(m["latency"], 0.5), "p95_ms": _quantile(m["latency"], 0.95),
            "checks": m["checks"], "inconsistent": m["inconsistent"], "check_errors": m["check_errors"],
            "consistency_rate": _rate(m["checks"] - m["inconsistent"], m["checks"]),
            "divergences": m["divergences"]}


def origin_figures(state: FlagState, *, window_seconds: int = DEFAULT_WINDOW, start: datetime | None = None,
                   end: datetime | None = None) -> list[OriginFigures]:
    """SDK reports per origin × operation (every stage together): of the last ``window_seconds``, or of the
    minutes from ``start`` to before ``end``."""
    start = start or clock.now() - timedelta(seconds=window_seconds)
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for row in _minutes(state, start=start, end=end):
        _add(merged.setdefault((row.origin, row.operation), _empty()), row)
    return [_figures(origin, operation, m) for (origin, operation), m in sorted(merged.items())]


class OriginMinute(TypedDict):
    minute: str
    origins: dict[str, OriginFigures]  # "legacy.read", "parallel.write", ...


def origin_series(state: FlagState, *, window_seconds: int = DEFAULT_WINDOW) -> list[OriginMinute]:
    """Per-minute figures per origin × operation over the last ``window_seconds`` (the charts), minutes
    without reports left out."""
    start = clock.now() - timedelta(seconds=window_seconds)
    merged: dict[datetime, dict[tuple[str, str], dict[str, Any]]] = {}
    for row in _minutes(state, start=start):
        _add(merged.setdefault(row.minute, {}).setdefault((row.origin, row.operation), _empty()), row)
    return [{"minute": minute.isoformat(),
             "origins": {f"{o}.{op}": _figures(o, op, m) for (o, op), m in sorted(per.items())}}
            for minute, per in sorted(merged.items())]


#: one colour per origin × operation: legacy greys, parallel blues (the readiness charts' path colours),
#: writes lighter than reads
SERIES_COLOURS = {"legacy.read": "#6b7780", "legacy.write": "#a3adb5", "parallel.read": "#1f5fae",
                  "parallel.write": "#7aa6dc"}


def migration_charts(series: list[OriginMinute], *, environment: str) -> list[dict[str, Any]]:
    """Chart data (the flag page's ``canvas[data-chart]`` format, like the readiness charts): calls, errors
    and p95 latency per origin × operation per minute, and the consistency rate of reads that ran both."""
    labels = [point["minute"][11:16] for point in series]
    names = sorted({name for point in series for name in point["origins"]})

    def value(point: OriginMinute, name: str, metric: str) -> Any:
        figures: Mapping[str, Any] | None = point["origins"].get(name)
        return None if figures is None else figures[metric]

    def lines(metric: str) -> list[dict[str, Any]]:
        return [{"label": name.replace(".", " "), "color": SERIES_COLOURS.get(name, "#444"),
                 "data": [value(point, name, metric) for point in series]} for name in names]

    def consistency(point: OriginMinute) -> float | None:
        checks = sum(f["checks"] for f in point["origins"].values())
        inconsistent = sum(f["inconsistent"] for f in point["origins"].values())
        return _rate(checks - inconsistent, checks)

    charts: list[dict[str, Any]] = [
        {"id": "calls", "title": "Calls", "unit": "calls", "labels": labels, "series": lines("calls")},
        {"id": "errors", "title": "Errors", "unit": "errors", "labels": labels, "series": lines("errors")},
        {"id": "latency", "title": "Latency p95", "unit": "ms", "labels": labels, "series": lines("p95_ms")},
        {"id": "consistency", "title": "Consistency rate (reads compared)", "unit": "%", "labels": labels,
         "series": [{"label": "consistent", "color": "#2e7d32", "data": [consistency(p) for p in series]}]},
    ]
    for chart in charts:
        chart["element_id"] = f"migration-chart-{environment}-{chart['id']}"
    return charts


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


class MigrationReadiness(TypedDict):
    """The readiness report's section for a migration flag: its stages and the SDK figures per origin ×
    operation over the report's window, with the divergences (unresolved ones block ``complete``)."""

    stage: str
    furthest: str
    origins: list[OriginFigures]
    divergences: list[DivergenceCount]
    unresolved_divergences: int
    complete: Readiness


def migration_readiness(state: FlagState, *, start: datetime, end: datetime) -> MigrationReadiness | None:
    """The readiness report's migration section (None for a release flag): figures of the minutes from
    ``start`` to before ``end``."""
    if state.flag.kind != FlagKind.MIGRATION:
        return None
    config = Config.of(state_of(state))
    counts = divergence_counts(state)
    return {"stage": config.stage, "furthest": config.furthest,
            "origins": origin_figures(state, start=start, end=end), "divergences": counts,
            "unresolved_divergences": sum(c["unresolved"] for c in counts),
            "complete": complete_readiness(state, config)}


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
