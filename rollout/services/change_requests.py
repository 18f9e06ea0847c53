"""Change requests (four eyes) and break-glass review items.

A change request stores the service call it will make (``action`` + ``params``, JSON) and the
flag state version it was based on. Approving it — by a different user with the approver role —
makes that call inside the approval's transaction with an ``Approval`` (requester and approver
go into the change's one audit event). If the flag state moved since, the request is marked
``stale`` instead and nothing else changes.

``change_request_submit`` is the one entry point for a person's change: it applies the change at
once when the policy allows (``rollout/policy.py``) and opens a change request otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from audit.models import AuditEvent
from audit.services import audit_record, audited_atomic
from common import clock
from common.actors import Actor
from common.errors import Conflict, Forbidden, NotFound, ValidationFailed
from common.permissions import Capability, can, can_decide
from rollout.models import ChangeRequest, ChangeRequestStatus, FlagState, ReviewItem
from rollout.policy import Approval, may_act_directly
from rollout.services import flags as flag_services
from rollout.services import guardrails, mismatches, stages
from rollout.services.stages import set_plan_state
from rollout.snapshots import change_request_snapshot

Applier = Callable[..., AuditEvent | None]


@dataclass(frozen=True)
class ActionSpec:
    policy_action: str  # the name policy.approval_required knows it by
    apply: Applier  # fn(state, *, actor, approval, version, reason, **params) inside a transaction
    params: frozenset[str]
    describe: Callable[[FlagState, dict[str, Any]], str]


def _where(state: FlagState) -> str:
    return f"{state.flag.key}@{state.environment.key}"


def _advance(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
             force: bool = False) -> AuditEvent:
    return stages.advance_state(state, actor=actor, approval=approval, version=version, reason=reason,
                                force=bool(force))


def _resume(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None,
            reason: str) -> AuditEvent:
    return flag_services.resume_state(state, actor=actor, approval=approval, version=version, reason=reason)


def _retire(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None,
            reason: str) -> AuditEvent:
    return flag_services.retire_state(state, actor=actor, approval=approval, version=version, reason=reason)


def _plan(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
          stages: Any = None) -> AuditEvent:
    return set_plan_state(state, actor=actor, approval=approval, version=version, reason=reason, stages=stages)


def _update(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
            **fields: Any) -> AuditEvent | None:
    if "percentage" in fields:
        fields["percentage_value"] = fields.pop("percentage")
    return flag_services.update_state(state, actor=actor, approval=approval, version=version, reason=reason,
                                      **fields)


def _guardrails(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
                **limits: Any) -> AuditEvent:
    return guardrails.set_guardrail_state(state, actor=actor, approval=approval, version=version, reason=reason,
                                          **limits)


def _known(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
           group: int = 0, known: bool = True) -> AuditEvent:
    return mismatches.mark_known_state(state, actor=actor, approval=approval, version=version, reason=reason,
                                       group=group, known=known)


ACTIONS: dict[str, ActionSpec] = {
    "advance": ActionSpec("advance", _advance, frozenset({"force"}),
                          lambda s, p: f"advance {_where(s)} from stage {s.stage}"),
    "resume": ActionSpec("resume", _resume, frozenset(), lambda s, p: f"resume {_where(s)}"),
    "retire": ActionSpec("retire", _retire, frozenset(), lambda s, p: f"retire legacy for {_where(s)}"),
    "plan": ActionSpec("plan", _plan, frozenset({"stages"}),
                       lambda s, p: f"set the rollout plan of {_where(s)} ({len(p.get('stages') or [])} stages)"),
    "update": ActionSpec("update", _update,
                         frozenset({"enabled", "percentage", "compare_percentage", "include_cohorts",
                                    "exclude_cohorts", "overrides"}),
                         lambda s, p: f"change {', '.join(sorted(p))} of {_where(s)}"),
    "guardrails": ActionSpec("guardrails", _guardrails, guardrails.LIMIT_FIELDS,
                             lambda s, p: f"change the guardrails of {_where(s)}"),
    "known_difference": ActionSpec("known_difference", _known, frozenset({"group", "known"}),
                                   lambda s, p: f"mark mismatch group {p.get('group')} of {_where(s)} as "
                                                f"{'a known difference' if p.get('known', True) else 'unexplained'}"),
}

ACTION_CHOICES = sorted(ACTIONS)


@dataclass(frozen=True)
class Submitted:
    state: FlagState
    change_request: ChangeRequest | None  # set when the change waits for approval

    @property
    def applied(self) -> bool:
        return self.change_request is None


class _DryRun(Exception):
    pass


def _spec(action: str, params: Any) -> ActionSpec:
    spec = ACTIONS.get(action)
    if spec is None:
        raise ValidationFailed.field("action", f"unknown action '{action}'; known: {', '.join(sorted(ACTIONS))}")
    if not isinstance(params, dict):
        raise ValidationFailed.field("params", "must be an object")
    unknown = sorted(set(params) - spec.params)
    if unknown:
        raise ValidationFailed.field(f"params.{unknown[0]}", f"is not a parameter of '{action}'")
    return spec


def change_request_submit(*, actor: Actor, flag: str, environment: str, action: str, params: dict[str, Any] | None,
                          version: int | None, reason: str = "") -> Submitted:
    """A person's change: applied now when the policy allows, else a pending change request.

    The change is tried first either way (rolled back when it must wait), so a request that
    could never apply is refused at once with the same error.
    """
    params = dict(params or {})
    spec = _spec(action, params)
    with audited_atomic():
        state = flag_services.get_state_for_update(flag, environment)
        if may_act_directly(state, spec.policy_action, actor=actor):
            spec.apply(state, actor=actor, approval=None, version=version, reason=reason, **params)
            return Submitted(state=state, change_request=None)
        if actor.user_id is None:
            raise Forbidden("only a signed-in user or their API token can request a change")
        based_on = state.version
        try:
            with transaction.atomic():
                probe = Approval(change_request=0, requested_by=actor.label, approved_by="(dry run)")
                spec.apply(state, actor=actor, approval=probe, version=version, reason=reason, **params)
                raise _DryRun
        except _DryRun:
            pass
        state.refresh_from_db()
        cr = ChangeRequest.objects.create(
            flag_state=state, action=action, params=params, based_on_version=based_on,
            summary=spec.describe(state, params)[:300], reason=reason, requested_by_id=actor.user_id,
            requested_by_label=actor.label[:150], created_at=clock.now())
        audit_record(actor=actor, action="change_request.created", object_type="change_request",
                     object_key=str(cr.pk), environment=state.environment.key, after=change_request_snapshot(cr),
                     reason=reason)
        return Submitted(state=state, change_request=cr)


def _locked_request(change_request: int) -> ChangeRequest:
    cr = (ChangeRequest.objects.select_for_update(of=("self",))
          .select_related("flag_state__flag__workload", "flag_state__environment")
          .filter(pk=change_request).first())
    if cr is None:
        raise NotFound(f"change request {change_request} does not exist")
    if cr.status != ChangeRequestStatus.PENDING:
        raise Conflict(f"change request {change_request} is already {cr.status}")
    return cr


def _decider(actor: Actor, cr: ChangeRequest) -> Any:
    user = get_user_model().objects.filter(pk=actor.user_id).first() if actor.user_id else None
    if user is not None and user.pk == cr.requested_by_id:
        raise Forbidden("four eyes: a change request is approved or rejected by someone other than its requester")
    if user is None or not can_decide(user, cr):
        raise Forbidden("approving or rejecting a change request needs the approver role")
    return user


def change_request_approve(*, actor: Actor, change_request: int, reason: str = "") -> ChangeRequest:
    """Approve and apply; if the flag state moved since the request, mark it stale instead."""
    with audited_atomic():
        cr = _locked_request(change_request)
        user = _decider(actor, cr)
        state = flag_services.get_state_for_update(cr.flag_state.flag.key, cr.flag_state.environment.key)
        cr.decided_by, cr.decided_by_label, cr.decided_at = user, actor.label[:150], clock.now()
        cr.decision_reason = reason
        if state.version != cr.based_on_version:
            before = change_request_snapshot(cr)
            cr.status = ChangeRequestStatus.STALE
            cr.save()
            audit_record(actor=actor, action="change_request.stale", object_type="change_request",
                         object_key=str(cr.pk), environment=state.environment.key,
                         before={"status": before["status"], "based_on_version": cr.based_on_version},
                         after={**change_request_snapshot(cr), "current_version": state.version},
                         reason=f"flag state moved from version {cr.based_on_version} to {state.version}")
            return cr
        spec = _spec(cr.action, cr.params)
        approval = Approval(change_request=cr.pk, requested_by=cr.requested_by_label, approved_by=actor.label)
        cr.status = ChangeRequestStatus.APPLIED
        cr.save()
        event = spec.apply(state, actor=actor, approval=approval, version=cr.based_on_version,
                           reason=cr.reason or reason, **cr.params)
        if event is None:  # the change was already in place: still record the decision
            audit_record(actor=actor, action="change_request.approved", object_type="change_request",
                         object_key=str(cr.pk), environment=state.environment.key,
                         after=change_request_snapshot(cr), reason="nothing left to change")
        return cr


def change_request_reject(*, actor: Actor, change_request: int, reason: str = "") -> ChangeRequest:
    with audited_atomic():
        cr = _locked_request(change_request)
        user = _decider(actor, cr)
        cr.status = ChangeRequestStatus.REJECTED
        cr.decided_by, cr.decided_by_label, cr.decided_at = user, actor.label[:150], clock.now()
        cr.decision_reason = reason
        cr.save()
        audit_record(actor=actor, action="change_request.rejected", object_type="change_request",
                     object_key=str(cr.pk), environment=cr.flag_state.environment.key,
                     before={"status": ChangeRequestStatus.PENDING}, after=change_request_snapshot(cr), reason=reason)
        return cr


def change_request_cancel(*, actor: Actor, change_request: int, reason: str = "") -> ChangeRequest:
    """The requester withdraws their own pending request."""
    with audited_atomic():
        cr = _locked_request(change_request)
        if actor.user_id is None or actor.user_id != cr.requested_by_id:
            raise Forbidden("only the requester can cancel a change request")
        cr.status = ChangeRequestStatus.CANCELLED
        cr.decided_by_id, cr.decided_by_label, cr.decided_at = actor.user_id, actor.label[:150], clock.now()
        cr.decision_reason = reason
        cr.save()
        audit_record(actor=actor, action="change_request.cancelled", object_type="change_request",
                     object_key=str(cr.pk), environment=cr.flag_state.environment.key,
                     before={"status": ChangeRequestStatus.PENDING}, after=change_request_snapshot(cr), reason=reason)
        return cr


def review_item_acknowledge(*, actor: Actor, review_item: int, note: str = "") -> ReviewItem:
    """An approver (not the one who broke the glass) has looked at a break-glass action."""
    with audited_atomic():
        item = (ReviewItem.objects.select_for_update(of=("self",))
                .select_related("flag_state__flag", "flag_state__environment").filter(pk=review_item).first())
        if item is None:
            raise NotFound(f"review item {review_item} does not exist")
        if item.acknowledged_at is not None:
            raise Conflict(f"review item {review_item} was already acknowledged by {item.acknowledged_by_label}")
        user = get_user_model().objects.filter(pk=actor.user_id).first() if actor.user_id else None
        if user is None or not can(user, Capability.APPROVE):
            raise Forbidden("acknowledging a break-glass review needs the approver role")
        if actor.label == item.actor_label or user.get_username() == item.actor_label.split(" via ")[0]:
            raise Forbidden("four eyes: the review is acknowledged by someone other than who broke the glass")
        item.acknowledged_by, item.acknowledged_by_label = user, actor.label[:150]
        item.acknowledged_at, item.note = clock.now(), note
        item.save()
        audit_record(actor=actor, action="review_item.acknowledged", object_type="review_item",
                     object_key=str(item.pk), environment=item.flag_state.environment.key,
                     after={"id": item.pk, "action": item.action, "audit_sequence": item.audit_sequence,
                            "flag": item.flag_state.flag.key,
                            "flag_state": f"{item.flag_state.flag.key}@{item.flag_state.environment.key}",
                            "broken_by": item.actor_label, "note": note},
                     reason=note)
        return item
