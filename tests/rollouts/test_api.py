from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from common import clock
from rollout.models import FlagState
from rollout.plans.guardrails import guardrail_set
from rollout.plans.stages import rollout_advance
from tests.rollouts.conftest import add_metrics

pytestmark = pytest.mark.django_db

STATE = "/api/v1/flags/invoice-engine/states"


def client_for(username: str) -> APIClient:
    client = APIClient()
    client.force_authenticate(get_user_model().objects.get(username=username))
    return client


def test_plan_put__template_in_plain_env__applied_and_shown(flag, people, cohorts):
    ed = client_for("ed")
    response = ed.put(f"{STATE}/staging/stages/", {"template": "standard", "internal_cohorts": ["staff"],
                                                   "soak_seconds": 30, "version": 1}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["applied"] is True and len(body["rollout"]["stages"]) == 8
    assert body["rollout"]["next_stage"]["name"] == "validate"
    bad = ed.put(f"{STATE}/staging/stages/", {"stages": [{"name": "a", "percentage": 500}]}, format="json")
    assert bad.status_code == 400 and "stages.0.percentage" in bad.json()["error"]["fields"]


def test_advance__editor_in_production__202_then_approver_applies_then_stale_is_409(planned, people):
    ed, ann = client_for("ed"), client_for("ann")
    assert ed.post(f"{STATE}/production/advance/", {}, format="json").status_code == 428  # name the version read
    response = ed.post(f"{STATE}/production/advance/", {"reason": "go", "version": 2}, format="json")
    assert response.status_code == 202
    cr = response.json()["change_request"]
    assert (cr["status"], cr["requested_by"], cr["action"]) == ("pending", "ed", "flag_state.advanced")
    assert ed.post(f"/api/v1/change-requests/{cr['id']}/approve/", {}, format="json").status_code == 403
    listed = ann.get("/api/v1/change-requests/?status=pending").json()["results"]
    assert [c["id"] for c in listed] == [cr["id"]]
    approved = ann.post(f"/api/v1/change-requests/{cr['id']}/approve/", {"reason": "ok"}, format="json")
    assert approved.status_code == 200 and approved.json()["status"] == "applied"
    assert FlagState.objects.get(flag=planned, environment__key="production").stage == 1

    second = ed.post(f"{STATE}/production/advance/", {"version": 3}, format="json").json()["change_request"]
    assert client_for("root").post(f"{STATE}/production/pause/", {"reason": "hold"}, format="json").status_code == 428
    assert client_for("root").post(f"{STATE}/production/pause/", {"reason": "hold", "version": 3},
                                   format="json").status_code == 200
    stale = ann.post(f"/api/v1/change-requests/{second['id']}/approve/", {}, format="json")
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "conflict"
    assert ann.get(f"/api/v1/change-requests/{second['id']}/").json()["status"] == "stale"


def test_rollback_and_pause__viewer__403_editor_200_with_break_glass_review(planned, people, actor):
    rollout_advance(actor=actor, flag=planned.key, environment="production")
    assert client_for("vic").post(f"{STATE}/production/rollback/", {}, format="json").status_code == 403
    version = FlagState.objects.get(flag=planned, environment__key="production").version
    response = client_for("ed").post(f"{STATE}/production/rollback/", {"reason": "pager", "version": version},
                                     format="json")
    assert response.status_code == 200 and response.json()["rollout"]["stage"] == 0
    reviews = client_for("ann").get("/api/v1/review-items/?open=1").json()["results"]
    assert [(r["action"], r["actor"]) for r in reviews] == [("rollback", "ed")]
    ack = client_for("ann").post(f"/api/v1/review-items/{reviews[0]['id']}/acknowledge/", {"reason": "ok"},
                                 format="json")
    assert ack.status_code == 200 and ack.json()["acknowledged_by"] == "ann"


def test_gate__states_of_a_rollout__200_ready_409_not_yet_503_failing(planned, people, actor):
    viewer = client_for("vic")
    t0 = clock.now().replace(second=0, microsecond=0) - timedelta(minutes=30)
    with clock.frozen(t0):
        for _ in range(4):
            rollout_advance(actor=actor, flag=planned.key, environment="staging")
    not_yet = viewer.get("/api/v1/gates/invoice-engine/staging")
    assert not_yet.status_code == 409 and "no guardrails configured" in not_yet.json()["reasons"]
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_error_rate=5,
                  min_sample_size=50, window_seconds=3600)
    add_metrics("staging", planned.key, t0 + timedelta(minutes=5), "parallel", calls=100, errors=1)
    ready = viewer.get("/api/v1/gates/invoice-engine/staging")
    assert ready.status_code == 200, ready.json()
    assert ready.json()["ready"] is True and ready.json()["verdict"] == "ready"
    add_metrics("staging", planned.key, t0 + timedelta(minutes=6), "parallel", calls=100, errors=60)
    failing = viewer.get("/api/v1/gates/invoice-engine/staging")
    assert failing.status_code == 503
    assert failing.json()["reasons"] == ["guardrail breached: error rate 30.5% > 5.0%"]
    argo = viewer.get("/api/v1/gates/invoice-engine/staging?always_ok=1")
    assert (argo.status_code, argo.json()["verdict"]) == (200, "failing")
    assert viewer.get("/api/v1/gates/invoice-engine/moon").status_code == 404


