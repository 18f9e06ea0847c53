"""The one way in: every entrance (UI, API, change-request approval, tasks, commands, importers) submits a
change here and gets the same outcome for the same request.

``submit`` locks the target inside the action's one durable transaction, asks the one policy
(``rollout.policy.decide``) what the change does and who may make it, and then applies it (the service
writes the change and its audit event), turns it into a change request for a second person, or refuses
it (403 with why). A change request stores the action and its parameters and the version of the target it
was based on; approving it — by another user, compared by id — performs the same action with an
``Approval`` in the approval's transaction, or marks the request stale when the target moved since.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from actions.registry import LOCKS, ActionSpec, spec_for
from audit.names import Action
from audit.services import action_atomic, audit_record, audited_atomic
from cohorts.models import Cohort
from cohorts.snapshots import cohort_snapshot
from common import clock
from common.actors import Actor
from common.errors import Conflict, Forbidden, NotFound
from common.permissions import Capability, can, can_decide
from rollout.models import ChangeRequest, ChangeRequestStatus, Flag, FlagState, ReviewItem, TargetType, Workload
from rollout.policy import Approval, Ruling, Verdict, decide
from rollout.snapshots import change_request_snapshot, flag_snapshot, flag_state_snapshot, workload_snapshot


@dataclass(frozen=True)
class Outcome:
    """What became of a submitted change: applied (``result`` is what the service returned) or waiting
    for approval (``change_request``)."""

    action: Action
    target: Any  # the target row as it stands after the transaction
    change_request: ChangeRequest | None = None
    result: Any = None

    @property
    def applied(self) -> bool:
        return self.change_request is None


def outcome_message(outcome: Outcome, done: str) -> str:
    """The one sentence a page shows for an outcome."""
    cr = outcome.change_request
    return done if cr is None else f"Waiting for approval: change request #{cr.pk} ({cr.summary})."


class _DryRun(Exception):
    pass


def _refresh(obj: Any) -> Any:
    obj.refresh_from_db()
    return obj


def preview(*, actor: Actor, action: str, target: str = "", params: dict[str, Any] | None = None,
            obj: Any = None) -> Ruling:
    """What ``submit`` would do with this change now (apply, change request, refuse) — for the UI to
    show the same answer the API would give. Reads only. ``obj`` stands for a target that does not exist
    yet (an unsaved flag state of a flag a configuration plan creates first): same spec, effect and policy."""
    spec = spec_for(action, dict(params or {}))
    if obj is not None:
        return decide(actor, spec.name, spec.effect_of(obj, params or {}))
    with transaction.atomic():
        obj = LOCKS[spec.target](target)
        return decide(actor, spec.name, spec.effect_of(obj, params or {}))


def submit(*, actor: Actor, action: str, target: str, params: dict[str, Any] | None = None,
           version: int | None = None, reason: str = "") -> Outcome:
    """Apply the change now when policy allows, open a change request when it needs a second person,
    refuse it (``Forbidden``) otherwise. ``version`` is the version of the target the caller read."""
    params = dict(params or {})
    spec = spec_for(action, params)
    with action_atomic():
        obj = LOCKS[spec.target](target)
        ruling = decide(actor, spec.name, spec.effect_of(obj, params))
        if ruling.verdict is Verdict.REFUSE:
            raise Forbidden(ruling.message)
        if ruling.verdict is Verdict.APPLY:
            result = spec.perform(obj, actor=actor, approval=None, version=version, reason=reason, **params)
            return Outcome(action=spec.name, target=_refresh(obj), result=result)
        cr = _open_request(spec, obj, actor=actor, target=target, params=params, version=version, reason=reason,
                           why=ruling.message)
        return Outcome(action=spec.name, target=obj, change_request=cr)


def _open_request(spec: ActionSpec, obj: Any, *, actor: Actor, target: str, params: dict[str, Any],
                  version: int | None, reason: str, why: str) -> ChangeRequest:
    """The change is tried first (and rolled back), so a request that could never apply is refused at
    once with the same error it would get when approved."""
    try:
        with transaction.atomic():
            probe = Approval(change_request=0, requested_by=actor.label, approved_by="(dry run)")
            spec.perform(obj, actor=actor, approval=probe, version=version, reason=reason, **params)
            raise _DryRun
    except _DryRun:
        pass
    obj = _refresh(obj)
    cr = ChangeRequest.objects.create(
        target_type=spec.target, target_key=target, flag_state=obj if isinstance(obj, FlagState) else None,
        action=spec.name, params=params, based_on_version=obj.version,
        summary=spec.describe(obj, params)[:300], reason=reason, requested_by_id=actor.user_id,
        requested_by_label=actor.label[:150], created_at=clock.now())
    audit_record(actor=actor, action=Action.CHANGE_REQUEST_CREATED, object_type="change_request",
                 object_key=str(cr.pk), environment=environment_of(cr),
                 after={**change_request_snapshot(cr), "why": why}, reason=reason)
    return cr


def environment_of(cr: ChangeRequest) -> str:
    return cr.flag_state.environment.key if cr.flag_state is not None else ""


def target_version(cr: ChangeRequest) -> int | None:
    """The target's version now (None when it is gone)."""
    return target_snapshot(cr).get("version")


