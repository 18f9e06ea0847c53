"""When a change needs a second person (four eyes), and how an approval travels with the change.

The rules (docs/rollouts.md):

* kill, rollback and pause never wait: they move toward safety;
* advancing an ``irreversible`` workload always needs approval, in every environment;
* any other change needs approval in an environment with ``requires_approval`` and, everywhere,
  for ``high`` / ``critical`` workloads — except for admins, who may change those directly
  (``common.permissions.can(user, CHANGE_ENV, environment=..., workload=...)``);
* marking a mismatch group as a known difference needs approval in approval environments only;
* the system (guardrails, the scheduler, auto-advance) acts without a change request: it only
  carries out a plan that was itself set through one where approval is required, and it never
  auto-advances an irreversible workload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.actors import Actor
from common.errors import Forbidden
from common.permissions import Capability, can
from rollout.models import FlagState, Reversibility, Risk

# Actions that move toward safety: they never wait for approval (break-glass when approval would apply).
EMERGENCY_ACTIONS = frozenset({"kill", "rollback", "pause"})
HIGH_RISK = frozenset({Risk.HIGH, Risk.CRITICAL})


class ApprovalRequired(Forbidden):
    code = "approval_required"


@dataclass(frozen=True)
class Approval:
    """The change request a change carries out, for the audit event (requester and approver)."""

    change_request: int
    requested_by: str
    approved_by: str

    def as_audit(self) -> dict[str, Any]:
        return {"change_request": self.change_request, "requested_by": self.requested_by,
                "approved_by": self.approved_by}


def context_requires_approval(state: FlagState) -> bool:
    """Ordinary changes to this flag state need a second person."""
    return bool(state.environment.requires_approval) or state.flag.workload.risk in HIGH_RISK


def approval_required(state: FlagState, action: str) -> bool:
    if action in EMERGENCY_ACTIONS:
        return False
    if action == "known_difference":
        return bool(state.environment.requires_approval)
    if action == "advance" and state.flag.workload.reversibility == Reversibility.IRREVERSIBLE:
        return True
    return context_requires_approval(state)


def is_person(actor: Actor) -> bool:
    return actor.type in {"user", "token"}


def _user(actor: Actor) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.filter(pk=actor.user_id).first() if actor.user_id else None


def may_act_directly(state: FlagState, action: str, *, actor: Actor) -> bool:
    """May this actor make this change now, without a change request?"""
    if not is_person(actor) or not approval_required(state, action):
        return True
    if action == "advance" and state.flag.workload.reversibility == Reversibility.IRREVERSIBLE:
        return False
    return can(_user(actor), Capability.CHANGE_ENV, environment=state.environment, workload=state.flag.workload)


def require_approval_if_needed(state: FlagState, action: str, *, actor: Actor, approval: Approval | None) -> None:
    """A person's change in an approval context must come through an approved change request."""
    if approval is None and not may_act_directly(state, action, actor=actor):
        raise ApprovalRequired(
            f"{action} of '{state.flag.key}' in {state.environment.key} needs a second person's approval; "
            "submit it as a change request")


def is_break_glass(state: FlagState, action: str, *, actor: Actor) -> bool:
    """A person's kill / rollback where an ordinary change would have needed approval."""
    return action in {"kill", "rollback"} and is_person(actor) and context_requires_approval(state)
