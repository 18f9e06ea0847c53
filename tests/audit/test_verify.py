"""Chain verification catches tampering done behind the application's back (raw SQL, trigger off)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit.chain import event_hash
from audit.models import AuditEvent
from audit.verify import check_rows, verify_chain

pytestmark = pytest.mark.django_db


def _raw(*statements: tuple[str, list[Any]]) -> None:
    """Run SQL as an attacker with table access would: on PostgreSQL, with the append-only trigger disabled."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_no_update_delete")
        for sql, params in statements:
            cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_no_update_delete")


def edit_field() -> None:
    _raw(("UPDATE audit_auditevent SET reason = %s WHERE sequence = 8", ["looked fine"]))


def edit_actor() -> None:
    _raw(("UPDATE audit_auditevent SET actor = %s WHERE sequence = 8", ["system:someone-else"]))


def delete_row() -> None:
    _raw(("DELETE FROM audit_auditevent WHERE sequence = 8", []))


def delete_last_row() -> None:
    last = AuditEvent.objects.order_by("-sequence").first()
    _raw(("DELETE FROM audit_auditevent WHERE sequence = %s", [last.sequence]))


def insert_row() -> None:
    """Append a forged event with a correctly computed hash (the strongest insertion): the head betrays it."""
    last = AuditEvent.objects.order_by("-sequence").first()
    forged = {"sequence": last.sequence + 1, "occurred_at": last.occurred_at, "actor_type": "user",
              "actor": "mallory", "action": "flag_state.updated", "object_type": "flag_state",
              "object_key": "invoice-engine@staging", "environment": "staging", "before": None, "after": None,
              "reason": "", "request_id": ""}
    digest = event_hash(last.hash, forged)
    _raw(("INSERT INTO audit_auditevent (sequence, occurred_at, actor_type, actor, action, object_type, object_key, "
          "environment, before, after, reason, request_id, prev_hash, hash) "
          "VALUES (%s, %s, 'user', 'mallory', 'flag_state.updated', 'flag_state', 'invoice-engine@staging', "
          "'staging', NULL, NULL, '', '', %s, %s)", [forged["sequence"], last.occurred_at, last.hash, digest]))


def swap_rows() -> None:
    _raw(("UPDATE audit_auditevent SET sequence = 1000000 WHERE sequence = 5", []),
         ("UPDATE audit_auditevent SET sequence = 5 WHERE sequence = 6", []),
         ("UPDATE audit_auditevent SET sequence = 6 WHERE sequence = 1000000", []))


def _last() -> int:
    return AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()


TAMPERING: dict[str, tuple[Callable[[], None], Callable[[], int], str]] = {
    "edit_field": (edit_field, lambda: 8, "altered"),
    "edit_actor": (edit_actor, lambda: 8, "altered"),
    "delete_row": (delete_row, lambda: 8, "missing"),
    "delete_last_row": (delete_last_row, lambda: _last() + 1, "missing"),
    "insert_row": (insert_row, lambda: _last(), "not written by the audit writer"),
    "swap_rows": (swap_rows, lambda: 5, "prev_hash"),
}


def test_verify_chain__untouched_history__ok(history):
    report = verify_chain(batch=4)
    assert report.ok and report.first_bad_sequence is None
    assert report.checked == report.head_sequence == AuditEvent.objects.count()
    call_command("audit_verify")


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_verify_chain__tampered_through_raw_sql__reports_first_bad_sequence(history, api_as, how, capsys):
    tamper, first_bad, problem = TAMPERING[how]
    compliance = api_as("compliance")
    tamper()
    expected = first_bad()
    report = verify_chain(batch=4)
    assert (report.ok, report.first_bad_sequence) == (False, expected)
    assert problem in report.problem
    with pytest.raises(CommandError, match=f"BROKEN at sequence {expected}:"):
        call_command("audit_verify")
    body = compliance.get("/api/v1/audit/verify").json()
    assert (body["ok"], body["first_bad_sequence"]) == (False, expected)


def test_check_rows__empty_chain__ok():
    report = check_rows([], head=(0, "0" * 64))
    assert report.ok and report.checked == 0


def test_verify_api__untouched__ok_for_compliance(history, api_as):
    body = api_as("compliance").get("/api/v1/audit/verify").json()
    assert body["ok"] is True and body["first_bad_sequence"] is None and body["checked"] == body["head_sequence"]


def test_audit_writer__row_forged_past_the_head__fails_closed_with_503_and_changes_nothing(history, api_as):
    """A forged row at head + 1 takes the sequence the writer needs: no change can be recorded, so none is
    made — a clear 503 naming the cause instead of a server error, and the flag state left as it was."""
    from rollout.models import FlagState

    admin = api_as("admin")
    insert_row()
    state = FlagState.objects.get(flag__key="invoice-engine", environment__key="staging")
    count = AuditEvent.objects.count()
    response = admin.patch("/api/v1/flags/invoice-engine/states/staging/",
                           {"percentage": 75, "version": state.version, "reason": "widen"}, format="json")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "audit_unavailable" and "audit_verify" in error["message"]
    assert "Nothing was changed" in error["message"]
    state.refresh_from_db()
    assert state.percentage != 75 and AuditEvent.objects.count() == count
    assert verify_chain().problem.startswith("events after")


def test_audit_writer__row_forged_past_the_head__web_ui_answers_503_too(history):
    from rollout.models import FlagState
    from tests.ui_support import HTMX, signed_in, text

    client = signed_in("admin")  # before the forgery: signing a user up is audited too
    insert_row()
    response = client.post("/flags/invoice-engine/staging/resume/", {"reason": "fixed"}, **HTMX)
    assert response.status_code == 503
    assert "audit_verify" in text(response)
    assert FlagState.objects.get(flag__key="invoice-engine", environment__key="staging").enabled is False
