from __future__ import annotations

import pytest

from actions.submit import (
    change_request_approve,
    change_request_cancel,
    change_request_reject,
    review_item_acknowledge,
    submit_state,
)
from common.errors import Conflict, Forbidden, ValidationFailed
from rollout.models import ChangeRequestStatus, FlagState, ReviewItem
from rollout.plans.stages import rollout_advance, rollout_rollback
from rollout.services.flags import flag_state_kill
from rollout.services.workloads import workload_update

pytestmark = pytest.mark.django_db


def _prod() -> FlagState:
    return FlagState.objects.get(flag__key="invoice-engine", environment__key="production")


def test_change_request_submit__plain_env__applied_at_once(planned, people):
    submitted = submit_state(actor=people["ed"], flag=planned.key, environment="staging", action="advance",
                                      params={}, version=None)
    assert submitted.applied and submitted.target.stage == 1


def test_change_request__approval_flow_with_two_users__applied_with_requester_and_approver(planned, people,
                                                                                          audit_events):
    submitted = submit_state(actor=people["ed"], flag=planned.key, environment="production",
                                      action="advance", params={}, version=2, reason="start validation")
    cr = submitted.change_request
    assert cr is not None and cr.status == ChangeRequestStatus.PENDING and _prod().stage == 0
    created = audit_events()[-1]
    assert (created.action, created.actor, created.object_type, created.after["action"], created.after["status"],
            created.after["requested_by"], created.after["based_on_version"]) == (
        "change_request.created", "ed", "change_request", "flag_state.advanced", "pending", "ed", 2)

    with pytest.raises(Forbidden, match="four eyes"):
        change_request_approve(actor=people["ed"], change_request=cr.pk)
    with pytest.raises(Forbidden, match="approver"):
        change_request_approve(actor=people["vic"], change_request=cr.pk)

    cr = change_request_approve(actor=people["ann"], change_request=cr.pk, reason="looks fine")
    assert cr.status == ChangeRequestStatus.APPLIED and cr.decided_by_label == "ann"
    assert _prod().stage == 1
    applied = audit_events()[-1]
    assert (applied.action, applied.actor, applied.environment, applied.reason) == (
        "flag_state.advanced", "ann", "production", "start validation")
    assert applied.after["approval"] == {"change_request": cr.pk, "requested_by": "ed", "approved_by": "ann"}
    with pytest.raises(Conflict, match="already applied"):
        change_request_approve(actor=people["bob"], change_request=cr.pk)


def test_change_request__state_changed_underneath__marked_stale_nothing_applied(planned, people, audit_events):
    cr = submit_state(actor=people["ed"], flag=planned.key, environment="production", action="advance",
                               params={}, version=None).change_request
    assert cr is not None
    rollout_advance(actor=people["root"], flag=planned.key, environment="production")  # admin acts directly
    cr = change_request_approve(actor=people["ann"], change_request=cr.pk)
    assert cr.status == ChangeRequestStatus.STALE
    assert _prod().stage == 1  # not advanced twice
    stale = audit_events()[-1]
    assert (stale.action, stale.actor, stale.before, stale.after["status"], stale.after["current_version"]) == (
        "change_request.stale", "ann", {"status": "pending", "based_on_version": 2}, "stale", 3)


def test_change_request__kill_while_pending__kill_applies_break_glass_review_and_request_goes_stale(
        planned, people, audit_events):
    cr = submit_state(actor=people["ed"], flag=planned.key, environment="production", action="advance",
                               params={}, version=None).change_request
    rollout_advance(actor=people["root"], flag=planned.key, environment="production")
    state = flag_state_kill(actor=people["ed"], flag=planned.key, environment="production", reason="pager")
    assert state.enabled is False
    kill = audit_events()[-1]
    assert (kill.action, kill.actor, kill.after["break_glass"], kill.after["pending_change_requests"]) == (
        "flag_state.killed", "ed", True, [cr.pk])
    item = ReviewItem.objects.get()
    assert (item.action, item.actor_label, item.audit_sequence, item.acknowledged_at) == ("kill", "ed", kill.sequence,
                                                                                          None)
    assert change_request_approve(actor=people["ann"], change_request=cr.pk).status == ChangeRequestStatus.STALE

    with pytest.raises(Forbidden):
        review_item_acknowledge(actor=people["ed"], review_item=item.pk)
    review_item_acknowledge(actor=people["bob"], review_item=item.pk, note="valid page")
    ack = audit_events()[-1]
    assert (ack.action, ack.actor, ack.after) == ("review_item.acknowledged", "bob", {
        "id": item.pk, "action": "kill", "audit_sequence": kill.sequence, "broken_by": "ed", "note": "valid page",
        "flag": "invoice-engine", "flag_state": "invoice-engine@production"})


def test_rollout_rollback__person_in_high_risk_workload__break_glass_marked(planned, people, actor, audit_events):
    workload_update(actor=actor, key="billing", risk="high")
    rollout_advance(actor=actor, flag=planned.key, environment="staging")
    rollout_rollback(actor=people["ed"], flag=planned.key, environment="staging", reason="bad")
    assert audit_events()[-1].after["break_glass"] is True
    assert ReviewItem.objects.get().action == "rollback"


def test_change_request_submit__could_never_apply__refused_at_once_nothing_saved(planned, people, audit_events):
    with pytest.raises(Conflict, match="100%"):
        submit_state(actor=people["ed"], flag=planned.key, environment="production", action="retire",
                              params={}, version=None)
    with pytest.raises(ValidationFailed) as info:
        submit_state(actor=people["ed"], flag=planned.key, environment="production", action="update",
                              params={"percentage": 300}, version=None)
    assert "percentage" in info.value.fields
    with pytest.raises(ValidationFailed):
        submit_state(actor=people["ed"], flag=planned.key, environment="production", action="explode",
                              params={}, version=None)
    assert audit_events() == []


def test_change_request_reject_and_cancel__exact_events(planned, people, audit_events):
    one = submit_state(actor=people["ed"], flag=planned.key, environment="production",
                                action="update", params={"compare_percentage": 5}, version=None).change_request
    two = submit_state(actor=people["ed"], flag=planned.key, environment="production",
                                action="update", params={"compare_percentage": 7}, version=None).change_request
    change_request_reject(actor=people["bob"], change_request=one.pk, reason="too much")
    with pytest.raises(Forbidden):
        change_request_cancel(actor=people["ann"], change_request=two.pk)
    change_request_cancel(actor=people["ed"], change_request=two.pk, reason="typo")
    rejected, cancelled = audit_events()[-2:]
    assert (rejected.action, rejected.actor, rejected.reason, rejected.after["status"]) == (
        "change_request.rejected", "bob", "too much", "rejected")
    assert (cancelled.action, cancelled.actor, cancelled.after["status"]) == ("change_request.cancelled", "ed",
                                                                              "cancelled")


def test_change_request__plan_in_approval_env__applied_on_approval(flag, people, cohorts):
    stages = [{"name": "validate", "compare_percentage": 5}, {"name": "all", "percentage": 100}]
    cr = submit_state(actor=people["ed"], flag=flag.key, environment="production", action="plan",
                               params={"stages": stages}, version=None).change_request
    assert cr is not None and not _prod().stages.exists()
    change_request_approve(actor=people["ann"], change_request=cr.pk)
    assert list(_prod().stages.values_list("name", flat=True)) == ["validate", "all"]