def target_snapshot(cr: ChangeRequest) -> Mapping[str, Any]:
    """The target as it stands now, in its audit snapshot's shape ({} when it is gone)."""
    if cr.flag_state is not None:
        return flag_state_snapshot(cr.flag_state)
    kind = TargetType(cr.target_type)
    if kind == TargetType.FLAG:
        flag = Flag.objects.select_related("workload").filter(key=cr.target_key).first()
        return flag_snapshot(flag) if flag is not None else {}
    if kind == TargetType.WORKLOAD:
        workload = Workload.objects.filter(key=cr.target_key).first()
        return workload_snapshot(workload) if workload is not None else {}
    cohort = Cohort.objects.filter(key=cr.target_key).first()
    return cohort_snapshot(cohort) if cohort is not None else {}


# -- deciding a change request ----------------------------------------------------------------------


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


def _decided(cr: ChangeRequest, *, actor: Actor, status: str, reason: str) -> None:
    cr.status = status
    cr.decided_by_id, cr.decided_by_label, cr.decided_at = actor.user_id, actor.label[:150], clock.now()
    cr.decision_reason = reason
    cr.save()


def _closed(cr: ChangeRequest, *, actor: Actor, action: Action, reason: str) -> ChangeRequest:
    """Record a pending request's rejection or withdrawal (its one event)."""
    audit_record(actor=actor, action=action, object_type="change_request", object_key=str(cr.pk),
                 environment=environment_of(cr), before={"status": ChangeRequestStatus.PENDING},
                 after=change_request_snapshot(cr), reason=reason)
    return cr


def change_request_approve(*, actor: Actor, change_request: int, reason: str = "") -> ChangeRequest:
    """Approve and apply; if the target moved since the request, mark it stale instead."""
    with action_atomic():
        cr = _locked_request(change_request)
        _decider(actor, cr)
        spec = spec_for(cr.action, cr.params)
        obj = LOCKS[spec.target](cr.target_key)
        if obj.version != cr.based_on_version:
            before = change_request_snapshot(cr)
            _decided(cr, actor=actor, status=ChangeRequestStatus.STALE, reason=reason)
            audit_record(actor=actor, action=Action.CHANGE_REQUEST_STALE, object_type="change_request",
                         object_key=str(cr.pk), environment=environment_of(cr),
                         before={"status": before["status"], "based_on_version": cr.based_on_version},
                         after={**change_request_snapshot(cr), "current_version": obj.version},
                         reason=f"{cr.target_label} moved from version {cr.based_on_version} to {obj.version}")
            return cr
        approval = Approval(change_request=cr.pk, requested_by=cr.requested_by_label, approved_by=actor.label)
        _decided(cr, actor=actor, status=ChangeRequestStatus.APPLIED, reason=reason)
        spec.perform(obj, actor=actor, approval=approval, version=cr.based_on_version, reason=cr.reason or reason,
                     **cr.params)
        if _refresh(obj).version == cr.based_on_version:  # already in place: still record the decision
            audit_record(actor=actor, action=Action.CHANGE_REQUEST_APPROVED, object_type="change_request",
                         object_key=str(cr.pk), environment=environment_of(cr),
                         after=change_request_snapshot(cr), reason="nothing left to change")
        return cr


def change_request_reject(*, actor: Actor, change_request: int, reason: str = "") -> ChangeRequest:
    with audited_atomic():
        cr = _locked_request(change_request)
        _decider(actor, cr)
        _decided(cr, actor=actor, status=ChangeRequestStatus.REJECTED, reason=reason)
        return _closed(cr, actor=actor, action=Action.CHANGE_REQUEST_REJECTED, reason=reason)


def change_request_cancel(*, actor: Actor, change_request: int, reason: str = "") -> ChangeRequest:
    """The requester withdraws their own pending request (compared by user id)."""
    with audited_atomic():
        cr = _locked_request(change_request)
        if actor.user_id is None or actor.user_id != cr.requested_by_id:
            raise Forbidden("only the requester can cancel a change request")
        _decided(cr, actor=actor, status=ChangeRequestStatus.CANCELLED, reason=reason)
        return _closed(cr, actor=actor, action=Action.CHANGE_REQUEST_CANCELLED, reason=reason)


def review_item_acknowledge(*, actor: Actor, review_item: int, note: str = "") -> ReviewItem:
    """An approver — not the person who broke the glass, compared by user id — has looked at it."""
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
        legacy_row = item.actor_user_id is None  # recorded before ids were kept: the username is all there is
        if item.actor_user_id == user.pk or (legacy_row and item.actor_label.split(" via ")[0] == user.get_username()):
            raise Forbidden("four eyes: the review is acknowledged by someone other than who broke the glass")
        item.acknowledged_by, item.acknowledged_by_label = user, actor.label[:150]
        item.acknowledged_at, item.note = clock.now(), note
        item.save()
        audit_record(actor=actor, action=Action.REVIEW_ITEM_ACKNOWLEDGED, object_type="review_item",
                     object_key=str(item.pk), environment=item.flag_state.environment.key,
                     after={"id": item.pk, "action": item.action, "audit_sequence": item.audit_sequence,
                            "flag": item.flag_state.flag.key,
                            "flag_state": f"{item.flag_state.flag.key}@{item.flag_state.environment.key}",
                            "broken_by": item.actor_label, "note": note},
                     reason=note)
        return item


def submit_state(*, actor: Actor, flag: str, environment: str, action: str, params: dict[str, Any] | None = None,
                 version: int | None = None, reason: str = "") -> Outcome:
    """``submit`` for the flag state of ``flag`` in ``environment``."""
    return submit(actor=actor, action=action, target=f"{flag}@{environment}", params=params, version=version,
                  reason=reason)
