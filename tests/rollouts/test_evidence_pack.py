"""The evidence pack of a whole cutover: approvals, stage history, guardrail results and rollbacks,
the readiness report at each advance, break-glass reviews and mismatch groups, all in one signed zip."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime
from typing import Any

import pytest

from actions.submit import (
    change_request_approve,
    change_request_reject,
    review_item_acknowledge,
    submit_state,
)
from common import clock
from common.actors import Actor
from rollout.models import FlagState, MismatchGroup, ReviewItem
from rollout.plans.guardrails import guardrail_check, guardrail_set
from rollout.plans.stages import plan_set, plan_template, rollout_advance
from rollout.services.flags import flag_state_kill
from rollout.telemetry.mismatches import mismatch_group_mark_known
from tests.rollouts.conftest import add_metrics

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 26, 9, 0, 30, tzinfo=UTC)


def _compliance_client() -> Any:
    from rest_framework.test import APIClient

    from rollout.access.keys import api_token_create
    from rollout.access.users import user_create

    user_create(actor=Actor.system("setup"), username="carol", password=None, roles=["compliance"])
    secret = api_token_create(actor=Actor.system("setup"), username="carol", name="evidence")[1]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def cutover(flag: Any, cohorts: None, people: dict[str, Actor]) -> dict[str, Any]:
    """invoice-engine: staging advanced by hand and automatically, then rolled back by its guardrail;
    production (approval needed) planned and started through approved change requests, one request
    rejected, then a break-glass kill acknowledged by a second approver; one known difference."""
    ed, ann, bob = people["ed"], people["ann"], people["bob"]
    staging_id = FlagState.objects.get(flag=flag, environment__key="staging").pk
    out: dict[str, Any] = {}

    def traffic(frozen: Any, *, errors: int = 0) -> None:
        for _ in range(2):
            now = frozen.tick(60)
            add_metrics("staging", flag.key, now, "legacy", calls=200, errors=1, comparisons=20)
            add_metrics("staging", flag.key, now, "parallel", calls=100, errors=errors, comparisons=5, mismatches=1)
        guardrail_check(flag_state_id=staging_id)

    stages = plan_template("standard", internal_cohorts=["staff"], pilot_cohorts=["pilot-eu"], soak_seconds=60)
    with clock.frozen(T0) as frozen:
        plan_set(actor=ed, flag=flag.key, environment="staging", version=None, stages=stages)
        guardrail_set(actor=ed, flag=flag.key, environment="staging", version=None, max_error_rate=5,
                      max_mismatch_rate=10, min_sample_size=50)
        rollout_advance(actor=ed, flag=flag.key, environment="staging", reason="start validation")
        traffic(frozen)
        rollout_advance(actor=ed, flag=flag.key, environment="staging", reason="comparison clean")
        traffic(frozen)  # internal is an auto stage: advanced by the guardrail check
        traffic(frozen, errors=30)  # the parallel path fails: rolled back by the guardrail
        group = MismatchGroup.objects.create(
            flag_state_id=staging_id, fingerprint="a" * 64, shape=[["$.total", "changed", "int", "int"]],
            example={"legacy": {"total": 1}, "parallel": {"total": 2}}, count=7, first_seen=frozen.now(),
            last_seen=frozen.now())
        mismatch_group_mark_known(actor=ed, flag=flag.key, environment="staging", group=group.pk,
                                  reason="rounding fixed in legacy only")

        plan_cr = submit_state(actor=ed, flag=flag.key, environment="production", action="plan",
                                        params={"stages": stages}, version=None, reason="same plan").change_request
        change_request_approve(actor=ann, change_request=plan_cr.pk, reason="ok")
        rejected = submit_state(actor=ed, flag=flag.key, environment="production", action="update",
                                         params={"compare_percentage": 50}, version=None).change_request
        change_request_reject(actor=bob, change_request=rejected.pk, reason="too much at once")
        start_cr = submit_state(actor=ed, flag=flag.key, environment="production", action="advance",
                                         params={}, version=None, reason="validate in production").change_request
        change_request_approve(actor=ann, change_request=start_cr.pk)
        flag_state_kill(actor=ed, flag=flag.key, environment="production", reason="pager at 3am")
        review_item_acknowledge(actor=bob, review_item=ReviewItem.objects.get().pk, note="right call")
        prod_group = MismatchGroup.objects.create(
            flag_state=FlagState.objects.get(flag=flag, environment__key="production"), fingerprint="b" * 64,
            shape=[["$.rounding", "changed", "str", "str"]], example={}, count=2, first_seen=frozen.now(),
            last_seen=frozen.now())
        known_cr = submit_state(actor=ed, flag=flag.key, environment="production",
                                         action="known_difference", params={"group": prod_group.pk, "known": True},
                                         version=None, reason="legacy rounds half-up").change_request
        change_request_approve(actor=bob, change_request=known_cr.pk)
    out.update(plan_cr=plan_cr.pk, rejected=rejected.pk, start_cr=start_cr.pk, group=group.pk,
               known_cr=known_cr.pk, prod_group=prod_group.pk)
    return out


def _pack(client: Any, url: str) -> tuple[dict[str, Any], bytes]:
    response = client.get(url)
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    return json.loads(zipfile.ZipFile(io.BytesIO(body)).read("summary.json")), body


def test_evidence_pack__whole_cutover__every_section_a_reviewer_asks_for(cutover, settings, tmp_path):
    from audit.management.commands.audit_verify_export import offline_verifier

    settings.TURNOUT_AUDIT_EXPORT_DIR = str(tmp_path / "exports")
    summary, body = _pack(_compliance_client(), "/api/v1/audit/evidence/workload/billing")
    sections = summary["sections"]

    approvals = {a["id"]: a for a in sections["approvals"]}
    assert set(approvals) == {cutover["plan_cr"], cutover["rejected"], cutover["start_cr"], cutover["known_cr"]}
    known = approvals[cutover["known_cr"]]  # carried out by a mismatch group's event, not a flag state's
    assert (known["status"], known["decided_by"], known["applied_in"]["action"]) == (
        "applied", "bob", "mismatch_group.known")
    start = approvals[cutover["start_cr"]]
    assert (start["status"], start["requested_by"], start["decided_by"], start["flag_state"]) == (
        "applied", "ed", "ann", "invoice-engine@production")
    assert start["applied_in"]["action"] == "flag_state.advanced" and start["requested_at"]
    rejected = approvals[cutover["rejected"]]
    assert (rejected["status"], rejected["decided_by"], rejected["decision_reason"], rejected["applied_in"]) == (
        "rejected", "bob", "too much at once", None)
    assert approvals[cutover["plan_cr"]]["applied_in"]["action"] == "flag_state.plan_set"

    stage_history = sections["stage_history"]
    assert [len(stage_history["plans"][k]) for k in sorted(stage_history["plans"])] == [8, 8]
    moves = [(m["flag_state"].split("@")[1], m["action"], m["actor"], m["to_stage"])
             for m in stage_history["movements"]]
    assert moves == [
        ("staging", "flag_state.plan_set", "ed", None),
        ("staging", "flag_state.advanced", "ed", 1),
        ("staging", "flag_state.advanced", "ed", 2),
        ("staging", "flag_state.advanced", "system:auto-advance", 3),
        ("staging", "flag_state.rolled_back", "system:guardrail", 2),
        ("production", "flag_state.plan_set", "ann", None),
        ("production", "flag_state.advanced", "ann", 1),
        ("production", "flag_state.killed", "ed", None),
    ]
    production_start = stage_history["movements"][6]
    assert production_start["approval"] == {"change_request": cutover["start_cr"], "requested_by": "ed",
                                            "approved_by": "ann"}
    assert stage_history["movements"][7]["break_glass"] is True

    guardrails = sections["guardrails"]
    assert [c["limits"]["max_error_rate"] for c in guardrails["configured"]] == [5.0]
    outcomes = [(r["action"], r["outcome"]) for r in guardrails["results"]]
    assert outcomes == [("flag_state.advanced", "healthy"), ("flag_state.rolled_back", "breached")]
    breach = guardrails["results"][1]
    assert breach["breaches"] == ["error rate 30.0% > 5.0%"]
    assert breach["figures"]["parallel"]["errors"] == 60 and breach["figures"]["sample_size"] == 200
    assert guardrails["last_checks"]["invoice-engine@staging"]["status"] == "breached"

    readiness = [(r["flag_state"].split("@")[1], r["to_stage"], r["readiness"]["verdict"])
                 for r in sections["readiness_at_advances"]]
    assert readiness == [("staging", 1, "not_yet"), ("staging", 2, "ready"), ("staging", 3, "ready"),
                         ("production", 1, "not_yet")]
    at_start = sections["readiness_at_advances"][0]["readiness"]
    assert "the plan has not started" in at_start["reasons"] and at_start["guardrails"]["status"] == "inactive"
    at_auto = sections["readiness_at_advances"][2]["readiness"]
    assert (at_auto["guardrails"]["status"], at_auto["soak_seconds_left"]) == ("healthy", 0)
    assert at_auto["guardrails"]["judged"]["parallel"]["calls"] == 200
    assert at_auto["mismatches"] == {"kinds": 0, "samples": 0, "known_samples": 0}

    [glass] = sections["break_glass"]
    assert (glass["actor"], glass["reason"], glass["flag_state"]) == ("ed", "pager at 3am", "invoice-engine@production")
    assert (glass["acknowledged"]["actor"], glass["acknowledged"]["note"]) == ("bob", "right call")

    mismatches = sections["mismatch_groups"]
    [group] = mismatches["by_flag_state"]["invoice-engine@staging"]["groups"]
    assert (group["id"], group["count"], group["known"], group["known_reason"]) == (
        cutover["group"], 7, True, "rounding fixed in legacy only")
    assert [(m["group"], m["known"], m["actor"]) for m in mismatches["marks"]] == [
        (f"invoice-engine@staging#{cutover['group']}", True, "ed"),
        (f"invoice-engine@production#{cutover['prod_group']}", True, "bob")]

    rollbacks = [(r["action"], r["actor"]) for r in sections["rollbacks"]]
    assert rollbacks == [("flag_state.rolled_back", "system:guardrail"), ("flag_state.killed", "ed")]

    events = [json.loads(line) for line in
              zipfile.ZipFile(io.BytesIO(body)).read("events.jsonl").decode().splitlines()]
    types = {e["object_type"] for e in events}
    assert {"change_request", "review_item", "mismatch_group", "flag_state"} <= types
    pack = tmp_path / "cutover.zip"
    pack.write_bytes(body)
    assert offline_verifier().verify(str(pack), report=lambda _: None)["count"] == len(events)


def test_evidence_pack__one_flag_state__sections_only_about_it(cutover, settings, tmp_path):
    settings.TURNOUT_AUDIT_EXPORT_DIR = str(tmp_path / "exports")
    summary, _ = _pack(_compliance_client(), "/api/v1/audit/evidence/flag_state/invoice-engine@production")
    sections = summary["sections"]
    assert {a["flag_state"] for a in sections["approvals"]} == {"invoice-engine@production"}
    assert {m["flag_state"] for m in sections["stage_history"]["movements"]} == {"invoice-engine@production"}
    assert list(sections["stage_history"]["plans"]) == ["invoice-engine@production"]
    assert sections["guardrails"]["results"] == []
    assert [m["group"] for m in sections["mismatch_groups"]["marks"]] == [
        f"invoice-engine@production#{cutover['prod_group']}"]
    assert [r["to_stage"] for r in sections["readiness_at_advances"]] == [1]
    assert len(sections["break_glass"]) == 1


def test_evidence_pack__until_sequence__later_events_left_out(cutover, settings, tmp_path):
    """A pack reads the log up to its own sequence: what happened after is not in it."""
    from audit.evidence import SECTIONS, resolve_subject
    from audit.models import AuditEvent

    kill = AuditEvent.objects.get(action="flag_state.killed")
    subject = resolve_subject("workload", "billing", until_sequence=kill.sequence - 1)
    assert SECTIONS["break_glass"](subject, kill.sequence - 1) == []
    assert [m["action"] for m in SECTIONS["stage_history"](subject, kill.sequence - 1)["movements"]][-1] == (
        "flag_state.advanced")


def test_evidence_pack__acknowledgement_recorded_before_flag_state_was_in_it__still_found(cutover, settings,
                                                                                         tmp_path):
    """Acknowledgements written before they named their flag state are matched by the break-glass
    event's sequence, which every acknowledgement has recorded."""
    from audit.models import AuditEvent
    from audit.services import audit_record, audited_atomic

    kill = AuditEvent.objects.get(action="flag_state.killed")
    with audited_atomic():
        audit_record(actor=Actor.system("older-release"), action="review_item.acknowledged", object_type="review_item",
                     object_key="999", environment="production",
                     after={"id": 999, "action": "kill", "audit_sequence": kill.sequence, "broken_by": "ed",
                            "note": "old shape"})
    settings.TURNOUT_AUDIT_EXPORT_DIR = str(tmp_path / "exports")
    summary, body = _pack(_compliance_client(), "/api/v1/audit/evidence/flag_state/invoice-engine@production")
    [glass] = summary["sections"]["break_glass"]
    assert glass["acknowledged"]["note"] == "old shape"  # the later one, in sequence order
    keys = [json.loads(line)["object_key"] for line in
            zipfile.ZipFile(io.BytesIO(body)).read("events.jsonl").decode().splitlines()]
    assert "999" in keys
