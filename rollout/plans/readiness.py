"""Reads for rollouts: where a plan stands, and the readiness report (API, gate and UI data).

The verdict:

* ``failing`` — a guardrail is breached (the reasons name each check and its figures);
* ``not_yet`` — something still stands in the way: no plan, not started or at its end, paused,
  killed, no guardrails, too little traffic to judge, or soak time left;
* ``ready`` — healthy, soaked, and a next stage to go to.

The results are TypedDicts: the API serializes them and templates read them as the plain dicts they
are, and every reader in Python gets its keys checked by mypy.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal, NotRequired, TypedDict

from audit.names import Action
from common import clock
from rollout.datamigration.reports import MigrationReadiness, migration_readiness
from rollout.feedback.reads import (
    FeedbackReport,
    FeedbackRuleStatus,
    feedback_report,
    feedback_rule_status,
    feedback_verdict,
)
from rollout.models import ChangeRequestStatus, FlagState, Guardrail, MismatchSample, ReviewItem
from rollout.plans.health import Health, HealthFigures, LastCheck, evaluate_state, last_check
from rollout.policy import approval_gated, state_effect
from rollout.snapshots import (
    FlagStateSnapshot,
    GuardrailSnapshot,
    StageSnapshot,
    flag_state_snapshot,
    guardrail_snapshot,
    stage_snapshot,
)
from rollout.telemetry import reads as metrics_read
from rollout.telemetry.mismatches import MismatchSummary, mismatch_summary
from rollout.telemetry.reads import PathFigures, SeriesPoint

DEFAULT_WINDOW_SECONDS = 3600
MAX_WINDOW_SECONDS = 7 * 86_400
RECENT_SAMPLES = 5

Verdict = Literal["ready", "not_yet", "failing"]
StageProgress = Literal["done", "current", "pending"]


class WorkloadBrief(TypedDict):
    key: str
    risk: str
    phase: str
    reversibility: str


class StageStatus(StageSnapshot):
    status: StageProgress


class PlanStatus(FlagStateSnapshot):
    """A flag state's snapshot with its plan: each stage's status, the soak clock, what waits on it."""

    workload: WorkloadBrief
    paused_at: str | None
    paused_reason: str
    stage_started_at: str | None
    current_stage: StageSnapshot | None
    next_stage: StageSnapshot | None
    soak_seconds_left: int | None
    next_needs_approval: bool
    stages: list[StageStatus]
    pending_change_requests: list[int]
    open_reviews: list[int]


class ReportWindow(TypedDict):
    start: str
    end: str
    seconds: int


class GuardrailsReport(TypedDict):
    config: GuardrailSnapshot | None
    status: str
    judged: HealthFigures
    breaches: list[str]
    last_check: LastCheck | None


class RecentSample(TypedDict):
    at: str
    version: int | None
    served: str
    legacy: Any  # the SDK's result as reported (redacted JSON)
    parallel: Any
    truncated: bool


class MismatchesReport(MismatchSummary):
    recent_samples: list[RecentSample]


class ReadinessReport(TypedDict):
    flag: str
    environment: str
    generated_at: str
    window: ReportWindow
    legacy: PathFigures
    parallel: PathFigures
    series: list[SeriesPoint]
    guardrails: GuardrailsReport
    plan: PlanStatus
    soak_seconds_left: int | None
    mismatches: MismatchesReport
    feedback: FeedbackReport  # user feedback per path and its rule (rollout/feedback)
    verdict: Verdict
    reasons: list[str]
    # A migration flag's figures per origin × operation and its divergences (None for a release flag).
    migration: MigrationReadiness | None


class GuardrailJudgement(TypedDict):
    status: str
    breaches: list[str]
    judged: HealthFigures


class MismatchCounts(TypedDict):
    kinds: int
    samples: int
    known_samples: int


class ReadinessAtAdvance(TypedDict):
    """The compact report recorded in an advance's audit event (and shown in evidence packs)."""

    generated_at: str
    verdict: Verdict
    reasons: list[str]
    guardrails: GuardrailJudgement
    soak_seconds_left: int | None
    mismatches: MismatchCounts
    feedback: NotRequired[FeedbackRuleStatus]  # only when the flag state has a feedback rule


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def plan_status(state: FlagState, *, now: datetime | None = None) -> PlanStatus:
    """The plan with each stage's status and the soak clock of the current one."""
    now = now or clock.now()
    stages = list(state.stages.prefetch_related("include_cohorts").order_by("position"))
    current = stages[state.stage - 1] if 0 < state.stage <= len(stages) else None
    nxt = stages[state.stage] if state.stage < len(stages) else None
    soak_left = None
    if current is not None and state.stage_started_at is not None:
        soak_left = max(0, int(current.min_soak_seconds - (now - state.stage_started_at).total_seconds()))

    def status(position: int) -> StageProgress:
        return "done" if position < state.stage else "current" if position == state.stage else "pending"

    return {
        **flag_state_snapshot(state),
        "workload": {"key": state.flag.workload.key, "risk": state.flag.workload.risk,
                     "phase": state.flag.workload.phase, "reversibility": state.flag.workload.reversibility},
        "paused_at": _iso(state.paused_at), "paused_reason": state.paused_reason,
        "stage_started_at": _iso(state.stage_started_at),
        "current_stage": stage_snapshot(current) if current else None,
        "next_stage": stage_snapshot(nxt) if nxt else None,
        "soak_seconds_left": soak_left,
        "next_needs_approval": approval_gated(state_effect(state, Action.FLAG_STATE_ADVANCED)),
        "stages": [{**stage_snapshot(st), "status": status(st.position)} for st in stages],
        "pending_change_requests": list(state.change_requests.filter(status=ChangeRequestStatus.PENDING)
                                        .order_by("pk").values_list("pk", flat=True)),
        "open_reviews": list(ReviewItem.objects.filter(flag_state=state, acknowledged_at__isnull=True)
                             .order_by("pk").values_list("pk", flat=True)),
    }


