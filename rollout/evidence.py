"""What the rollout app adds to every evidence pack (``audit/evidence.py``).

A reviewer asks, after a migration: who approved each change, how the rollout moved stage by stage,
what the guardrails saw and did, how ready the rollout was at each advance, which break-glass actions
were taken and acknowledged, and which kinds of difference the comparisons found.

Every section except the mismatch groups is read from the audit log itself (so it covers flags and
states deleted since, and stops at the pack's ``until_sequence``); mismatch groups are counters kept
outside the log, so they are reported as they stand, with their audited known/unknown marks.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from audit.chain import format_time
from audit.evidence import EvidenceSubject, evidence_events, evidence_section
from audit.models import AuditEvent
from rollout.models import FlagState, Workload
from rollout.plans.health import last_check
from rollout.snapshots import flag_state_snapshot, plan_snapshot, workload_snapshot
from rollout.telemetry.mismatches import mismatch_summary

STAGE_ACTIONS = ("flag_state.plan_set", "flag_state.advanced", "flag_state.retired", "flag_state.rolled_back",
                 "flag_state.paused", "flag_state.unpaused", "flag_state.resumed", "flag_state.killed")
ADVANCE_ACTIONS = ("flag_state.advanced", "flag_state.retired")


def _environments_q(subject: EvidenceSubject) -> Q:
    """Limit to the subject's flag states' environments (a workload pack: every environment)."""
    if not subject.flag_states:
        return Q()
    return Q(environment__in=[s.partition("@")[2] for s in subject.flag_states])


def _change_requests_q(subject: EvidenceSubject) -> Q:
    return Q(object_type="change_request", after__flag__in=list(subject.flags)) & _environments_q(subject)


def _break_glass_q(subject: EvidenceSubject) -> Q:
    return subject.flag_state_q() & Q(after__break_glass=True)


def _review_items_q(subject: EvidenceSubject) -> Q:
    """Acknowledgements of the subject's break-glass actions: matched by the action's sequence (every
    acknowledgement records it), and by flag state (recorded since), so none is missed."""
    broken = list(AuditEvent.objects.filter(_break_glass_q(subject)).values_list("sequence", flat=True))
    mine = (Q(after__flag_state__in=list(subject.flag_states)) if subject.flag_states
            else Q(after__flag__in=list(subject.flags)))
    return Q(object_type="review_item") & (mine | Q(after__audit_sequence__in=broken))


def _mismatch_groups_q(subject: EvidenceSubject) -> Q:
    prefixes = [f"{s}#" for s in subject.flag_states] or [f"{f}@" for f in subject.flags]
    q = Q(pk__in=[])
    for prefix in prefixes:
        q |= Q(object_type="mismatch_group", object_key__startswith=prefix)
    return q


@evidence_events("change_requests")
def _change_request_events(subject: EvidenceSubject) -> Q:
    """Requests, approvals, rejections, cancellations and stale requests for the subject's flag states."""
    return _change_requests_q(subject)


@evidence_events("review_items")
def _review_item_events(subject: EvidenceSubject) -> Q:
    """Break-glass reviews acknowledged by an approver."""
    return _review_items_q(subject)


@evidence_events("mismatch_groups")
def _mismatch_group_events(subject: EvidenceSubject) -> Q:
    """Differences marked known (expected) or taken back."""
    return _mismatch_groups_q(subject)


def _events(q: Q, until_sequence: int) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(q, sequence__lte=until_sequence).order_by("sequence")


def _ref(event: AuditEvent) -> dict[str, Any]:
    return {"sequence": event.sequence, "occurred_at": format_time(event.occurred_at), "actor": event.actor,
            "action": event.action, "reason": event.reason}


def _after(event: AuditEvent) -> dict[str, Any]:
    return event.after if isinstance(event.after, dict) else {}


@evidence_section("current_state")
def _current_state(subject: EvidenceSubject, until_sequence: int) -> dict[str, Any]:
    workload = Workload.objects.filter(key=subject.workload).first()
    states = FlagState.objects.select_related("flag", "environment").prefetch_related(
        "include_cohorts", "exclude_cohorts").filter(flag__key__in=subject.flags)
    wanted = set(subject.flag_states)
    return {
        "workload": workload_snapshot(workload) if workload else None,
        "flag_states": [flag_state_snapshot(s) for s in states
                        if not wanted or f"{s.flag.key}@{s.environment.key}" in wanted],
    }


@evidence_section("approvals")
def _approvals(subject: EvidenceSubject, until_sequence: int) -> list[dict[str, Any]]:
    """Every change request (four eyes) with its whole life: requested, then approved and applied,
    rejected, cancelled or gone stale; an applied one names the state change it carried out."""
    requests: dict[str, dict[str, Any]] = {}
    for event in _events(_change_requests_q(subject), until_sequence).iterator():
        after = _after(event)
        entry = requests.setdefault(event.object_key, {
            "id": after.get("id", event.object_key), "flag_state": f"{after.get('flag')}@{after.get('environment')}",
            "action": after.get("action"), "params": after.get("params"), "summary": after.get("summary"),
            "based_on_version": after.get("based_on_version"), "requested_by": after.get("requested_by"),
            "requested_at": None, "status": None, "decided_by": None, "decided_at": None, "decision_reason": None,
            "applied_in": None, "events": []})
        if event.action == "change_request.created":
            entry["requested_at"] = format_time(event.occurred_at)
        else:
            entry["decided_at"] = format_time(event.occurred_at)
            entry["decided_by"] = after.get("decided_by") or event.actor
            entry["decision_reason"] = after.get("decision_reason", event.reason)
        entry["status"] = after.get("status")
        entry["events"].append(_ref(event))
    # An approved request is carried out by the change itself, which names it: a flag-state change, or
    # another object's (a known-difference mark is a mismatch group's event).
    ids = [int(key) for key in requests if key.isdigit()]
    for event in _events(Q(after__approval__change_request__in=ids), until_sequence).iterator():
        approval = _after(event).get("approval")
        if not isinstance(approval, dict):
            continue
        approved = requests.get(str(approval.get("change_request")))
        if approved is not None:
            approved["status"] = "applied"
            approved["decided_at"] = approved["decided_at"] or format_time(event.occurred_at)
            approved["decided_by"] = approval.get("approved_by")
            approved["applied_in"] = _ref(event)
    return list(requests.values())


