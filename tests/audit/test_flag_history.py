"""Issue 18: one history per flag — its own events and, in every environment, its states, plans,
guardrails, kill switch, change requests and mismatch groups — from one events filter that the API,
the page and exports share (``flag=KEY``)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui_support import signed_in, text

pytestmark = pytest.mark.django_db


@pytest.fixture
def lived(flag: Any, actor: Any) -> None:
    """A flag that went through a plan, guardrails, a kill, and a change request in production; and a
    second flag whose key starts with the first one's (its events must not leak in)."""
    from actions.submit import submit_state
    from common.actors import Actor
    from rollout.access.users import user_create
    from rollout.plans.guardrails import guardrail_set
    from rollout.plans.stages import plan_set, plan_template
    from rollout.services.flags import flag_create, flag_state_kill, flag_state_update

    plan_set(actor=actor, flag="invoice-engine", environment="staging", version=None,
             stages=plan_template(soak_seconds=0))
    guardrail_set(actor=actor, flag="invoice-engine", environment="staging", version=None, max_error_rate=5)
    flag_state_update(actor=actor, flag="invoice-engine", environment="staging", version=None, enabled=True,
                      percentage_value=10)
    flag_state_kill(actor=actor, flag="invoice-engine", environment="staging", reason="incident 7")
    editor = user_create(actor=actor, username="eddie", password=None, roles=["editor"])
    outcome = submit_state(actor=Actor.for_user(editor), flag="invoice-engine", environment="production",
                           action="flag_state.updated", params={"percentage": "10"})
    assert outcome.change_request is not None
    flag_create(actor=actor, key="invoice-engine-v2", workload="billing")
    flag_state_update(actor=actor, flag="invoice-engine-v2", environment="staging", version=None, enabled=True)


def _actions(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["action"], e["environment"]) for e in events]


def test_events_api__flag_filter__everything_about_that_flag_and_nothing_else(lived: Any, api_as: Any) -> None:
    body = api_as("viewer").get("/api/v1/audit/events/?flag=invoice-engine&limit=100").json()
    assert _actions(body["results"]) == [
        ("flag.created", ""),
        ("flag_state.plan_set", "staging"),
        ("flag_state.guardrails_set", "staging"),
        ("flag_state.updated", "staging"),
        ("flag_state.killed", "staging"),
        ("change_request.created", "production"),
    ]
    assert {e["object_key"] for e in body["results"]} >= {"invoice-engine", "invoice-engine@staging"}


def test_events_api__flag_filter_with_environment__narrows(lived: Any, api_as: Any) -> None:
    body = api_as("viewer").get("/api/v1/audit/events/?flag=invoice-engine&environment=production").json()
    assert _actions(body["results"]) == [("change_request.created", "production")]


def test_audit_export__flag_filter__same_events(lived: Any, api_as: Any) -> None:
    response = api_as("compliance").get("/api/v1/audit/export?format=jsonl&flag=invoice-engine")
    assert response.status_code == 200
    lines = b"".join(response.streaming_content).decode().strip().splitlines()
    assert len(lines) == 6 and all("invoice-engine-v2" not in line for line in lines)


def test_flag_history_page__lists_kill_plan_guardrails_and_change_request(lived: Any) -> None:
    body = text(signed_in("viewer").get("/flags/invoice-engine/history/"))
    for action in ("flag.created", "flag_state.plan_set", "flag_state.guardrails_set", "flag_state.killed",
                   "change_request.created"):
        assert f"<code>{action}</code>" in body, action
    assert "invoice-engine-v2" not in body
    assert 'href="/api/v1/audit/events/?flag=invoice-engine"' in body


def test_flag_history_page__environment_and_scope_filters(lived: Any) -> None:
    client = signed_in("viewer")
    body = text(client.get("/flags/invoice-engine/history/?environment=staging&scope=flag_state"))
    assert "<code>flag_state.killed</code>" in body
    assert "<code>flag.created</code>" not in body and "<code>change_request.created</code>" not in body


def test_flag_page__flag_history_link__goes_to_the_whole_history(lived: Any) -> None:
    body = text(signed_in("viewer").get("/flags/invoice-engine/"))
    assert 'href="/flags/invoice-engine/history/">Flag history</a>' in body