def verdict(state: FlagState, health_status: str, breaches: list[str], plan: PlanStatus) -> tuple[Verdict, list[str]]:
    if health_status == "breached":
        return "failing", [f"guardrail breached: {b}" for b in breaches]
    reasons: list[str] = []
    if not plan["stages"]:
        reasons.append("no rollout plan")
    elif plan["next_stage"] is None:
        reasons.append("at the last stage of the plan")
    if state.stage == 0 and plan["stages"]:
        reasons.append("the plan has not started")
    elif state.stage > 0 and not state.enabled:
        reasons.append("killed")
    if state.paused_at is not None:
        reasons.append(f"paused ({state.paused_reason})" if state.paused_reason else "paused")
    if health_status == "unguarded":
        reasons.append("no guardrails configured")
    elif health_status == "insufficient_data":
        reasons.append("not enough traffic yet to judge the guardrails")
    if plan["soak_seconds_left"]:
        reasons.append(f"soak time left: {plan['soak_seconds_left']} s")
    return ("not_yet", reasons) if reasons else ("ready", ["healthy, soaked and ready to advance"])


def readiness(state: FlagState, *, now: datetime | None = None, window_seconds: int | None = None) -> ReadinessReport:
    """Legacy vs parallel side by side over a window, the guardrails' status, soak left, a verdict."""
    now = now or clock.now()
    guardrail = Guardrail.objects.filter(flag_state=state).first()
    seconds = min(max(int(window_seconds or (guardrail.window_seconds if guardrail else DEFAULT_WINDOW_SECONDS)),
                      60), MAX_WINDOW_SECONDS)
    start = metrics_read.minute_floor(now - timedelta(seconds=seconds))
    end = metrics_read.minute_floor(now) + timedelta(minutes=1)
    stats = metrics_read.window_stats(state, start=start, end=end)
    health = evaluate_state(state, now=now)
    plan = plan_status(state, now=now)
    verdict_name, reasons = verdict(state, health.status, health.breaches, plan)
    samples = list(MismatchSample.objects.filter(environment_id=state.environment_id, flag_key=state.flag.key,
                                                 minute__gte=start).order_by("-pk")
                   .only("at", "version", "served", "legacy", "parallel", "truncated")[:RECENT_SAMPLES])
    # User feedback (rollout/feedback): shown per path; its optional rule has a say in the verdict.
    feedback = feedback_report(state, now=now)
    verdict_name, reasons = _with_feedback(verdict_name, reasons, feedback["rule"])
    return {
        "flag": state.flag.key,
        "environment": state.environment.key,
        "generated_at": now.isoformat(),
        "window": {"start": start.isoformat(), "end": min(end, now).isoformat(), "seconds": seconds},
        "legacy": stats["legacy"].as_dict(),
        "parallel": stats["parallel"].as_dict(),
        "series": metrics_read.series(state, start=start, end=end),
        "guardrails": {
            "config": guardrail_snapshot(guardrail),
            "status": health.status,
            "judged": health.figures(),
            "breaches": health.breaches,
            "last_check": last_check(state.pk),
        },
        "plan": plan,
        "soak_seconds_left": plan["soak_seconds_left"],
        "mismatches": {**mismatch_summary(state), "recent_samples": [
            {"at": s.at.isoformat(), "version": s.version, "served": s.served, "legacy": s.legacy,
             "parallel": s.parallel, "truncated": s.truncated} for s in samples]},
        "feedback": feedback,
        "verdict": verdict_name,
        "reasons": reasons,
        "migration": migration_readiness(state, start=start, end=end),
    }


def readiness_at_advance(state: FlagState, *, now: datetime, health: Health | None = None) -> ReadinessAtAdvance:
    """The readiness report as it stands just before an advance, compact enough for the audit event:
    the verdict and its reasons, the guardrails' judgement with its figures, soak left, mismatch kinds."""
    health = health if health is not None else evaluate_state(state, now=now)
    plan = plan_status(state, now=now)
    verdict_name, reasons = verdict(state, health.status, health.breaches, plan)
    mismatches = mismatch_summary(state)
    feedback_rule = feedback_rule_status(state, now=now)
    if feedback_rule is not None:
        verdict_name, reasons = _with_feedback(verdict_name, reasons, feedback_rule)
    compact: ReadinessAtAdvance = {
        "generated_at": now.isoformat(),
        "verdict": verdict_name,
        "reasons": reasons,
        "guardrails": {"status": health.status, "breaches": health.breaches, "judged": health.figures()},
        "soak_seconds_left": plan["soak_seconds_left"],
        "mismatches": {"kinds": mismatches["kinds"], "samples": mismatches["samples"],
                       "known_samples": mismatches["known_samples"]},
    }
    if feedback_rule is not None:
        compact["feedback"] = feedback_rule
    return compact


def _with_feedback(verdict_name: Verdict, reasons: list[str], rule: FeedbackRuleStatus) -> tuple[Verdict, list[str]]:
    """The verdict with the feedback rule's say (``rollout.feedback.reads.feedback_verdict``)."""
    name, out = feedback_verdict(verdict_name, reasons, rule)
    return ("failing" if name == "failing" else "not_yet" if name == "not_yet" else "ready"), out

