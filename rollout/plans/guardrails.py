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
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction

from audit.models import AuditEvent
from audit.names import Action
from audit.services import audited_atomic
from common import clock
from common.actors import Actor
from common.errors import ValidationFailed
from common.metrics import record_guardrail_action
from common.services import check_version, full_clean, percentage
from rollout.feedback.reads import feedback_holds
from rollout.models import BreachAction, FlagState, Gate, Guardrail, Reversibility
from rollout.plans.health import Health, evaluate_state
from rollout.plans.stages import advance_state, pause_state, rollback_state
from rollout.policy import Approval, require_approval_if_needed
from rollout.services.flags import get_state_for_update, kill_state, write_state
from rollout.services.webhooks import notify
from rollout.snapshots import flag_state_snapshot, guardrail_snapshot

logger = logging.getLogger("turnout.guardrails")

LIMIT_FIELDS = frozenset({"max_error_rate", "max_error_rate_increase", "max_latency_p95_ratio", "max_mismatch_rate",
                          "min_sample_size", "window_seconds", "action"})


def _f(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


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
    return write_state(state, actor=actor, action=Action.FLAG_STATE_GUARDRAILS_SET, before=before, reason=reason,
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
    body = {"event": kind, "flag": state.flag.key, "environment": state.environment.key,
            "workload": state.flag.workload.key, "audit_sequence": event.sequence,
            "occurred_at": event.occurred_at.isoformat(), "actor": event.actor, **payload}
    transaction.on_commit(lambda: notify(body))


def _remember(state: FlagState, health: Health, now: datetime) -> None:
    # In the database, inside the check's transaction: every process (and the UI's poll) sees it, Redis or not.
    Guardrail.objects.filter(flag_state_id=state.pk).update(
        last_check={"checked_at": now.isoformat(), **health.figures()})


def _breach_action(state: FlagState, guardrail: Guardrail, health: Health, now: datetime) -> CheckOutcome:
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
        if feedback_holds(state, now=now):  # the user-feedback rule fails or lacks responses: a person decides
            return CheckOutcome(health.status)
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
            if feedback_holds(state, now=now):  # as for an automatic advance
                return CheckOutcome(health.status)
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

