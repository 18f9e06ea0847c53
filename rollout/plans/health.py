"""Judging a rollout's health (read-only: reads metrics and the last stored check, writes nothing).

The guardrail check (``rollout/plans/guardrails.py``), the advance (``rollout/plans/stages.py``),
the readiness report (``rollout/plans/readiness.py``) and the pages all ask this module for a verdict; none of
them is needed to give one, so every arrow points here and none points back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NotRequired, TypedDict

from common import clock
from rollout.models import FlagState, Guardrail
from rollout.plans.prometheus import QueryResult, query_results
from rollout.telemetry import reads as metrics_read
from rollout.telemetry.mismatches import known_share
from rollout.telemetry.reads import PathFigures, PathStats


class CheckFigures(TypedDict):
    name: str
    limit: float
    value: float | None
    ok: bool | None
    query: NotRequired[str]  # a Prometheus check: the PromQL it ran
    error: NotRequired[str]  # a Prometheus check not judged: why


class WindowBounds(TypedDict):
    start: str | None
    end: str | None


class HealthFigures(TypedDict):
    """A guardrail judgement with its figures: readiness reports, audit events and ``Guardrail.last_check``."""

    status: str
    window: WindowBounds
    legacy: PathFigures
    parallel: PathFigures
    mismatch_rate_excluding_known: float | None
    known_share: float
    sample_size: int
    min_sample_size: int
    checks: list[CheckFigures]


class LastCheck(HealthFigures):
    """``Guardrail.last_check``: the figures of the last check, and when it ran."""

    checked_at: str


@dataclass(frozen=True)
class Check:
    name: str
    limit: float
    value: float | None
    ok: bool | None  # None: not judged (no data)
    query: str = ""  # a Prometheus check (rollout/plans/prometheus.py): its PromQL
    error: str = ""

    def as_dict(self) -> CheckFigures:
        figures: CheckFigures = {"name": self.name, "limit": self.limit, "value": self.value, "ok": self.ok}
        if self.query:
            figures["query"] = self.query
        if self.error:
            figures["error"] = self.error
        return figures

    def describe(self) -> str:
        unit = "" if self.name == "latency_p95_ratio" or self.query else "%"
        value = None if self.value is None else round(self.value, 2)
        return f"{self.name.replace('_', ' ')} {value}{unit} > {self.limit}{unit}"


@dataclass
class Health:
    status: str  # healthy | breached | insufficient_data | unguarded | inactive
    window_start: datetime | None = None
    window_end: datetime | None = None
    legacy: PathStats = field(default_factory=PathStats)
    parallel: PathStats = field(default_factory=PathStats)
    checks: list[Check] = field(default_factory=list)
    sample_size: int = 0
    min_sample_size: int = 0
    known_share: float = 0.0
    mismatch_rate: float | None = None  # known differences excluded

    @property
    def breaches(self) -> list[str]:
        return [c.describe() for c in self.checks if c.ok is False]

    def figures(self) -> HealthFigures:
        return {
            "status": self.status,
            "window": {"start": self.window_start.isoformat() if self.window_start else None,
                       "end": self.window_end.isoformat() if self.window_end else None},
            "legacy": self.legacy.as_dict(), "parallel": self.parallel.as_dict(),
            "mismatch_rate_excluding_known": self.mismatch_rate, "known_share": self.known_share,
            "sample_size": self.sample_size, "min_sample_size": self.min_sample_size,
            "checks": [c.as_dict() for c in self.checks],
        }


def is_active(state: FlagState) -> bool:
    """Is there a parallel path to watch? (enabled, legacy not retired, something routed or compared)"""
    return state.enabled and not state.retired and (
        state.percentage > 0 or state.compare_percentage > 0 or state.stage > 0 or bool(state.overrides))


def judge(g: Guardrail, legacy: PathStats, parallel: PathStats, *, known_share: float = 0.0) -> Health:
    """The verdict on one window's figures (pure: no database)."""
    checks: list[Check] = []
    p_rate, l_rate = parallel.error_rate, legacy.error_rate
    if g.max_error_rate is not None:
        checks.append(Check("error_rate", float(g.max_error_rate), p_rate,
                            None if p_rate is None else p_rate <= float(g.max_error_rate)))
    if g.max_error_rate_increase is not None:
        increase = None if p_rate is None or l_rate is None else round(p_rate - l_rate, 4)
        checks.append(Check("error_rate_increase", float(g.max_error_rate_increase), increase,
                            None if increase is None else increase <= float(g.max_error_rate_increase)))
    if g.max_latency_p95_ratio is not None:
        p95, l95 = parallel.p(0.95), legacy.p(0.95)
        ratio = None if p95 is None or not l95 else round(p95 / l95, 3)
        checks.append(Check("latency_p95_ratio", float(g.max_latency_p95_ratio), ratio,
                            None if ratio is None else ratio <= float(g.max_latency_p95_ratio)))
    comparisons = legacy.comparisons + parallel.comparisons
    mismatches = (legacy.mismatches + parallel.mismatches) * (1.0 - known_share)
    mismatch_rate = None if comparisons <= 0 else round(100.0 * mismatches / comparisons, 4)
    if g.max_mismatch_rate is not None:
        checks.append(Check("mismatch_rate", float(g.max_mismatch_rate), mismatch_rate,
                            None if mismatch_rate is None else mismatch_rate <= float(g.max_mismatch_rate)))
    sample = max(parallel.runs, comparisons)  # runs, not decisions: a bare decide() ran nothing
    if any(c.ok is False for c in checks) and sample >= g.min_sample_size:
        status = "breached"
    elif sample < g.min_sample_size:
        status = "insufficient_data"
    else:
        status = "healthy"
    return Health(status=status, legacy=legacy, parallel=parallel, checks=checks, sample_size=sample,
                  min_sample_size=g.min_sample_size, known_share=round(known_share, 4),
                  mismatch_rate=mismatch_rate)


