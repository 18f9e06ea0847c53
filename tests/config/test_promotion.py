"""Promotion: plan, guardrails and targeting copied from staging to production as one reviewable change."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def staged(demo: None) -> None:
    from common.actors import Actor
    from rollout.plans.guardrails import guardrail_set
    from rollout.plans.stages import plan_set, plan_template

    system = Actor.system("test")
    plan_set(actor=system, flag="customer-search", environment="staging", version=None,
             stages=plan_template(internal_cohorts=["internal-staff"], soak_seconds=600))
    guardrail_set(actor=system, flag="customer-search", environment="staging", version=None, max_error_rate=2,
                  action="kill")


def _state(env: str) -> Any:
    from rollout.models import FlagState

    return FlagState.objects.get(flag__key="customer-search", environment__key=env)


def test_promote__editor_to_production__one_change_request_holding_the_copy(
        staged: None, actors: dict[str, Any], audit_events: Any) -> None:
    from actions.submit import change_request_approve, submit_state
    from rollout.plans.promotion import promotion_of
    from rollout.snapshots import guardrail_snapshot, plan_snapshot

    before_pct = _state("production").percentage
    outcome = submit_state(actor=actors["editor"], flag="customer-search", environment="production",
                           action="flag_state.promoted", params=promotion_of("customer-search", "staging"),
                           reason="same plan as staging")

    cr = outcome.change_request
    assert cr is not None and cr.summary.startswith("promote the plan, guardrails and targeting of customer-search")
    assert [e.action for e in audit_events()] == ["change_request.created"]

    seen = len(audit_events())
    change_request_approve(actor=actors["approver"], change_request=cr.pk)
    production = _state("production")
    [event] = audit_events()[seen:]
    assert event.action == "flag_state.promoted" and event.after["promoted_from"] == "staging"
    assert event.after["approval"]["change_request"] == cr.pk
    assert plan_snapshot(production) == plan_snapshot(_state("staging"))
    assert guardrail_snapshot(production.guardrail) == guardrail_snapshot(_state("staging").guardrail)
    assert production.percentage == before_pct  # the percentage reached is not promoted
    assert sorted(c.key for c in production.include_cohorts.all()) == []  # staging's targeting: no cohorts
    assert production.overrides == {}


def test_promote__plan_started_on_destination__refused_409(staged: None, actors: dict[str, Any]) -> None:
    from actions.submit import submit_state
    from common.errors import Conflict
    from rollout.plans.promotion import promotion_of
    from rollout.plans.stages import plan_set, rollout_advance

    admin = actors["admin"]
    plan_set(actor=admin, flag="customer-search", environment="production", version=None,
             stages=[{"name": "one", "percentage": 1}])
    rollout_advance(actor=admin, flag="customer-search", environment="production")

    with pytest.raises(Conflict, match="has started"):
        submit_state(actor=admin, flag="customer-search", environment="production", action="flag_state.promoted",
                     params=promotion_of("customer-search", "staging"))


def test_promote_endpoint__admin__applied_200(staged: None, admin_api: Any) -> None:
    response = admin_api.post("/api/v1/flags/customer-search/states/production/promote/",
                              {"from_environment": "staging", "reason": "go"}, format="json")

    assert response.status_code == 200, response.content
    assert len(response.json()["rollout"]["stages"]) == 8


def test_promote_endpoint__same_environment__400(staged: None, admin_api: Any) -> None:
    response = admin_api.post("/api/v1/flags/customer-search/states/staging/promote/",
                              {"from_environment": "staging"}, format="json")

    assert response.status_code == 400
    assert "source" in response.json()["error"]["fields"]


def test_promote_button__flag_page__shown_and_requests_approval(staged: None, actors: dict[str, Any]) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from rollout.models import ChangeRequest

    client = Client()
    client.force_login(get_user_model().objects.get(username="cfg-editor"))
    page = client.get("/flags/customer-search/").content.decode()
    assert "Request: Promote from Staging" in page

    response = client.post("/flags/customer-search/production/promote/",
                           {"from_environment": "staging", "version": _state("production").version},
                           HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    cr = ChangeRequest.objects.get(status="pending")
    assert cr.action == "flag_state.promoted" and cr.params["source"] == "staging"
    assert f"change request #{cr.pk}" in response.content.decode()
