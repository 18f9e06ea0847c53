"""Reading the per-minute SDK metrics: windows, rates and latency percentiles from histograms.

Rates are percentages (0-100); latencies are milliseconds. A percentile is interpolated
linearly inside its histogram bucket (bounds: ``LATENCY_BUCKETS_MS``); one that falls in the
overflow bucket reports the last bound (it is at least that).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from turnout.wire import LATENCY_BUCKETS_MS  # the SDK wire protocol's bounds

from common.redis import get_redis
from rollout.models import MetricMinute
from rollout.telemetry import ingest

PATHS = ("legacy", "parallel")


class MinuteRow(TypedDict):
    """One path's counts in one minute, the ones read here: a stored MetricMinute row or one still in Redis."""

    path: str
    minute: datetime
    calls: int
    runs: int
    errors: int
    comparisons: int
    mismatches: int
    latency_ms: list[int]


def percentile(histogram: Sequence[int], q: float, bounds: Sequence[float] = LATENCY_BUCKETS_MS) -> float | None:
    """The ``q`` quantile (0 < q ≤ 1) of a latency histogram, in ms; None when it is empty."""
    total = sum(histogram)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(histogram):
        if count and seen + count >= rank:
            if index >= len(bounds):
                return float(bounds[-1])
            low = 0.0 if index == 0 else float(bounds[index - 1])
            high = float(bounds[index])
            return round(low + (high - low) * (rank - seen) / count, 3)
        seen += count
    return float(bounds[-1])


def rate(part: int, whole: int) -> float | None:
    return None if whole <= 0 else round(100.0 * part / whole, 4)


class PathFigures(TypedDict):
    """One path's figures over a window or a minute, as reports and the API show them."""

    calls: int
    runs: int
    errors: int
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    comparisons: int
    mismatches: int
    mismatch_rate: float | None


class SeriesPoint(TypedDict):
    """One minute of the readiness chart: both paths' figures."""

    minute: str
    legacy: PathFigures
    parallel: PathFigures


@dataclass
class PathStats:
    """One path's totals. ``calls`` counts decisions (bare ``decide()`` included), ``runs`` the runs
    whose outcome is known (``run()``/``arun()``, reported outcomes): the error rate is a share of
    runs, never of decisions that ran nothing."""

    calls: int = 0
    errors: int = 0
    comparisons: int = 0
    mismatches: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    runs: int = 0

    def add(self, *, calls: int, runs: int, errors: int, comparisons: int, mismatches: int,
            histogram: Iterable[int]) -> None:
        self.calls += calls
        self.runs += runs
        self.errors += errors
        self.comparisons += comparisons
        self.mismatches += mismatches
        for index, count in enumerate(histogram):
            if index < len(self.histogram):
                self.histogram[index] += count

    @property
    def error_rate(self) -> float | None:
        return rate(self.errors, self.runs)

    @property
    def mismatch_rate(self) -> float | None:
        return rate(self.mismatches, self.comparisons)

    def p(self, q: float) -> float | None:
        return percentile(self.histogram, q)

    def as_dict(self) -> PathFigures:
        return {"calls": self.calls, "runs": self.runs, "errors": self.errors, "error_rate": self.error_rate,
                "p50_ms": self.p(0.50), "p95_ms": self.p(0.95), "p99_ms": self.p(0.99),
                "comparisons": self.comparisons, "mismatches": self.mismatches,
                "mismatch_rate": self.mismatch_rate}


