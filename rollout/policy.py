"""The one policy: may this actor make this change now, must a second person approve it, or is it refused?

``decide(actor, action, effect)`` answers from the actor's roles, the action and **what the change
does** (``Effect``: the environments whose SDK decisions it changes, the workloads it touches with
their current and new risk and reversibility). Every entrance reaches it through the action layer
(``actions.submit``), and every service that makes a person's change calls ``enforce`` as a guard,
so a new entrance cannot skip it. The rules (docs/rollouts.md):

* reads aside, each action needs a capability (``common.permissions``); without it: refused;
* kill, rollback and pause never wait: they move toward safety (break-glass where approval would apply);
* a change is *gated* when it reaches an environment that requires approval, or a ``high`` /
  ``critical`` workload — by its current **or** its new risk, so lowering a workload's risk is itself
  gated; a gated change needs a second person's approval, except an admin's;
* some changes always need approval, for admins too: advancing an ``irreversible`` workload, and
  making a workload ``irreversible`` or no longer ``irreversible``;
* marking a mismatch group as a known difference, and resolving divergences, are gated by the
  environment's approval only;
* a migration's stage change is gated only when parallel becomes authoritative for more subjects
  (``live``) or the migration completes (``migration_stage_effect``); its rollback never waits;
* the system (guardrails, the scheduler, auto-advance) acts without a change request: it only
  carries out a plan that was itself set through one where approval is required.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.contrib.auth import get_user_model

from audit.names import Action
from common.actors import Actor
from common.errors import Forbidden
from common.permissions import Capability, capabilities_of, denial
from rollout.models import Environment, FlagState, Reversibility, Risk, Workload

HIGH_RISK = frozenset({Risk.HIGH, Risk.CRITICAL})

#: Actions that move toward safety: they never wait for approval.
EMERGENCY = frozenset({Action.FLAG_STATE_KILLED, Action.FLAG_STATE_ROLLED_BACK, Action.FLAG_STATE_PAUSED,
                       Action.MIGRATION_ROLLED_BACK})
#: Actions that change who administers what: admins only, applied at once.
ADMINISTRATION = frozenset({
    Action.ENVIRONMENT_CREATED, Action.ENVIRONMENT_UPDATED, Action.SDK_KEY_CREATED, Action.SDK_KEY_REVOKED,
    Action.API_TOKEN_CREATED, Action.API_TOKEN_REVOKED, Action.USER_CREATED, Action.USER_ROLES_CHANGED,
    Action.USER_DEACTIVATED, Action.USER_INVITED,
})
#: Actions on one environment's rollout of a flag.
STATE_CHANGES = frozenset({
    Action.FLAG_STATE_UPDATED, Action.FLAG_STATE_RESUMED, Action.FLAG_STATE_RETIRED, Action.FLAG_STATE_PLAN_SET,
    Action.FLAG_STATE_ADVANCED, Action.FLAG_STATE_GUARDRAILS_SET, Action.MISMATCH_GROUP_KNOWN,
    Action.FLAG_STATE_PROMOTED, Action.FLAG_STATE_GUARDRAIL_QUERIES_SET, Action.FLAG_STATE_CONFIGURED,
    Action.MIGRATION_STAGE_SET, Action.MIGRATION_DIVERGENCES_RESOLVED, Action.FLAG_STATE_FEEDBACK_RULE_SET,
})


class ApprovalRequired(Forbidden):
    code = "approval_required"


class Verdict(StrEnum):
    APPLY = "apply"
    REQUEST = "request"  # a change request for a second person
    REFUSE = "refuse"


@dataclass(frozen=True)
class Approval:
    """The change request a change carries out, for the audit event (requester and approver)."""

    change_request: int
    requested_by: str
    approved_by: str

    def as_audit(self) -> dict[str, Any]:
        return {"change_request": self.change_request, "requested_by": self.requested_by,
                "approved_by": self.approved_by}


@dataclass(frozen=True)
class Exposure:
    """One workload a change touches, with its risk and reversibility before and after the change."""

    key: str
    risk: str
    reversibility: str
    new_risk: str | None = None
    new_reversibility: str | None = None

    @property
    def high_risk(self) -> bool:
        return self.risk in HIGH_RISK or (self.new_risk or "") in HIGH_RISK


@dataclass(frozen=True)
class Effect:
    """What a change does, as policy sees it."""

    environments: tuple[Environment, ...] = ()
    workloads: tuple[Exposure, ...] = ()
    always_approval: str = ""  # why even an admin needs a second person ("" when not)
    decides: bool = True  # False: the change moves no SDK decision and no risk (names, descriptions)

    @property
    def approval_environments(self) -> list[str]:
        return sorted({e.key for e in self.environments if e.requires_approval})

    @property
    def high_risk_workloads(self) -> list[str]:
        return sorted({w.key for w in self.workloads if w.high_risk})


NO_EFFECT = Effect(decides=False)


@dataclass(frozen=True)
class Ruling:
    verdict: Verdict
    message: str = ""
    break_glass: bool = False  # an emergency action where an ordinary change would have needed approval

    @property
    def applies(self) -> bool:
        return self.verdict is Verdict.APPLY


def exposure(workload: Workload, *, risk: str | None = None, reversibility: str | None = None) -> Exposure:
    return Exposure(key=workload.key, risk=workload.risk, reversibility=workload.reversibility,
                    new_risk=risk if risk is not None and risk != workload.risk else None,
                    new_reversibility=(reversibility if reversibility is not None
                                       and reversibility != workload.reversibility else None))


def state_effect(state: FlagState, action: Action) -> Effect:
    """A change to one flag state: its environment, its flag's workload."""
    workload = state.flag.workload
    always = ""
    if action == Action.FLAG_STATE_ADVANCED and workload.reversibility == Reversibility.IRREVERSIBLE:
        always = f"workload '{workload.key}' is irreversible: advancing it always needs a second person"
    if action in (Action.MISMATCH_GROUP_KNOWN, Action.MIGRATION_DIVERGENCES_RESOLVED):
        # a judgement about evidence, not a change of exposure
        return Effect(environments=(state.environment,), always_approval=always)
    return Effect(environments=(state.environment,), workloads=(exposure(workload),), always_approval=always)


