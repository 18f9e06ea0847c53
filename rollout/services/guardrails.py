"""Guardrails: health limits on the parallel path, checked by Celery beat; a breach acts at once.

What a check judges (docs/rollouts.md, "Guardrails"):

* the window is the last ``window_seconds``, but only whole minutes that began after the current
  stage did — a stage is never judged on the traffic of the one before it (so one breach cannot
  roll back two stages);
* the error checks and the latency ratio need parallel calls, the mismatch check comparisons;
  a check without data is not judged; the whole verdict needs ``min_sample_size`` parallel calls
  or comparisons (whichever is larger) to be ``healthy``;
* mismatches in groups marked as known differences do not count (their share of the window's
  samples is taken off the mismatch count);
* on a breach the configured action runs as ``system:guardrail`` — ``pause`` (split unchanged),
  ``rollback`` (one stage back, then paused; a rollout without a started plan is killed instead)
  or ``kill`` — with the figures in the audit event, and the webhooks are notified.

A healthy ``auto`` stage whose soak time has passed advances as ``system:auto-advance``; a due
scheduled stage starts as ``system:schedule`` when healthy. Irreversible workloads never advance
on their own; paused or killed rollouts neither.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db import transaction

from audit.models import AuditEvent
from audit.names import Action
from audit.services import audited_atomic
from common import clock
from common.actors import Actor
from common.errors import ValidationFailed
from common.metrics import record_guardrail_action
from common.redis import degrade
from common.services import check_version, full_clean, percentage
from rollout import metrics_read
from rollout.metrics_read import PathStats
from rollout.models import BreachAction, FlagState, Gate, Guardrail, Reversibility
from rollout.policy import Approval, require_approval_if_needed
from rollout.services.flags import get_state_for_update, kill_state, write_state
from rollout.snapshots import flag_state_snapshot, guardrail_snapshot

logger = logging.getLogger("turnout.guardrails")

LIMIT_FIELDS = frozenset({"max_error_rate", "max_error_rate_increase", "max_latency_p95_ratio", "max_mismatch_rate",
                          "min_sample_size", "window_seconds", "action"})
LAST_CHECK_KEY = "guardrail:last:{}"


@dataclass(frozen=True)
class Check:
    name: str
    limit: float
    value: float | None
    ok: bool | None  # None: not judged (no data)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "limit": self.limit, "value": self.value, "ok": self.ok}

    def describe(self) -> str:
        unit = "" if self.name == "latency_p95_ratio" else "%"
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

    def figures(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "window": {"start": self.window_start.isoformat() if self.window_start else None,
                       "end": self.window_end.isoformat() if self.window_end else None},
            "legacy": self.legacy.as_dict(), "parallel": self.parallel.as_dict(),
            "mismatch_rate_excluding_known": self.mismatch_rate, "known_share": self.known_share,
            "sample_size": self.sample_size, "min_sample_size": self.min_sample_size,
            "checks": [c.as_dict() for c in self.checks],
        }


def _f(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


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
    sample = max(parallel.calls, comparisons)
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
    from rollout.services.mismatches import known_share

    health = judge(guardrail, stats["legacy"], stats["parallel"],
                   known_share=known_share(state, start=start, end=end))
    health.window_start, health.window_end = start, min(end, now)
    return health


# --- configuration -------------------------------------------------------------------------------

def _limit(value: Any, field: str) -> Decimal | None:
    return None if value is None else percentage(value, field=field)


def set_guardrail_state(state: FlagState, *, actor: Actor, version: int | None, reason: str = "",
                        approval: Approval | None = None, **limits: Any) -> AuditEvent:
    check_version(state, version, what=f"flag state '{state.flag.key}@{state.environment.key}'")
    require_approval_if_needed(state, Action.FLAG_STATE_GUARDRAILS_SET, actor=actor, approval=approval)
    unknown = sorted(set(limits) - LIMIT_FIELDS)
    if unknown:
        raise ValidationFailed.field(unknown[0], "is not a guardrail setting")
    guardrail = Guardrail.objects.filter(flag_state=state).first()
    before_g = guardrail_snapshot(guardrail)
    guardrail = guardrail or Guardrail(flag_state=state)
    for name in ("max_error_rate", "max_error_rate_increase", "max_mismatch_rate"):
        if name in limits:
            setattr(guardrail, name, _limit(limits[name], name))
    if "max_latency_p95_ratio" in limits:
        raw = limits["max_latency_p95_ratio"]
        if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int | float | str)):
            raise ValidationFailed.field("max_latency_p95_ratio", "must be a number of at least 1, or null")
        try:
            guardrail.max_latency_p95_ratio = None if raw is None else Decimal(str(raw)).quantize(Decimal("0.001"))
        except ArithmeticError:
            raise ValidationFailed.field("max_latency_p95_ratio", "must be a number of at least 1, or null") from None
    for name in ("min_sample_size", "window_seconds"):
        if name in limits:
            value = limits[name]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValidationFailed.field(name, "must be a whole number")
            setattr(guardrail, name, value)
    if "action" in limits:
        if limits["action"] not in BreachAction.values:
            raise ValidationFailed.field("action", "must be 'pause', 'rollback' or 'kill'")
        guardrail.action = limits["action"]
    full_clean(guardrail, exclude=["flag_state"])
    guardrail.save()
    after_g = guardrail_snapshot(guardrail)
    before = {**flag_state_snapshot(state), "guardrail": before_g}
    extra: dict[str, Any] = {"guardrail": after_g}
    if approval:
        extra["approval"] = approval.as_audit()
    return write_state(state, actor=actor, action="flag_state.guardrails_set", before=before, reason=reason,
                       extra=extra, ruleset=False)


def guardrail_set(*, actor: Actor, flag: str, environment: str, version: int | None, reason: str = "",
                  approval: Approval | None = None, **limits: Any) -> Guardrail:
    """Create or change the guardrails of a flag state (unset limits are not checked)."""
    with audited_atomic():
        state = get_state_for_update(flag, environment)
        set_guardrail_state(state, actor=actor, version=version, reason=reason, approval=approval, **limits)
        return Guardrail.objects.get(flag_state=state)


# --- the periodic check ----------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckOutcome:
    status: str
    acted: str | None = None  # paused | rolled_back | killed | advanced | started
    audit_sequence: int | None = None


def _soaked(state: FlagState, soak_seconds: int, now: datetime) -> bool:
    return state.stage_started_at is not None and now - state.stage_started_at >= timedelta(seconds=soak_seconds)


def _notify(kind: str, state: FlagState, event: AuditEvent, payload: dict[str, Any]) -> None:
    from rollout.services.webhooks import notify

    body = {"event": kind, "flag": state.flag.key, "environment": state.environment.key,
            "workload": state.flag.workload.key, "audit_sequence": event.sequence,
            "occurred_at": event.occurred_at.isoformat(), "actor": event.actor, **payload}
    transaction.on_commit(lambda: notify(body))


def _remember(state: FlagState, health: Health, now: datetime) -> None:
    # Redis away never stops a check from acting on a breach: the figures are only not kept.
    degrade(lambda: cache.set(LAST_CHECK_KEY.format(state.pk), {"checked_at": now.isoformat(), **health.figures()},
                              timeout=3600), None, what="guardrail_check")


def last_check(flag_state_id: int) -> dict[str, Any] | None:
    """The last check's figures, or None (none yet, or the cache away: shown as "not checked yet")."""
    return degrade(lambda: cache.get(LAST_CHECK_KEY.format(flag_state_id)), None,  # type: ignore[no-any-return]
                   what="guardrail_check")


