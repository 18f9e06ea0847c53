"""The audit log pages: filters, diffs, per-object history, and who may read them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui_support import HTMX, signed_in, text

pytestmark = pytest.mark.django_db


@pytest.fixture
def changes(flag: Any, actor: Any) -> None:
    from rollout.services.flags import flag_state_kill, flag_state_update

    flag_state_update(actor=actor, flag="invoice-engine", environment="staging", version=None, enabled=True,
                      percentage_value=30)
    flag_state_kill(actor=actor, flag="invoice-engine", environment="staging", reason="incident 42")


def test_audit_log__filtered_by_action__only_those_events(changes: Any) -> None:
    body = text(signed_in("compliance").get("/audit/?action=flag_state.killed", **HTMX))
    assert body.count("<tr>") == 2  # header row + one event
    assert "flag_state.killed" in body and "flag.created" not in body


def test_audit_log__time_and_actor_filters__empty_state(changes: Any) -> None:
    client = signed_in("viewer")
    assert "No event matches these filters." in text(client.get("/audit/?since=2999-01-01T00:00", **HTMX))
    assert "No event matches these filters." in text(client.get("/audit/?actor=nobody", **HTMX))


def test_audit_event__update__diff_marks_changed_fields(changes: Any) -> None:
    from audit.models import AuditEvent

    event = AuditEvent.objects.get(action="flag_state.killed")
    body = text(signed_in("compliance").get(f"/audit/events/{event.sequence}/", **HTMX))
    assert 'class="changed"' in body and "enabled" in body and "incident 42" in body


def test_object_history__flag_state__every_event_of_that_object(changes: Any) -> None:
    body = text(signed_in("compliance").get("/audit/history/flag_state/invoice-engine@staging/"))
    assert "flag_state.updated" in body and "flag_state.killed" in body and "flag.created" not in body


def test_audit_export__small__streamed_with_only_the_filtered_events(changes: Any) -> None:
    response = signed_in("compliance").post("/audit/export/", {"format": "jsonl", "action": "flag_state.killed"})
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    lines = b"".join(response.streaming_content).decode().strip().splitlines()
    assert len(lines) == 1 and '"flag_state.killed"' in lines[0]


def test_audit_export__large__background_with_progress_then_download(
    changes: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.TURNOUT_AUDIT_EXPORT_ASYNC_THRESHOLD = 1
    client = signed_in("compliance")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/audit/export/", {"format": "csv"})
    assert response.status_code == 302
    body = text(client.get(response["Location"]))
    assert "Ready." in body and "/download" in body and "Signed manifest" in body


def test_audit_export_and_verify__viewer__403(changes: Any) -> None:
    client = signed_in("viewer")
    assert client.post("/audit/export/", {"format": "csv"}).status_code == 403
    assert client.post("/audit/verify/", **HTMX).status_code == 403


def test_audit_verify__intact_chain__verified(changes: Any) -> None:
    body = text(signed_in("compliance").post("/audit/verify/", **HTMX))
    assert "Verified:" in body