def minute_floor(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def minute_ceil(at: datetime) -> datetime:
    floor = minute_floor(at)
    return floor if floor == at else floor + timedelta(minutes=1)


def _stored_rows(environment_id: int, flag_key: str, start: datetime, end: datetime) -> list[MinuteRow]:
    return list(MetricMinute.objects.filter(environment_id=environment_id, flag_key=flag_key, minute__gte=start,
                                            minute__lt=end)
                .values("path", "minute", "calls", "runs", "errors", "comparisons", "mismatches", "latency_ms"))


def _open_rows(environment_id: int, flag_key: str, start: datetime, end: datetime) -> list[MinuteRow]:
    """Counts still in Redis (minutes not rolled up yet), so a check sees the last seconds too.

    Read after the stored rows: a minute rolled up in between is missed for one check (never
    counted twice)."""
    client = get_redis()
    if client is None:
        return []
    first, last = int(start.timestamp() // 60), int(end.timestamp() // 60)
    rows: list[MinuteRow] = []
    for raw in client.smembers(ingest.MINUTES):
        minute = int(raw)
        if not first <= minute < last:
            continue
        parsed = ingest._parse_hash(client.hgetall(ingest._hash_key(minute)), minute)
        for (env_id, flag, path, _m), counts in parsed.items():
            if env_id == environment_id and flag == flag_key:
                rows.append(MinuteRow(path=path, minute=datetime.fromtimestamp(minute * 60, UTC), calls=counts["calls"],
                                      runs=counts["runs"], errors=counts["errors"], comparisons=counts["comparisons"],
                                      mismatches=counts["mismatches"], latency_ms=counts["latency_ms"]))
    return rows


def _rows(environment_id: int, flag_key: str, start: datetime, end: datetime) -> list[MinuteRow]:
    """Per-minute rows of one flag in one environment with ``start <= minute < end`` (both paths)."""
    return [*_stored_rows(environment_id, flag_key, start, end), *_open_rows(environment_id, flag_key, start, end)]


def window_stats(state: Any, *, start: datetime, end: datetime) -> dict[str, PathStats]:
    """Totals per path over the minutes that begin in [start, end) for a flag state."""
    stats = {path: PathStats() for path in PATHS}
    for row in _rows(state.environment_id, state.flag.key, start, end):
        if row["path"] in stats:
            stats[row["path"]].add(calls=row["calls"], runs=row["runs"], errors=row["errors"],
                                   comparisons=row["comparisons"], mismatches=row["mismatches"],
                                   histogram=row["latency_ms"] or [])
    return stats


def partial_minute_stats(state: Any, *, since: datetime) -> dict[str, PathStats]:
    """Totals per path of the batches received in the minute of ``since`` whose traffic all came
    after ``since`` (``ingest`` keeps them by the estimated start of their traffic, for 15 minutes):
    how a stage's first, partial minute is judged without the traffic of the stage before it.
    Empty without Redis (embedded mode judges whole minutes only)."""
    stats = {path: PathStats() for path in PATHS}
    client = get_redis()
    if client is None:
        return stats
    minute = int(since.timestamp() // 60)
    first_second = since.timestamp()
    for (env_id, flag, path, second), counts in ingest.parse_fine(client.hgetall(ingest.fine_key(minute))).items():
        if env_id == state.environment_id and flag == state.flag.key and second >= first_second and path in stats:
            stats[path].add(calls=counts["calls"], runs=counts["runs"], errors=counts["errors"],
                            comparisons=counts["comparisons"], mismatches=counts["mismatches"],
                            histogram=counts["latency_ms"])
    return stats


def series(state: Any, *, start: datetime, end: datetime) -> list[SeriesPoint]:
    """Per-minute figures for both paths (the readiness chart)."""
    by_minute: dict[datetime, dict[str, PathStats]] = {}
    for row in _rows(state.environment_id, state.flag.key, start, end):
        paths = by_minute.setdefault(row["minute"], {p: PathStats() for p in PATHS})
        if row["path"] in paths:
            paths[row["path"]].add(calls=row["calls"], runs=row["runs"], errors=row["errors"],
                                   comparisons=row["comparisons"], mismatches=row["mismatches"],
                                   histogram=row["latency_ms"] or [])
    return [{"minute": minute.isoformat(), "legacy": paths["legacy"].as_dict(), "parallel": paths["parallel"].as_dict()}
            for minute, paths in sorted(by_minute.items())]