def _breach_action(state: FlagState, guardrail: Guardrail, health: Health, now: datetime) -> CheckOutcome:
    from rollout.services.stages import pause_state, rollback_state

    actor = Actor.system("guardrail")
    breaches = health.breaches
    reason = "guardrail breach: " + "; ".join(breaches)
    extra = {"guardrail": {"action": guardrail.action, "breaches": breaches, "figures": health.figures()}}
    action = guardrail.action
    if action == BreachAction.ROLLBACK and state.stage == 0:
        action = BreachAction.KILL  # nothing to roll back to: everyone to legacy
    if action == BreachAction.PAUSE:
        if state.paused_at is not None:
            return CheckOutcome(health.status)
        event, acted = pause_state(state, actor=actor, reason=reason, now=now, extra=extra), "paused"
    elif action == BreachAction.ROLLBACK:
        event, acted = rollback_state(state, actor=actor, reason=reason, now=now, extra=extra), "rolled_back"
    else:
        event, acted = kill_state(state, actor=actor, reason=reason, extra=extra), "killed"
    logger.warning("guardrail.breached", extra={"flag_state": state.pk, "action": acted, "sequence": event.sequence})
    env_key = state.environment.key
    transaction.on_commit(lambda: record_guardrail_action(environment=env_key, action=acted))
    _notify("guardrail.breached", state, event, {"action": acted, "breaches": breaches, "figures": health.figures(),
                                                 "stage": event.after.get("stage") if event.after else None})
    return CheckOutcome(health.status, acted, event.sequence)


