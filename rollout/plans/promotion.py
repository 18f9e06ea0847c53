"""Promotion: a flag's rollout as built in one environment, copied to the next as one reviewable change.

``promotion_of(flag, source)`` reads what is promoted — the plan's stages, the guardrails and the targeting
(included and excluded cohorts, overrides) — and the action ``flag_state.promoted`` on the destination flag
state carries exactly that copy in its parameters, so a change request shows (and, approved, applies) what
the source held when it was asked for, not what it holds by then. The percentage reached, the stage, the
comparison share and whether the flag is on are *not* promoted: the destination starts its own rollout.
Applied in the action's transaction, with one audit event naming the source.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from audit.models import AuditEvent
from audit.names import Action
from common.actors import Actor
from common.errors import Conflict, ValidationFailed
from common.services import check_version, full_clean
from rollout.models import BreachAction, FlagState, Guardrail
from rollout.plans.stages import stage_rows
from rollout.policy import Approval, require_approval_if_needed
from rollout.selectors import flag_state_get
from rollout.services.flags import _cohorts, validate_overrides, write_state
from rollout.snapshots import flag_state_snapshot, guardrail_snapshot, plan_snapshot

PARAMS = frozenset({"source", "plan", "guardrails", "include_cohorts", "exclude_cohorts", "overrides"})


def promotion_of(flag: str, source: str) -> dict[str, Any]:
    """What promoting ``flag`` from ``source`` copies (the action's parameters)."""
    state = flag_state_get(flag, source)
    plan = [{k: v for k, v in stage.items() if k != "position"} for stage in plan_snapshot(state)]
    snap = flag_state_snapshot(state)
    guardrail = guardrail_snapshot(Guardrail.objects.filter(flag_state=state).first())
    return {"source": source, "plan": plan, "guardrails": dict(guardrail) if guardrail else None,
            "include_cohorts": snap["include_cohorts"], "exclude_cohorts": snap["exclude_cohorts"],
            "overrides": snap["overrides"]}


def _guardrail(state: FlagState, limits: Mapping[str, Any] | None) -> Any:
    current = Guardrail.objects.filter(flag_state=state).first()
    if limits is None:
        if current is not None:
            current.delete()  # the source has none: neither has the destination after the copy
        return None
    if not isinstance(limits, Mapping):
        raise ValidationFailed.field("guardrails", "must be an object or null")
    guardrail = current or Guardrail(flag_state=state)
    for name in ("max_error_rate", "max_error_rate_increase", "max_mismatch_rate", "max_latency_p95_ratio"):
        value = limits.get(name)
        setattr(guardrail, name, None if value is None else Decimal(str(value)))
    guardrail.min_sample_size = limits.get("min_sample_size", 100)
    guardrail.window_seconds = limits.get("window_seconds", 300)
    if limits.get("action", BreachAction.ROLLBACK) not in BreachAction.values:
        raise ValidationFailed.field("guardrails.action", "must be 'pause', 'rollback' or 'kill'")
    guardrail.action = limits.get("action", BreachAction.ROLLBACK)
    full_clean(guardrail, exclude=["flag_state"])
    guardrail.save()
    return guardrail


def promote_state(state: FlagState, *, actor: Actor, version: int | None, reason: str = "",
                  approval: Approval | None = None, source: str = "", plan: Any = None, guardrails: Any = None,
                  include_cohorts: Any = (), exclude_cohorts: Any = (), overrides: Any = None) -> AuditEvent:
    """Inside the caller's transaction: the copy written on the destination, one event."""
    where = f"{state.flag.key}@{state.environment.key}"
    check_version(state, version, what=f"flag state '{where}'")
    require_approval_if_needed(state, Action.FLAG_STATE_PROMOTED, actor=actor, approval=approval)
    if not isinstance(source, str) or not source or source == state.environment.key:
        raise ValidationFailed.field("source", "name the environment promoted from (not the destination)")
    before_plan = plan_snapshot(state)
    before = {**flag_state_snapshot(state), "plan": before_plan,
              "guardrail": guardrail_snapshot(Guardrail.objects.filter(flag_state=state).first())}
    stages = list(plan or [])
    if stages and [{k: v for k, v in s.items() if k != "position"} for s in before_plan] != stages:
        if state.stage > 0:
            raise Conflict(f"the plan of '{where}' has started (stage {state.stage}); roll it back to the start "
                           "before promoting a plan onto it", current_version=state.version)
        rows = stage_rows(stages)
        state.stages.all().delete()
        for stage, cohorts in rows:
            stage.flag_state = state
            stage.save(force_insert=True)
            stage.include_cohorts.set(cohorts)
    include = _cohorts(include_cohorts, field="include_cohorts")
    exclude = _cohorts(exclude_cohorts, field="exclude_cohorts")
    both = sorted({c.key for c in include} & {c.key for c in exclude})
    if both:
        raise ValidationFailed.field("include_cohorts", f"cohort '{both[0]}' cannot be both included and excluded")
    state.include_cohorts.set(include)
    state.exclude_cohorts.set(exclude)
    state.overrides = validate_overrides(overrides or {})
    after_guardrail = guardrail_snapshot(_guardrail(state, guardrails))
    extra: dict[str, Any] = {"promoted_from": source, "plan": plan_snapshot(state), "guardrail": after_guardrail}
    if approval:
        extra["approval"] = approval.as_audit()
    return write_state(state, actor=actor, action=Action.FLAG_STATE_PROMOTED, before=before, reason=reason,
                       extra=extra)
