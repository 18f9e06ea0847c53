"""Issue 18's UI papercuts, each as the page showed it (browser-visible ones also in tests/browser)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.ui_support import HTMX, signed_in, text

pytestmark = pytest.mark.django_db


def _state(env: str = "staging") -> Any:
    from rollout.models import FlagState

    return FlagState.objects.get(flag__key="invoice-engine", environment__key=env)


@pytest.fixture
def planned(flag: Any, actor: Any) -> None:
    """A three-stage plan in both environments, not started."""
    from rollout.plans.stages import plan_set

    stages = [{"name": "shadow", "percentage": 0, "compare_percentage": 10},
              {"name": "quarter", "percentage": 25, "compare_percentage": 5},
              {"name": "half", "percentage": 50, "compare_percentage": 5}]
    for env in ("staging", "production"):
        plan_set(actor=actor, flag="invoice-engine", environment=env, version=None, stages=stages)


def test_flag_form__help_text_with_a_placeholder__shown_as_text_not_taken_as_a_tag(flag: Any) -> None:
    body = text(signed_in("editor").get("/flags/new/"))
    assert 'client.decide(&quot;&lt;key&gt;&quot;, ...)' in body
    assert 'client.decide("<key>"' not in body


def test_change_request__percentage__numbers_against_numbers(flag: Any) -> None:
    client = signed_in("editor")
    client.post("/flags/invoice-engine/production/percentage/",
                {"percentage": "10", "version": str(_state("production").version)}, **HTMX)
    from rollout.models import ChangeRequest

    cr = ChangeRequest.objects.get()
    assert cr.params["percentage"] == "10"  # as the request stores it
    body = text(signed_in("approver").get(f"/changes/{cr.pk}/"))
    row = re.search(r'<th scope="row">percentage</th><td class="before">(.*?)</td><td class="after">(.*?)</td>', body)
    assert row is not None and row.groups() == ("0", "10")


def test_flag_card__admin_in_an_approval_environment__no_needs_approval_anywhere(planned: Any) -> None:
    body = text(signed_in("admin").get("/flags/invoice-engine/production/card/", **HTMX))
    assert "needs approval" not in body and "changes need approval" not in body and "Request" not in body
    assert "Start the plan: “shadow”" in body and "approval environment: you apply directly" in body


def test_flag_card__editor_in_an_approval_environment__says_needs_approval(planned: Any) -> None:
    body = text(signed_in("editor").get("/flags/invoice-engine/production/card/", **HTMX))
    assert "changes need approval" in body and "needs approval)" in body
    assert "Request: Start the plan: “shadow”" in body


def test_flag_card__brand_new_flag__first_button_turns_it_on(flag: Any) -> None:
    body = text(signed_in("editor").get("/flags/invoice-engine/staging/card/", **HTMX))
    assert "Resume at 0%" not in body
    assert re.search(r'<button type="submit" class="primary">\s*Turn on\s*</button>', body)


def test_flag_card__killed_at_a_percentage__still_offers_resume_at_it(flag: Any, actor: Any) -> None:
    from rollout.services.flags import flag_state_kill, flag_state_update

    flag_state_update(actor=actor, flag="invoice-engine", environment="staging", version=None, enabled=True,
                      percentage_value=30)
    flag_state_kill(actor=actor, flag="invoice-engine", environment="staging")
    body = text(signed_in("editor").get("/flags/invoice-engine/staging/card/", **HTMX))
    assert "Resume at 30%" in body


def test_rollback__undo__resumes_and_restores_the_stage(planned: Any, actor: Any, audit_events: Any) -> None:
    from rollout.plans.stages import rollout_advance

    rollout_advance(actor=actor, flag="invoice-engine", environment="staging")
    rollout_advance(actor=actor, flag="invoice-engine", environment="staging")
    client = signed_in("admin")
    response = client.post("/flags/invoice-engine/staging/rollback/", {"version": str(_state().version)}, **HTMX)
    assert (_state().stage, _state().paused_at is not None) == (1, True)
    body = text(response)
    assert "Undo: resume at “quarter”" in body
    version = re.search(r'rollback/undo/.*?name="version" value="(\d+)".*?name="stage" value="(\d+)"', body, re.S)
    assert version is not None
    response = client.post("/flags/invoice-engine/staging/rollback/undo/",
                           {"version": version.group(1), "stage": version.group(2), "reason": "undo rollback"}, **HTMX)
    assert response.status_code == 200 and "Rollback undone: back at “quarter”" in text(response)
    state = _state()
    assert (state.stage, state.paused_at, float(state.percentage)) == (2, None, 25.0)
    # One action, one event: an advance that also lifted the rollback's pause.
    last = audit_events()[-2:]
    assert [e.action for e in last] == ["flag_state.rolled_back", "flag_state.advanced"]
    assert last[1].after["resumed_from_pause"] == "rolled back"


def test_rollback__undo_after_the_rollout_moved__409_and_nothing_changes(planned: Any, actor: Any) -> None:
    from rollout.plans.stages import rollout_advance, rollout_rollback
    from rollout.services.flags import flag_state_resume

    rollout_advance(actor=actor, flag="invoice-engine", environment="staging")
    rollout_advance(actor=actor, flag="invoice-engine", environment="staging")
    rollout_rollback(actor=actor, flag="invoice-engine", environment="staging")
    flag_state_resume(actor=actor, flag="invoice-engine", environment="staging")  # someone resumed meanwhile
    before = _state().version
    response = signed_in("admin").post("/flags/invoice-engine/staging/rollback/undo/",
                                       {"version": str(before - 1), "stage": "2"}, **HTMX)
    assert response.status_code == 409 and "Nothing to undo" in text(response)
    assert (_state().version, _state().stage) == (before, 1)


def test_workload_forms__phase_not_offered__the_page_says_it_follows_the_rollouts(flag: Any) -> None:
    client = signed_in("editor")
    assert 'name="phase"' not in text(client.get("/workloads/new/"))
    body = text(client.get("/workloads/billing/"))
    assert 'name="phase"' not in body and "follows its rollouts" in body


def test_workload_edit__phase_posted_anyway__ignored_not_silently_stored(flag: Any, audit_events: Any) -> None:
    from rollout.models import Workload

    workload = Workload.objects.get(key="billing")
    signed_in("editor").post("/workloads/billing/edit/", {
        "name": "Billing", "risk": "medium", "reversibility": workload.reversibility, "phase": "retired",
        "version": str(workload.version)})
    assert Workload.objects.get(key="billing").phase == "development"


def test_flag_page__environments_as_tabs__one_panel_shown(planned: Any) -> None:
    client = signed_in("viewer")
    body = text(client.get("/flags/invoice-engine/"))
    assert re.search(r'<div role="tabpanel" id="env-staging"[^>]*class="envpanel"\s*>', body)
    assert re.search(r'<div role="tabpanel" id="env-production"[^>]*class="envpanel" hidden>', body)
    body = text(client.get("/flags/invoice-engine/?env=production"))
    assert re.search(r'<div role="tabpanel" id="env-staging"[^>]*class="envpanel" hidden>', body)
    assert 'id="tab-production" href="?env=production" aria-controls="env-production" aria-selected="true"' in body


def test_dashboard__rollout_columns__scroll_hint_and_a_labelled_scroll_region(flag: Any) -> None:
    body = text(signed_in("viewer").get("/"))
    assert 'class="scrollhint"' in body and 'role="region" aria-label="Workloads per environment"' in body