def guardrail_check(*, flag_state_id: int, now: datetime | None = None) -> CheckOutcome:
    """Judge one rollout; on a breach act at once; a soaked, healthy auto stage advances."""
    now = now or clock.now()
    with audited_atomic():
        state = (FlagState.objects.select_for_update(of=("self",)).select_related("flag__workload", "environment")
                 .filter(pk=flag_state_id).first())
        if state is None:
            return CheckOutcome("inactive")
        health = evaluate_state(state, now=now)
        _remember(state, health, now)
        if health.status == "breached":
            return _breach_action(state, state.guardrail, health, now)
        if health.status != "healthy" or state.paused_at is not None or state.stage == 0:
            return CheckOutcome(health.status)
        if state.flag.workload.reversibility == Reversibility.IRREVERSIBLE:
            return CheckOutcome(health.status)
        current = state.stages.filter(position=state.stage).first()
        has_next = state.stages.filter(position=state.stage + 1).exists()
        if current is None or not has_next or current.gate != Gate.AUTO or not _soaked(state, current.min_soak_seconds,
                                                                                      now):
            return CheckOutcome(health.status)
        from rollout.services.stages import advance_state

        event = advance_state(state, actor=Actor.system("auto-advance"), now=now,
                              reason=f"soaked {current.min_soak_seconds}s with every guardrail healthy",
                              extra={"guardrail": {"figures": health.figures()}})
        _notify("rollout.auto_advanced", state, event, {"stage": state.stage})
        return CheckOutcome(health.status, "advanced", event.sequence)


def scheduled_start(*, flag_state_id: int, now: datetime | None = None) -> CheckOutcome:
    """Start the next stage when its scheduled time has come, if the rollout is healthy and soaked."""
    now = now or clock.now()
    with audited_atomic():
        state = (FlagState.objects.select_for_update(of=("self",)).select_related("flag__workload", "environment")
                 .filter(pk=flag_state_id).first())
        if state is None or state.paused_at is not None or state.retired:
            return CheckOutcome("inactive")
        nxt = state.stages.filter(position=state.stage + 1).first()
        if nxt is None or nxt.scheduled_at is None or nxt.scheduled_at > now:
            return CheckOutcome("not_due")
        if state.flag.workload.reversibility == Reversibility.IRREVERSIBLE:
            return CheckOutcome("needs_approval")
        if state.stage > 0:
            if not state.enabled:
                return CheckOutcome("inactive")
            current = state.stages.get(position=state.stage)
            health = evaluate_state(state, now=now)
            if health.status != "healthy" or not _soaked(state, current.min_soak_seconds, now):
                return CheckOutcome(health.status)
        from rollout.services.stages import advance_state

        event = advance_state(state, actor=Actor.system("schedule"), now=now,
                              reason=f"scheduled for {nxt.scheduled_at.isoformat()}")
        _notify("rollout.scheduled_start", state, event, {"stage": state.stage})
        return CheckOutcome("healthy", "started", event.sequence)


def active_rollout_ids() -> list[int]:
    """Flag states a guardrail check looks at: enabled, not retired, with guardrails."""
    return list(FlagState.objects.filter(enabled=True, retired=False, guardrail__isnull=False)
                .order_by("pk").values_list("pk", flat=True))


def scheduled_rollout_ids(*, now: datetime | None = None) -> list[int]:
    now = now or clock.now()
    from django.db.models import F

    return list(FlagState.objects.filter(stages__scheduled_at__lte=now, stages__position=F("stage") + 1,
                                         paused_at__isnull=True, retired=False)
                .order_by("pk").values_list("pk", flat=True).distinct())

