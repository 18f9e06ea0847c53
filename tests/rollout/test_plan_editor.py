"""Issue 18: the stage editor — custom stages, soak times, gates, cohorts and start times in the UI, with the
API's validation (its own input serializer, then the plan service) and through the action layer."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui_support import changes, signed_in, text

pytestmark = pytest.mark.django_db
EDITOR = "/flags/invoice-engine/staging/plan/edit/"


def _post(rows: list[dict[str, Any]], *, version: int, op: str = "save", reason: str = "") -> dict[str, Any]:
    data: dict[str, Any] = {"stages-count": str(len(rows)), "version": str(version), "op": op, "reason": reason}
    for n, row in enumerate(rows):
        defaults = {"percentage": "0", "compare_percentage": "0", "soak": "0", "soak_unit": "hours", "gate": "manual",
                    "scheduled_at": ""}
        for name, value in {**defaults, **row}.items():
            data[f"stages-{n}-{name}"] = value
    return data


def _state() -> Any:
    from rollout.models import FlagState

    return FlagState.objects.get(flag__key="invoice-engine", environment__key="staging")


@pytest.fixture
def pilot(flag: Any, actor: Any) -> None:
    from cohorts.services import cohort_create

    cohort_create(actor=actor, key="pilot-eu", name="EU pilot")


def test_plan_editor__new_rollout__starts_from_the_standard_template(flag: Any) -> None:
    body = text(signed_in("editor").get(EDITOR))
    assert body.count('name="stages-') == 8 * 8 + 1  # 8 fields a stage (no cohorts yet) + the count
    assert 'value="validate"' in body and 'value="retire legacy"' in body
    assert 'name="stages-count" value="8"' in body


def test_plan_editor__custom_stages__plan_set_through_the_action_layer(pilot: Any, audit_events: Any) -> None:
    from rollout.snapshots import plan_snapshot

    rows = [
        {"name": "shadow", "compare_percentage": "50", "soak": "30", "soak_unit": "minutes", "gate": "auto"},
        {"name": "pilot", "include_cohorts": "pilot-eu", "soak": "2", "soak_unit": "days"},
        {"name": "half", "percentage": "50", "compare_percentage": "5", "include_cohorts": "pilot-eu",
         "soak": "6", "soak_unit": "hours", "scheduled_at": "2031-01-05T09:30"},
        {"name": "all", "percentage": "100", "include_cohorts": "pilot-eu", "retires_legacy": "on"},
    ]
    response = signed_in("editor").post(EDITOR, _post(rows, version=_state().version, reason="custom plan"))
    assert response.status_code == 302 and response["Location"].startswith("/flags/invoice-engine/?env=staging")
    plan = plan_snapshot(_state())
    assert [(s["name"], s["percentage"], s["compare_percentage"], s["min_soak_seconds"], s["gate"])
            for s in plan] == [("shadow", 0, 50, 1800, "auto"), ("pilot", 0, 0, 172_800, "manual"),
                               ("half", 50, 5, 21_600, "manual"), ("all", 100, 0, 0, "manual")]
    assert plan[1]["include_cohorts"] == ["pilot-eu"]
    assert plan[2]["scheduled_at"] == "2031-01-05T09:30:00+00:00"
    assert plan[3]["retires_legacy"] is True
    [event] = [e for e in changes(audit_events) if e.action == "flag_state.plan_set"]
    assert event.reason == "custom plan" and [s["name"] for s in event.after["plan"]] == ["shadow", "pilot", "half",
                                                                                          "all"]


def test_plan_editor__percentage_falls__422_next_to_that_stage_and_nothing_saved(flag: Any,
                                                                                   audit_events: Any) -> None:
    rows = [{"name": "a", "percentage": "30"}, {"name": "b", "percentage": "10"}]
    response = signed_in("editor").post(EDITOR, _post(rows, version=_state().version))
    assert response.status_code == 422
    body = text(response)
    row = body[body.index('id="stage-1"'):]
    assert "cannot be lower than the stage before (roll back instead)" in row[:row.index("</tr>")]
    assert _state().stages.count() == 0 and [e for e in changes(audit_events) if e.action == "flag_state.plan_set"] == []


def test_plan_editor__bad_fields__the_api_serializer_s_messages_per_stage(flag: Any) -> None:
    from tests.api.conftest import bearer_client, make_user

    api_client = bearer_client(make_user("api-admin", ["admin"])[1])
    rows = [{"name": "a", "percentage": "150"}, {"name": "", "soak": "-1"}]
    body = text(signed_in("editor").post(EDITOR, _post(rows, version=_state().version)))
    api = api_client.put("/api/v1/flags/invoice-engine/states/staging/stages/", {
        "version": _state().version, "stages": [{"name": "a", "percentage": 150}, {"name": "", "min_soak_seconds": -1}]},
        format="json").json()["error"]["fields"]
    for message in (*api["stages.0.percentage"], *api["stages.1.name"], *api["stages.1.min_soak_seconds"]):
        assert message.replace("'", "&#x27;") in body, message
    assert _state().stages.count() == 0


def test_plan_editor__add_and_remove__rows_change_and_nothing_is_saved(flag: Any, audit_events: Any) -> None:
    client = signed_in("editor")
    version = _state().version
    body = text(client.post(EDITOR, _post([{"name": "a", "percentage": "5"}], version=version, op="add")))
    assert 'name="stages-count" value="2"' in body and 'id="stages-1-name" name="stages-1-name" value="stage 2"' in body
    body = text(client.post(EDITOR, _post([{"name": "a"}, {"name": "b"}], version=version, op="remove-0")))
    assert 'name="stages-count" value="1"' in body and 'value="b"' in body and 'value="a"' not in body
    assert [e for e in changes(audit_events) if e.action == "flag_state.plan_set"] == []


def test_plan_editor__editor_in_an_approval_environment__change_request(flag: Any) -> None:
    from rollout.models import ChangeRequest

    client = signed_in("editor")
    url = "/flags/invoice-engine/production/plan/edit/"
    assert "Request approval for this plan" in text(client.get(url))
    from rollout.models import FlagState

    state = FlagState.objects.get(flag__key="invoice-engine", environment__key="production")
    response = client.post(url, _post([{"name": "only", "percentage": "10"}], version=state.version))
    assert response.status_code == 302
    cr = ChangeRequest.objects.get()
    assert cr.action == "flag_state.plan_set" and cr.params["stages"][0]["name"] == "only"
    assert state.stages.count() == 0


def test_plan_editor__admin_in_an_approval_environment__applies_directly(flag: Any) -> None:
    client = signed_in("admin")
    url = "/flags/invoice-engine/production/plan/edit/"
    body = text(client.get(url))
    assert "Request approval" not in body and "Set the plan" in body


def test_plan_editor__viewer__403(flag: Any) -> None:
    client = signed_in("viewer")
    assert client.get(EDITOR).status_code == 403
    assert client.post(EDITOR, _post([{"name": "a"}], version=1)).status_code == 403