def migration_stage_effect(state: FlagState, *, authoritative_for_more: bool, completes: bool) -> Effect:
    """A migration moving forward: gated (environment, risk) only when parallel becomes authoritative for
    more subjects (entering ``live``) or the migration completes; ``complete`` of an irreversible workload
    always needs a second person, like advancing one. Other moves (dual writes, shadow reads) do not
    change which side's data is the truth, so they apply at once for whoever may change the environment."""
    if not (authoritative_for_more or completes):
        return Effect(environments=(state.environment,), decides=False)
    workload = state.flag.workload
    always = ""
    if completes and workload.reversibility == Reversibility.IRREVERSIBLE:
        always = f"workload '{workload.key}' is irreversible: completing its migration always needs a second person"
    return Effect(environments=(state.environment,), workloads=(exposure(workload),), always_approval=always)


def states_effect(states: Iterable[FlagState]) -> Effect:
    """A change that moves the decisions of several flag states (a cohort, a flag's salt)."""
    states = list(states)
    envs = {s.environment.pk: s.environment for s in states}
    workloads = {s.flag.workload.key: exposure(s.flag.workload) for s in states}
    return Effect(environments=tuple(envs.values()), workloads=tuple(workloads.values()))


def workload_effect(workload: Workload, changes: dict[str, Any]) -> Effect:
    """A workload's own fields: its risk and reversibility are what policy is made of."""
    risk, reversibility = changes.get("risk"), changes.get("reversibility")
    touched = exposure(workload, risk=risk, reversibility=reversibility)
    if touched.new_risk is None and touched.new_reversibility is None:
        return NO_EFFECT
    always = ""
    if touched.new_reversibility is not None and Reversibility.IRREVERSIBLE in {
            workload.reversibility, touched.new_reversibility}:
        always = (f"workload '{workload.key}': changing whether it is irreversible always needs a second person "
                  "(advancing an irreversible workload does)")
    return Effect(workloads=(touched,), always_approval=always)


def _user(actor: Actor) -> Any:
    return get_user_model().objects.filter(pk=actor.user_id).first() if actor.user_id else None


def capability_for(action: Action) -> Capability:
    if action in EMERGENCY:
        return Capability.EMERGENCY
    if action in ADMINISTRATION:
        return Capability.ADMINISTER
    if action in STATE_CHANGES:
        return Capability.CHANGE_ENV
    return Capability.EDIT


def decide(actor: Actor, action: Action, effect: Effect = NO_EFFECT, *, user: Any = None) -> Ruling:
    """The one answer for every entrance: apply now, make a change request, or refuse (with why)."""
    if actor.type == "system":
        return Ruling(Verdict.APPLY)
    if actor.type not in {"user", "token"} or actor.user_id is None:
        return Ruling(Verdict.REFUSE, "only a signed-in user or an API token can make changes")
    user = user if user is not None else _user(actor)
    needed = capability_for(action)
    refused = denial(user, needed)
    if refused is not None:
        return Ruling(Verdict.REFUSE, refused)
    gates = _gates(effect)
    if action in EMERGENCY:
        return Ruling(Verdict.APPLY, break_glass=bool(gates))
    if effect.always_approval:
        return Ruling(Verdict.REQUEST, effect.always_approval)
    if gates and Capability.ADMINISTER not in capabilities_of(user):
        return Ruling(Verdict.REQUEST, "; ".join(gates) + ": a second person approves this change")
    return Ruling(Verdict.APPLY)


def _gates(effect: Effect) -> list[str]:
    if not effect.decides:
        return []
    gates = [f"environment '{key}' requires approval" for key in effect.approval_environments]
    gates += [f"workload '{key}' is high risk" for key in effect.high_risk_workloads]
    return gates


def approval_gated(effect: Effect) -> bool:
    """Would this change need a second person's approval for a non-admin (whoever asks)?"""
    return bool(effect.always_approval) or bool(_gates(effect))


def enforce(actor: Actor, action: Action, effect: Effect = NO_EFFECT, *, approval: Approval | None = None,
            what: str = "") -> Ruling:
    """The guard every service runs before a person's change: raise unless the change may be applied
    now (or carries the approval of the change request it carries out)."""
    ruling = decide(actor, action, effect)
    if ruling.verdict is Verdict.REFUSE:
        raise Forbidden(ruling.message)
    if ruling.verdict is Verdict.REQUEST and approval is None:
        raise ApprovalRequired(f"{what or action}: {ruling.message}; submit it as a change request")
    return ruling


def require_approval_if_needed(state: FlagState, action: Action, *, actor: Actor, approval: Approval | None) -> None:
    """``enforce`` for a change to one flag state."""
    enforce(actor, action, state_effect(state, action), approval=approval,
            what=f"{action} of '{state.flag.key}' in {state.environment.key}")


def is_break_glass(state: FlagState, action: Action, *, actor: Actor) -> bool:
    """A person's kill / rollback where an ordinary change would have needed approval."""
    return action in EMERGENCY and decide(actor, action, state_effect(state, action)).break_glass