def test_readiness__with_metrics__side_by_side_percentiles_verdict_and_soak(planned, people, actor):
    now = datetime.now(UTC)
    rollout_advance(actor=actor, flag=planned.key, environment="staging", now=now - timedelta(seconds=200))
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_mismatch_rate=5,
                  min_sample_size=10)
    add_metrics("staging", planned.key, now, "legacy", calls=200, errors=2, comparisons=20, mismatches=1)
    with clock.frozen(now):
        report = client_for("vic").get(f"{STATE}/staging/readiness/?window=600").json()
    assert (report["legacy"]["calls"], report["legacy"]["error_rate"], report["legacy"]["p50_ms"]) == (200, 1.0, 3.75)
    assert report["legacy"]["mismatch_rate"] == 5.0 and report["parallel"]["calls"] == 0
    assert report["window"]["seconds"] == 600 and report["series"][0]["legacy"]["calls"] == 200
    assert report["verdict"] == "not_yet" and report["soak_seconds_left"] == 400
    assert report["reasons"] == ["soak time left: 400 s"]
    assert client_for("vic").get(f"{STATE}/staging/readiness/?window=abc").status_code == 400


def test_guardrails_put__editor_in_production__change_request(planned, people):
    response = client_for("ed").put(f"{STATE}/production/guardrails/", {"max_error_rate": 2, "action": "kill", "version": 2},
                                    format="json")
    assert response.status_code == 202
    cr = response.json()["change_request"]
    assert cr["params"] == {"max_error_rate": 2.0, "action": "kill"}
    assert client_for("bob").post(f"/api/v1/change-requests/{cr['id']}/approve/", {}, format="json").status_code == 200
    got = client_for("vic").get(f"{STATE}/production/guardrails/").json()
    assert got["config"]["max_error_rate"] == 2.0 and got["config"]["action"] == "kill"


def test_advance__resume_after_a_rollback__stage_back_and_pause_lifted_in_one_event(planned, people):
    """Issue 18: undoing a rollback restores the stage, not only lifts the pause (the UI's Undo uses this)."""
    from audit.models import AuditEvent
    from common.actors import Actor
    from rollout.plans.stages import rollout_rollback

    system = Actor.system("test")
    rollout_advance(actor=system, flag="invoice-engine", environment="staging")
    rollout_advance(actor=system, flag="invoice-engine", environment="staging")
    rollout_rollback(actor=system, flag="invoice-engine", environment="staging", reason="errors")
    state = FlagState.objects.get(flag=planned, environment__key="staging")
    ed = client_for("ed")
    refused = ed.post(f"{STATE}/staging/advance/", {"version": state.version}, format="json")
    assert refused.status_code == 409 and "paused" in refused.json()["error"]["message"]
    response = ed.post(f"{STATE}/staging/advance/", {"version": state.version, "resume": True}, format="json")
    assert response.status_code == 200, response.json()
    state.refresh_from_db()
    assert (state.stage, state.paused_at) == (2, None)
    event = AuditEvent.objects.order_by("-sequence").first()
    assert event.action == "flag_state.advanced" and event.after["resumed_from_pause"] == "rolled back: errors"