def _stage(ref: Any) -> Any:
    return ref.get("position") if isinstance(ref, dict) else ref


@evidence_section("stage_history")
def _stage_history(subject: EvidenceSubject, until_sequence: int) -> dict[str, Any]:
    """The plans as they stand, and every stage movement in order: plan set, advanced, rolled back,
    paused, resumed, killed and retired, with who, why, under whose approval, forced or break-glass."""
    wanted = set(subject.flag_states)
    plans = {f"{s.flag.key}@{s.environment.key}": plan_snapshot(s)
             for s in FlagState.objects.select_related("flag", "environment").filter(flag__key__in=subject.flags)
             if not wanted or f"{s.flag.key}@{s.environment.key}" in wanted}
    moves = []
    for event in _events(subject.flag_state_q() & Q(action__in=STAGE_ACTIONS), until_sequence).iterator():
        after = _after(event)
        before = event.before if isinstance(event.before, dict) else {}
        moves.append({
            **_ref(event), "flag_state": event.object_key,
            "stage": {"before": before.get("stage"), "after": after.get("stage")},
            "percentage": {"before": before.get("percentage"), "after": after.get("percentage")},
            "from_stage": _stage(after.get("from_stage")), "to_stage": _stage(after.get("to_stage")),
            "plan": after.get("plan") if event.action == "flag_state.plan_set" else None,
            "approval": after.get("approval"), "forced": bool(after.get("forced")),
            "break_glass": bool(after.get("break_glass")),
        })
    return {"plans": plans, "movements": moves}


@evidence_section("guardrails")
def _guardrails(subject: EvidenceSubject, until_sequence: int) -> dict[str, Any]:
    """The limits as configured over time, and every time they acted: each breach with its figures and
    what was done (pause, roll back, kill), each automatic advance with the figures that allowed it."""
    configured, results = [], []
    for event in _events(subject.flag_state_q(), until_sequence).iterator():
        after = _after(event)
        guardrail = after.get("guardrail")
        if event.action == "flag_state.guardrails_set":
            configured.append({**_ref(event), "flag_state": event.object_key, "limits": guardrail,
                               "approval": after.get("approval")})
        elif isinstance(guardrail, dict):
            results.append({**_ref(event), "flag_state": event.object_key,
                            "outcome": "breached" if guardrail.get("breaches") else "healthy",
                            "breaches": guardrail.get("breaches") or [], "figures": guardrail.get("figures"),
                            "stage": after.get("stage")})
    wanted = set(subject.flag_states)
    last = {}
    for state in FlagState.objects.select_related("flag", "environment").filter(flag__key__in=subject.flags):
        key = f"{state.flag.key}@{state.environment.key}"
        if not wanted or key in wanted:
            last[key] = last_check(state.pk)
    return {"configured": configured, "results": results, "last_checks": last}


@evidence_section("readiness_at_advances")
def _readiness_at_advances(subject: EvidenceSubject, until_sequence: int) -> list[dict[str, Any]]:
    """The readiness report as it stood at each advance (recorded in the advance's own audit event)."""
    return [{**_ref(event), "flag_state": event.object_key, "to_stage": _stage(_after(event).get("to_stage")),
             "readiness": _after(event).get("readiness")}
            for event in _events(subject.flag_state_q() & Q(action__in=ADVANCE_ACTIONS), until_sequence).iterator()]


@evidence_section("break_glass")
def _break_glass(subject: EvidenceSubject, until_sequence: int) -> list[dict[str, Any]]:
    """Kills and rollbacks that skipped the approval a change would need, and who reviewed them after."""
    acknowledged = {}
    for event in _events(_review_items_q(subject), until_sequence).iterator():
        after = _after(event)
        acknowledged[after.get("audit_sequence")] = {**_ref(event), "note": after.get("note")}
    return [{**_ref(event), "flag_state": event.object_key,
             "bypassed_change_requests": _after(event).get("pending_change_requests") or [],
             "acknowledged": acknowledged.get(event.sequence)}
            for event in _events(_break_glass_q(subject), until_sequence).iterator()]


@evidence_section("mismatch_groups")
def _mismatch_groups(subject: EvidenceSubject, until_sequence: int) -> dict[str, Any]:
    """The kinds of difference the comparisons found (current counts), with the audited known marks."""
    wanted = set(subject.flag_states)
    groups = {}
    for state in FlagState.objects.select_related("flag", "environment").filter(flag__key__in=subject.flags):
        key = f"{state.flag.key}@{state.environment.key}"
        if not wanted or key in wanted:
            groups[key] = mismatch_summary(state)
    marks = [{**_ref(event), "group": event.object_key, "known": _after(event).get("known"),
              "approval": _after(event).get("approval")}
             for event in _events(_mismatch_groups_q(subject), until_sequence).iterator()]
    return {"by_flag_state": groups, "marks": marks}
