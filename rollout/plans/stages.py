"""Rollout plans and the actions that move a flag state through them.

A plan is an ordered list of stages; ``FlagState.stage`` is the position in force (0: none yet).
Applying a stage sets the state's percentage, compare percentage and included cohorts (exclusions
and overrides stay as they are) and restarts its soak clock.

* ``advance`` applies the next stage (the first one starts the plan). A person may advance before
  the soak time has passed — readiness shows it — but never while a guardrail is breached unless
  ``force`` with a reason; the system auto-advances only when the soak has passed and every
  guardrail is healthy (``rollout/plans/guardrails.py``).
* ``rollback`` applies the previous stage (from the first one: everything off) and pauses the
  rollout, so nothing advances again until a person resumes it. It never waits for approval.
* ``pause`` holds the rollout where it is: the split does not change (no ruleset change), it does
  not auto-advance and scheduled stages do not start. ``resume`` (``flags.flag_state_resume``)
  lifts a pause or a kill and restarts the stage's soak clock.
* ``kill`` / ``retire``: ``flags.flag_state_kill`` / ``flags.flag_state_retire``.

Every entry point is one durable transaction with one audit event; the ``*_state`` functions
do the same work inside a caller's transaction (change request approval, guardrails, scheduler).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils.dateparse import parse_datetime

from audit.models import AuditEvent
from audit.names import Action
from audit.services import audited_atomic
from common import clock
from common.actors import Actor
from common.errors import Conflict, ValidationFailed
from common.services import check_version, percentage
from rollout.models import FlagState, Gate, Reversibility, RolloutStage
from rollout.plans.health import evaluate_state
from rollout.plans.readiness import readiness_at_advance
from rollout.policy import Approval, enforce, require_approval_if_needed, state_effect
from rollout.services.flags import _cohorts, get_state_for_update, write_state, write_state_break_glass
from rollout.snapshots import flag_state_snapshot, plan_snapshot

MAX_STAGES = 20
MAX_SOAK_SECONDS = 90 * 86_400
STAGE_FIELDS = {"name", "percentage", "compare_percentage", "include_cohorts", "min_soak_seconds", "gate",
                "scheduled_at", "retires_legacy"}


# --- templates ---------------------------------------------------------------------------------

def plan_template(name: str = "standard", *, internal_cohorts: Sequence[str] = (),
                  pilot_cohorts: Sequence[str] = (), soak_seconds: int | None = None) -> list[dict[str, Any]]:
    """The stages of a named template, ready for ``plan_set``.

    ``standard``: validate → internal → pilot → 5% → 25% → 50% → 100% → retire legacy.
    ``soak_seconds`` replaces every stage's soak time (short soaks for demos and tests).
    """
    cohorts = [*internal_cohorts, *[c for c in pilot_cohorts if c not in internal_cohorts]]
    hour = 3600
    rows: list[tuple[str, float, float, list[str], int, str]] = [
        # name, percentage, compare, cohorts, soak, gate
        ("validate", 0, 10, [], 24 * hour, Gate.MANUAL),
        ("internal", 0, 10, list(internal_cohorts), 24 * hour, Gate.AUTO),
        ("pilot", 0, 10, cohorts, 48 * hour, Gate.MANUAL),
        ("5%", 5, 5, cohorts, 24 * hour, Gate.AUTO),
        ("25%", 25, 5, cohorts, 24 * hour, Gate.AUTO),
        ("50%", 50, 2, cohorts, 48 * hour, Gate.MANUAL),
        ("100%", 100, 1, cohorts, 7 * 24 * hour, Gate.MANUAL),
        ("retire legacy", 100, 0, cohorts, 0, Gate.MANUAL),
    ]
    if name != "standard":
        raise ValidationFailed.field("template", f"unknown template '{name}'; known: standard")
    return [
        {"name": n, "percentage": p, "compare_percentage": c, "include_cohorts": co,
         "min_soak_seconds": soak if soak_seconds is None else soak_seconds, "gate": str(g),
         "scheduled_at": None, "retires_legacy": n == "retire legacy"}
        for n, p, c, co, soak, g in rows
    ]


# --- validation ---------------------------------------------------------------------------------

def stage_rows(stages: Any) -> list[tuple[RolloutStage, list[Any]]]:
    if isinstance(stages, str | bytes | Mapping) or not isinstance(stages, Sequence):
        raise ValidationFailed.field("stages", "must be a list of stages")
    if not 1 <= len(stages) <= MAX_STAGES:
        raise ValidationFailed.field("stages", f"a plan has 1 to {MAX_STAGES} stages")
    rows: list[tuple[RolloutStage, list[Any]]] = []
    names: set[str] = set()
    previous = Decimal(0)
    for index, raw in enumerate(stages):
        where = f"stages[{index}]"
        if not isinstance(raw, Mapping):
            raise ValidationFailed.field(where, "must be an object")
        unknown = sorted(set(raw) - STAGE_FIELDS)
        if unknown:
            raise ValidationFailed.field(f"{where}.{unknown[0]}", "is not a stage field")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise ValidationFailed.field(f"{where}.name", "is required, at most 100 characters")
        if name.strip() in names:
            raise ValidationFailed.field(f"{where}.name", f"'{name}' is used by another stage")
        names.add(name.strip())
        pct = percentage(raw.get("percentage", 0), field=f"{where}.percentage")
        if pct < previous:
            raise ValidationFailed.field(f"{where}.percentage",
                                         "cannot be lower than the stage before (roll back instead)")
        previous = pct
        compare = percentage(raw.get("compare_percentage", 0), field=f"{where}.compare_percentage")
        soak = raw.get("min_soak_seconds", 0)
        if isinstance(soak, bool) or not isinstance(soak, int) or not 0 <= soak <= MAX_SOAK_SECONDS:
            raise ValidationFailed.field(f"{where}.min_soak_seconds", f"must be a whole number 0-{MAX_SOAK_SECONDS}")
        gate = raw.get("gate", Gate.MANUAL)
        if gate not in Gate.values:
            raise ValidationFailed.field(f"{where}.gate", "must be 'manual' or 'auto'")
        scheduled = raw.get("scheduled_at")
        scheduled_at: datetime | None = None
        if scheduled is not None:
            scheduled_at = parse_datetime(scheduled) if isinstance(scheduled, str) else None
            if scheduled_at is None or scheduled_at.tzinfo is None:
                raise ValidationFailed.field(f"{where}.scheduled_at", "must be an ISO-8601 time with a timezone")
        retires = raw.get("retires_legacy", False)
        if not isinstance(retires, bool):
            raise ValidationFailed.field(f"{where}.retires_legacy", "must be true or false")
        if retires and (index != len(stages) - 1 or pct != 100):
            raise ValidationFailed.field(f"{where}.retires_legacy", "only the last stage, at 100%, retires legacy")
        cohorts = _cohorts(raw.get("include_cohorts", []), field=f"{where}.include_cohorts")
        stage = RolloutStage(position=index + 1, name=name.strip(), percentage=pct,
                             compare_percentage=Decimal(0) if retires else compare, min_soak_seconds=soak,
                             gate=gate, scheduled_at=scheduled_at, retires_legacy=retires)
        rows.append((stage, cohorts))
    return rows


# --- plan ---------------------------------------------------------------------------------------

def set_plan_state(state: FlagState, *, actor: Actor, stages: Any, version: int | None, reason: str = "",
                   approval: Approval | None = None) -> AuditEvent:
    check_version(state, version, what=f"flag state '{state.flag.key}@{state.environment.key}'")
    require_approval_if_needed(state, Action.FLAG_STATE_PLAN_SET, actor=actor, approval=approval)
    if state.stage > 0:
        raise Conflict(f"the plan of '{state.flag.key}' in {state.environment.key} has started (stage "
                       f"{state.stage}); roll it back to the start to edit it", current_version=state.version)
    before_plan = plan_snapshot(state)
    rows = stage_rows(stages)
    before = {**flag_state_snapshot(state), "plan": before_plan}
    state.stages.all().delete()
    for stage, cohorts in rows:
        stage.flag_state = state
        stage.save(force_insert=True)
        stage.include_cohorts.set(cohorts)
    extra: dict[str, Any] = {"plan": plan_snapshot(state)}
    if approval:
        extra["approval"] = approval.as_audit()
    return write_state(state, actor=actor, action=Action.FLAG_STATE_PLAN_SET, before=before, reason=reason, extra=extra,
                       ruleset=False)


def plan_set(*, actor: Actor, flag: str, environment: str, version: int | None, stages: Any, reason: str = "",
             approval: Approval | None = None) -> FlagState:
    """Replace the rollout plan of a flag state that has not started (``stage == 0``)."""
    with audited_atomic():
        state = get_state_for_update(flag, environment)
        set_plan_state(state, actor=actor, stages=stages, version=version, reason=reason, approval=approval)
        return state


# --- applying stages ----------------------------------------------------------------------------

def _plan(state: FlagState) -> list[RolloutStage]:
    return list(state.stages.prefetch_related("include_cohorts").order_by("position"))


def _apply(state: FlagState, stage: RolloutStage | None, *, now: datetime, enable: bool) -> None:
    if stage is None:
        state.enabled = False
        state.retired = False
        state.percentage = Decimal(0)
        state.compare_percentage = Decimal(0)
        state.include_cohorts.clear()
        state.stage = 0
        state.stage_started_at = None
        return
    state.enabled = enable
    state.retired = stage.retires_legacy
    state.percentage = stage.percentage
    state.compare_percentage = stage.compare_percentage
    state.include_cohorts.set(list(stage.include_cohorts.all()))
    state.stage = stage.position
    state.stage_started_at = now


def _stage_ref(stage: RolloutStage | None) -> dict[str, Any] | None:
    return None if stage is None else {"position": stage.position, "name": stage.name}


def parallel_primary(*, percentage_value: Decimal, retired: bool) -> bool:
    """Most subjects are on the parallel path: its writes are the ones that count."""
    return retired or percentage_value > 50


def advance_state(state: FlagState, *, actor: Actor, version: int | None = None, reason: str = "",
                  approval: Approval | None = None, now: datetime | None = None,
                  extra: Mapping[str, Any] | None = None, force: bool = False, resume: bool = False) -> AuditEvent:
    """Apply the next stage, inside the caller's transaction. ``resume`` lifts a pause first, in the same
    change (undoing a rollback: the stage it left comes back and the rollout runs again)."""
    now = now or clock.now()
    check_version(state, version, what=f"flag state '{state.flag.key}@{state.environment.key}'")
    require_approval_if_needed(state, Action.FLAG_STATE_ADVANCED, actor=actor, approval=approval)
    plan = _plan(state)
    where = f"'{state.flag.key}' in {state.environment.key}"
    if not plan:
        raise Conflict(f"{where} has no rollout plan", current_version=state.version)
    if state.stage >= len(plan):
        raise Conflict(f"{where} is at the last stage of its plan", current_version=state.version)
    if state.stage > 0 and not state.enabled:
        raise Conflict(f"{where} is killed; resume it before advancing", current_version=state.version)
    if state.paused_at is not None and not resume:
        raise Conflict(f"{where} is paused; resume it before advancing", current_version=state.version)
    health = evaluate_state(state, now=now)
    readiness = readiness_at_advance(state, now=now, health=health)
    if actor.type != "system" and health.status == "breached":
        if not force:
            raise Conflict(f"{where} breaches its guardrails ({'; '.join(health.breaches)}); "
                           "pass force with a reason to advance anyway", current_version=state.version)
        if not reason.strip():
            raise ValidationFailed.field("reason", "forcing an advance past a breached guardrail needs a reason")
    current = plan[state.stage - 1] if state.stage else None
    target = plan[state.stage]
    before = flag_state_snapshot(state)
    _apply(state, target, now=now, enable=True)
    marks: dict[str, Any] = {"from_stage": _stage_ref(current), "to_stage": _stage_ref(target),
                             "readiness": readiness, **(extra or {})}
    if resume and state.paused_at is not None:
        marks["resumed_from_pause"] = state.paused_reason or True
        state.paused_at = None
        state.paused_reason = ""
    if force:
        marks["forced"] = True
    if approval:
        marks["approval"] = approval.as_audit()
    action = Action.FLAG_STATE_RETIRED if target.retires_legacy else "flag_state.advanced"
    return write_state(state, actor=actor, action=action, before=before, reason=reason, extra=marks)


def rollout_advance(*, actor: Actor, flag: str, environment: str, version: int | None = None, reason: str = "",
                    approval: Approval | None = None, force: bool = False, now: datetime | None = None,
                    resume: bool = False) -> FlagState:
    """Move to the next stage of the plan (the first call starts it); ``resume`` also lifts a pause."""
    with audited_atomic():
        state = get_state_for_update(flag, environment)
        advance_state(state, actor=actor, version=version, reason=reason, approval=approval, force=force, now=now,
                      resume=resume)
        return state


def rollback_state(state: FlagState, *, actor: Actor, reason: str = "", now: datetime | None = None,
                   extra: Mapping[str, Any] | None = None, version: int | None = None) -> AuditEvent:
    """Apply the previous stage and pause, inside the caller's transaction. Never waits for approval,
    but names the version it read: two operators (or an operator and a guardrail) rolling back at
    once go back one stage, not two."""
    now = now or clock.now()
    where = f"'{state.flag.key}' in {state.environment.key}"
    check_version(state, version, what=f"flag state '{state.flag.key}@{state.environment.key}'")
    if state.stage == 0:
        raise Conflict(f"{where} has no stage to roll back from", current_version=state.version)
    plan = _plan(state)
    current = plan[state.stage - 1] if state.stage <= len(plan) else None
    target = plan[state.stage - 2] if state.stage >= 2 else None
    marks: dict[str, Any] = {"from_stage": _stage_ref(current), "to_stage": _stage_ref(target), **(extra or {})}
    was_primary = parallel_primary(percentage_value=state.percentage, retired=state.retired)
    stays_primary = target is not None and parallel_primary(percentage_value=target.percentage,
                                                            retired=target.retires_legacy)
    if state.flag.workload.reversibility == Reversibility.DUAL_WRITE and was_primary and not stays_primary:
        if not reason.strip():
            raise ValidationFailed.field(
                "reason", "the parallel path has been primary for this dual-write workload: data it wrote must "
                          "also reach legacy before legacy is primary again. Give a reason to roll back anyway")
        marks["dual_write_warning"] = True
    before = flag_state_snapshot(state)
    _apply(state, target, now=now, enable=state.enabled)
    state.paused_at = now
    state.paused_reason = f"rolled back: {reason}" if reason else "rolled back"
    return write_state_break_glass(state, actor=actor, action=Action.FLAG_STATE_ROLLED_BACK, kind="rollback",
                                   before=before, reason=reason, extra=marks)


def rollout_rollback(*, actor: Actor, flag: str, environment: str, reason: str = "",
                     now: datetime | None = None, version: int | None = None) -> FlagState:
    """Back to the previous stage, at once; the rollout stays paused until resumed."""
    with audited_atomic():
        state = get_state_for_update(flag, environment)
        enforce(actor, Action.FLAG_STATE_ROLLED_BACK, state_effect(state, Action.FLAG_STATE_ROLLED_BACK))
        rollback_state(state, actor=actor, reason=reason, now=now, version=version)
        return state


def pause_state(state: FlagState, *, actor: Actor, reason: str = "", now: datetime | None = None,
                extra: Mapping[str, Any] | None = None, version: int | None = None) -> AuditEvent:
    check_version(state, version, what=f"flag state '{state.flag.key}@{state.environment.key}'")
    if state.paused_at is not None:
        raise Conflict(f"'{state.flag.key}' in {state.environment.key} is already paused",
                       current_version=state.version)
    before = flag_state_snapshot(state)
    state.paused_at = now or clock.now()
    state.paused_reason = reason
    return write_state(state, actor=actor, action=Action.FLAG_STATE_PAUSED, before=before, reason=reason, extra=extra,
                       ruleset=False)


def rollout_pause(*, actor: Actor, flag: str, environment: str, reason: str = "",
                  now: datetime | None = None, version: int | None = None) -> FlagState:
    """Hold the rollout where it is: no auto-advance, no scheduled start; the split is unchanged."""
    with audited_atomic():
        state = get_state_for_update(flag, environment)
        enforce(actor, Action.FLAG_STATE_PAUSED, state_effect(state, Action.FLAG_STATE_PAUSED))
        pause_state(state, actor=actor, reason=reason, now=now, version=version)
        return state