def window_bounds(state: FlagState, g: Guardrail, now: datetime) -> tuple[datetime, datetime]:
    start = metrics_read.minute_floor(now - timedelta(seconds=g.window_seconds))
    if state.stage_started_at is not None:
        start = max(start, metrics_read.minute_ceil(state.stage_started_at))
    return start, metrics_read.minute_floor(now) + timedelta(minutes=1)


def evaluate_state(state: FlagState, *, now: datetime | None = None) -> Health:
    """The current verdict for a flag state (reads metrics; writes nothing)."""
    now = now or clock.now()
    guardrail = Guardrail.objects.filter(flag_state=state).first()
    if not is_active(state):
        return Health(status="inactive")
    if guardrail is None:
        return Health(status="unguarded")
    start, end = window_bounds(state, guardrail, now)
    stats = metrics_read.window_stats(state, start=start, end=end)
    begun = state.stage_started_at
    if begun is not None and begun < start == metrics_read.minute_ceil(begun):
        # The stage began inside the window, mid-minute: its first seconds count too (sliding from
        # the stage's start), without the traffic of the stage before it.
        for path, partial in metrics_read.partial_minute_stats(state, since=begun).items():
            stats[path].add(calls=partial.calls, runs=partial.runs, errors=partial.errors,
                            comparisons=partial.comparisons, mismatches=partial.mismatches,
                            histogram=partial.histogram)
        start = begun
    health = judge(guardrail, stats["legacy"], stats["parallel"],
                   known_share=known_share(state, start=start, end=end))
    health.window_start, health.window_end = start, min(end, now)
    return with_queries(health, query_results(guardrail, at=now))


def with_queries(health: Health, results: list[QueryResult]) -> Health:
    """The SDK's verdict with the guardrail's Prometheus checks added: a query over its limit is a breach
    whatever the SDK sample size (the figure is the service's own); one not read is not judged."""
    for r in results:
        health.checks.append(Check(f"prometheus:{r.name}", r.limit, r.value,
                                   None if r.value is None else r.value <= r.limit, query=r.query, error=r.error))
    if any(c.ok is False and c.query for c in health.checks):
        health.status = "breached"
    return health


def last_check(flag_state_id: int) -> LastCheck | None:
    """The last check's verdict and figures (``Guardrail.last_check``, in the database so every process
    sees what the worker decided), or None when there has been none yet."""
    found: LastCheck | None = (Guardrail.objects.filter(flag_state_id=flag_state_id)
                                    .values_list("last_check", flat=True).first())
    return found


def stored_health(state: FlagState) -> Health:
    """The last check's verdict as a ``Health`` (for pages that poll: one row read, no recomputation);
    judged now when no check has run yet."""
    found = last_check(state.pk)
    if not found or not is_active(state):
        return evaluate_state(state)
    checks = [Check(name=c["name"], limit=c["limit"], value=c["value"], ok=c["ok"], query=c.get("query", ""),
                    error=c.get("error", "")) for c in found.get("checks", [])]
    return Health(status=found["status"], checks=checks, sample_size=found.get("sample_size", 0),
                  min_sample_size=found.get("min_sample_size", 0), known_share=found.get("known_share", 0.0),
                  mismatch_rate=found.get("mismatch_rate_excluding_known"))
