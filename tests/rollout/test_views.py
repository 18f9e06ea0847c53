"""The workload, flag and key pages: roles enforced, services called, partials for htmx."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui_support import HTMX, changes, signed_in, text

pytestmark = pytest.mark.django_db


@pytest.fixture
def live(flag: Any, actor: Any) -> Any:
    from rollout.services.flags import flag_state_update

    return flag_state_update(actor=actor, flag="invoice-engine", environment="staging", version=None, enabled=True,
                             percentage_value=40)


EDIT_POSTS = [
    "/flags/invoice-engine/staging/kill/",
    "/flags/invoice-engine/staging/resume/",
    "/flags/invoice-engine/staging/retire/",
    "/flags/invoice-engine/staging/percentage/",
    "/flags/invoice-engine/staging/targeting/",
    "/workloads/new/",
    "/workloads/billing/edit/",
    "/flags/new/",
    "/keys/sdk/",
    "/keys/tokens/",
]


@pytest.mark.parametrize("url", EDIT_POSTS)
def test_edit_endpoint__viewer__403_and_nothing_changes(live: Any, audit_events: Any, url: str) -> None:
    client = signed_in("viewer")
    response = client.post(url, {"percentage": "100", "version": str(live.version), "key": "x", "name": "x"}, **HTMX)
    assert response.status_code == 403
    assert changes(audit_events) == []


@pytest.mark.parametrize("url", ["/", "/flags/invoice-engine/", "/workloads/billing/"])
def test_read_page__viewer__no_edit_controls(live: Any, url: str) -> None:
    body = text(signed_in("viewer").get(url))
    for control in ("Kill switch", "New workload", "Change the percentage", "Create flag", "Edit workload"):
        assert control not in body


def test_keys_page__compliance_and_editor__403() -> None:
    assert signed_in("compliance").get("/keys/").status_code == 403
    assert signed_in("editor").get("/keys/").status_code == 403


def test_dashboard__filters__only_matching_workloads_in_the_partial(live: Any, actor: Any) -> None:
    from rollout.services.workloads import workload_create

    workload_create(actor=actor, key="search", name="Customer search", risk="low")
    client = signed_in("viewer")
    body = text(client.get("/?risk=medium&status=live", **HTMX))
    assert 'id="workload-table"' in body and "<html" not in body
    assert "Billing" in body and "Customer search" not in body
    assert "No workload matches these filters." in text(client.get("/?q=nothing-like-this", **HTMX))


def test_state_kill__editor__audited_and_card_shows_off_with_undo(live: Any, audit_events: Any) -> None:
    response = signed_in("editor").post("/flags/invoice-engine/staging/kill/", {"reason": "errors up"}, **HTMX)
    assert response.status_code == 200
    body = text(response)
    assert 'id="state-staging"' in body and "off — everyone on legacy" in body and "Undo: resume" in body
    [event] = changes(audit_events)
    assert (event.action, event.actor, event.reason) == ("flag_state.killed", "editor", "errors up")
    assert event.after["enabled"] is False


def test_state_kill__already_off__409_card_with_the_service_message(flag: Any) -> None:
    response = signed_in("editor").post("/flags/invoice-engine/staging/kill/", {}, **HTMX)
    assert response.status_code == 409
    assert "is already off in staging" in text(response)


def test_state_percentage__stale_version__409_with_reload_hint(live: Any, audit_events: Any) -> None:
    response = signed_in("editor").post("/flags/invoice-engine/staging/percentage/",
                                        {"percentage": "50", "version": str(live.version - 1)}, **HTMX)
    assert response.status_code == 409
    assert "Reload and try again" in text(response)
    assert changes(audit_events) == []


def test_state_percentage__out_of_range__422_field_message(live: Any) -> None:
    response = signed_in("editor").post("/flags/invoice-engine/staging/percentage/",
                                        {"percentage": "140", "version": str(live.version)}, **HTMX)
    assert response.status_code == 422
    assert "less than or equal to 100" in text(response)


def test_state_percentage__editor__saved_with_undo_offer(live: Any, audit_events: Any) -> None:
    response = signed_in("editor").post("/flags/invoice-engine/staging/percentage/",
                                        {"percentage": "60", "version": str(live.version), "reason": "widen"}, **HTMX)
    assert response.status_code == 200
    assert "Parallel share 40% → 60%" in text(response) and "Undo (back to 40%)" in text(response)
    [event] = changes(audit_events)
    assert (event.action, event.before["percentage"], event.after["percentage"]) == ("flag_state.updated", 40.0, 60.0)


def test_state_percentage__approval_environment_editor__change_request_not_applied(flag: Any,
                                                                                   audit_events: Any) -> None:
    response = signed_in("editor").post("/flags/invoice-engine/production/percentage/",
                                        {"percentage": "5", "version": "1", "reason": "pilot"}, **HTMX)
    assert response.status_code == 200
    assert "Waiting for approval: change request #" in text(response)
    assert [e.action for e in changes(audit_events)] == ["change_request.created"]
    from rollout.models import FlagState

    assert FlagState.objects.get(flag__key="invoice-engine", environment__key="production").percentage == 0


def test_change_request__approved_by_an_approver__applied_with_both_names(flag: Any, audit_events: Any) -> None:
    from rollout.models import ChangeRequest, FlagState

    signed_in("editor").post("/flags/invoice-engine/production/percentage/", {"percentage": "5", "version": "1"},
                             **HTMX)
    cr = ChangeRequest.objects.get()
    approver = signed_in("approver")
    assert "change percentage of invoice-engine@production" in text(approver.get("/changes/"))
    response = approver.post(f"/changes/{cr.pk}/approve/", {"comment": "fine"}, **HTMX)
    assert response.status_code == 200 and "Approved and applied." in text(response)
    assert "changeDecided" in response["HX-Trigger"]
    event = changes(audit_events)[-1]
    assert (event.action, event.after["percentage"]) == ("flag_state.updated", 5.0)
    assert event.after["approval"]["requested_by"] == "editor" and event.after["approval"]["approved_by"] == "approver"
    assert FlagState.objects.get(flag__key="invoice-engine", environment__key="production").percentage == 5


def test_change_request__requester_approves_own__403(flag: Any) -> None:
    from rollout.models import ChangeRequest

    client = signed_in("approver")
    client.post("/flags/invoice-engine/production/percentage/", {"percentage": "5", "version": "1"}, **HTMX)
    cr = ChangeRequest.objects.get()
    assert client.post(f"/changes/{cr.pk}/approve/", {}, **HTMX).status_code == 403
    assert signed_in("editor", "eddie").post(f"/changes/{cr.pk}/reject/", {}, **HTMX).status_code == 403


def test_change_request__rejected__requester_sees_the_comment(flag: Any) -> None:
    from rollout.models import ChangeRequest

    requester = signed_in("editor")
    requester.post("/flags/invoice-engine/production/percentage/", {"percentage": "5", "version": "1"}, **HTMX)
    cr = ChangeRequest.objects.get()
    signed_in("approver").post(f"/changes/{cr.pk}/reject/", {"comment": "wait for the audit"}, **HTMX)
    body = text(requester.get("/changes/"))
    assert "Rejected" in body and "wait for the audit" in body


def test_plan_and_advance__editor_in_staging__stages_applied(flag: Any, audit_events: Any) -> None:
    client = signed_in("editor")
    response = client.post("/flags/invoice-engine/staging/plan/", {"template": "standard", "soak_seconds": "0",
                                                                   "version": "1"}, **HTMX)
    assert response.status_code == 200 and "Plan set: 8 stages" in text(response)
    response = client.post("/flags/invoice-engine/staging/advance/", {"version": "2"}, **HTMX)
    assert "stage 1 of 8" in text(response)
    response = client.post("/flags/invoice-engine/staging/pause/", {"reason": "hold"}, **HTMX)
    assert "Paused" in text(response)
    response = client.post("/flags/invoice-engine/staging/rollback/", {"reason": "bad"}, **HTMX)
    assert "Rolled back one stage" in text(response)
    assert [e.action for e in changes(audit_events)] == ["flag_state.plan_set", "flag_state.advanced",
                                                         "flag_state.paused", "flag_state.rolled_back"]


def test_guardrails__invalid_ratio__422_names_the_field(flag: Any) -> None:
    response = signed_in("editor").post("/flags/invoice-engine/staging/guardrails/", {
        "max_latency_p95_ratio": "0.5", "min_sample_size": "100", "window_seconds": "300", "action": "rollback",
        "version": "1"}, **HTMX)
    assert response.status_code == 422
    assert "greater than or equal to 1" in text(response)


def test_guardrails__editor__saved_and_shown(flag: Any) -> None:
    response = signed_in("editor").post("/flags/invoice-engine/staging/guardrails/", {
        "max_error_rate": "2", "min_sample_size": "100", "window_seconds": "300", "action": "pause",
        "version": "1"}, **HTMX)
    assert response.status_code == 200 and "Guardrails saved" in text(response)


def test_readiness__no_traffic__not_yet_with_reasons(flag: Any) -> None:
    body = text(signed_in("viewer").get("/flags/invoice-engine/staging/readiness/"))
    assert "not yet" in body and "no rollout plan" in body and "No traffic reported" in body


def test_state_impact__new_percentage__share_that_moves(live: Any) -> None:
    body = text(signed_in("viewer").get("/flags/invoice-engine/staging/impact/?percentage=55", **HTMX))
    assert "40% → 55%: about 15% of" in body and "tenant_id" in body and "parallel" in body


def test_state_targeting__bad_override__422_names_the_subject(live: Any) -> None:
    response = signed_in("editor").post("/flags/invoice-engine/staging/targeting/",
                                        {"overrides": "user-1 = sideways", "version": str(live.version)}, **HTMX)
    assert response.status_code == 422
    assert "must be &#x27;legacy&#x27; or &#x27;parallel&#x27;" in text(response)


def test_workload_create__bad_key__form_error_and_nothing_saved(envs: Any, audit_events: Any) -> None:
    response = signed_in("editor").post("/workloads/new/", {"key": "Bad Key", "name": "X", "risk": "low",
                                                            "phase": "development", "reversibility": "stateless"})
    assert response.status_code == 422
    assert "lowercase letters" in text(response)
    assert changes(audit_events) == []


def test_flag_create__editor__redirect_to_flag_page(envs: Any, actor: Any) -> None:
    from rollout.services.workloads import workload_create

    workload_create(actor=actor, key="billing", name="Billing")
    response = signed_in("editor").post("/flags/new/", {"key": "billing", "workload": "billing", "bucket_by": ""},
                                        **HTMX)
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/flags/billing/"


def test_sdk_key_create__admin__secret_shown_once_and_audited(envs: Any, audit_events: Any) -> None:
    client = signed_in("admin")
    response = client.post("/keys/sdk/", {"environment": "staging", "name": "billing-api"}, **HTMX)
    assert response.status_code == 200
    body = text(response)
    assert "Copy it now" in body and 'data-copy="new-secret"' in body
    from rollout.models import SdkKey

    key = SdkKey.objects.get()
    assert key.prefix in body
    assert "Copy it now" not in text(client.get("/keys/"))
    assert [e.action for e in changes(audit_events)] == ["sdk_key.created"]


def test_sdk_key_revoke__admin__revoked_and_listed_as_such(envs: Any, actor: Any, audit_events: Any) -> None:
    from rollout.access.keys import sdk_key_create

    key, _ = sdk_key_create(actor=actor, environment="staging", name="old")
    response = signed_in("admin").post(f"/keys/sdk/{key.prefix}/revoke/", {"reason": "leaked"}, **HTMX)
    assert response.status_code == 200
    assert "revoked" in text(response)
    assert [(e.action, e.reason) for e in changes(audit_events)][-1] == ("sdk_key.revoked", "leaked")


def test_switch_environment__foreign_next__stays_on_this_site(envs: Any) -> None:
    client = signed_in("viewer")
    response = client.post("/environment/", {"environment": "production", "next": "https://evil.example/"})
    assert response["Location"] == "/"
    assert client.session["turnout_environment"] == "production"


def test_pages__anonymous__redirect_to_login(envs: Any) -> None:
    from django.test import Client

    response = Client().get("/flags/x/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
