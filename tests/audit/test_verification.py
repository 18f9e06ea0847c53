"""Background chain verification: the job, its task, its API and its page; a tampered chain through it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command

from audit.models import AuditEvent, AuditVerification
from audit.services import audit_verification_finish, audit_verification_progress, audit_verification_start
from audit.tasks import run_audit_verification
from audit.verify import verify_chain
from common.actors import Actor
from common.errors import AuditUnavailable
from tests.audit.conftest import SETUP
from tests.audit.test_verify import TAMPERING, edit_field, insert_row
from tests.ui_support import HTMX, signed_in, text

pytestmark = pytest.mark.django_db

ALICE = Actor.system("alice")


def _started(capture: Any) -> tuple[AuditVerification, list[Callable[[], Any]]]:
    """A verification requested and committed, its task queued but not yet run: ``run()`` the callbacks."""
    with capture() as callbacks:
        verification = audit_verification_start(actor=ALICE)
    return verification, callbacks


def _run(callbacks: list[Callable[[], Any]]) -> None:
    for callback in callbacks:
        callback()


def _batches(total: int, batch: int = 4) -> list[int]:
    """The ``checked`` figures a walk of ``total`` events reports: 0, then after each page it reads."""
    seen, checked = [0], 0
    while True:
        page = min(batch, total - checked)
        checked += page
        seen.append(checked)
        if page < batch:
            return seen


# --- verify_chain's progress callback ---------------------------------------------------------------------


def test_verify_chain__progress__called_before_and_after_every_batch_report_unchanged(history):
    head = AuditEvent.objects.count()
    calls: list[tuple[int, int]] = []
    report = verify_chain(batch=4, progress=lambda checked, total: calls.append((checked, total)))
    assert report == verify_chain(batch=4)
    assert calls == [(checked, head) for checked in _batches(head)]
    assert calls[-1] == (head, head)


def test_verify_chain__progress_on_a_broken_chain__stops_before_the_bad_batch(history):
    edit_field()  # event 8
    calls: list[tuple[int, int]] = []
    report = verify_chain(batch=4, progress=lambda checked, total: calls.append((checked, total)))
    assert (report.ok, report.first_bad_sequence, report.checked) == (False, 8, 7)
    assert [checked for checked, _ in calls] == [0, 4]


# --- the services and the task (Celery eager, as everywhere in the unit tests) --------------------------


def test_verification__requested__one_event_then_the_task_reports_ok_and_records_it(
        history, django_capture_on_commit_callbacks, audit_events):
    head = AuditEvent.objects.count()
    verification, callbacks = _started(django_capture_on_commit_callbacks)
    assert (verification.status, verification.total, verification.checked) == ("pending", head + 1, 0)
    [started] = audit_events()
    assert (started.action, started.object_type, started.object_key, started.actor) == (
        "audit.verification_started", "audit_verification", str(verification.pk), "system:alice")
    assert started.after == {"head_sequence": head} and verification.audit_sequence == started.sequence

    _run(callbacks)  # the commit: the task runs (eagerly)
    verification.refresh_from_db()
    assert (verification.status, verification.checked, verification.total) == ("ok", head + 1, head + 1)
    assert verification.report == {"ok": True, "checked": head + 1, "last_sequence": head + 1,
                                   "last_hash": started.hash, "head_sequence": head + 1, "head_hash": started.hash,
                                   "first_bad_sequence": None, "problem": ""}
    _, verified = audit_events()
    # "Verified ok up to sequence N at time T, asked for by X": the outcome is in the chain itself.
    assert (verified.action, verified.actor, verified.actor_type, verified.object_key) == (
        "audit.verified", "system:audit-verify", "system", str(verification.pk))
    assert verified.after == {**verification.report, "requested_by": "system:alice",
                              "requested_at_sequence": started.sequence}
    assert (verification.result_sequence, verification.finished_at) == (verified.sequence, verified.occurred_at)
    # Writing the outcome after the walk's head leaves the chain intact.
    assert verify_chain().ok and verify_chain().head_sequence == verified.sequence


def test_verification_task__progress__recorded_after_every_batch_while_running(
        history, django_capture_on_commit_callbacks, monkeypatch):
    import audit.tasks
    from audit.services import audit_verification_progress

    verification, callbacks = _started(django_capture_on_commit_callbacks)
    seen: list[tuple[str, int, int]] = []

    def progress(**kwargs: Any) -> None:
        audit_verification_progress(**kwargs)
        row = AuditVerification.objects.get(pk=verification.pk)
        seen.append((row.status, row.checked, row.total))

    monkeypatch.setattr(audit.tasks, "verify_chain", lambda progress: verify_chain(batch=4, progress=progress))
    monkeypatch.setattr(audit.tasks, "audit_verification_progress", progress)
    _run(callbacks)
    total = verification.audit_sequence
    assert seen == [("running", checked, total) for checked in _batches(total)]
    verification.refresh_from_db()
    assert verification.status == "ok"


def test_verification_task__redelivered__finished_job_untouched_and_recorded_once(
        history, django_capture_on_commit_callbacks, audit_events):
    verification, callbacks = _started(django_capture_on_commit_callbacks)
    _run(callbacks)
    count = len(audit_events())
    assert run_audit_verification.delay(str(verification.pk)).get() == "ok"
    assert len(audit_events()) == count
    # A task that lost the race to a twin finds the job finished: the outcome is recorded once.
    again = audit_verification_finish(actor=SETUP, verification_id=verification.pk, report=verify_chain())
    assert (again.status, again.result_sequence) == ("ok", AuditEvent.objects.get(action="audit.verified").sequence)
    assert len(audit_events()) == count
    # Nor does a late progress update from that twin reopen the job (and so let it be recorded twice).
    audit_verification_progress(verification_id=verification.pk, checked=1, total=2)
    verification.refresh_from_db()
    assert (verification.status, verification.checked) == ("ok", again.checked)
    audit_verification_finish(actor=SETUP, verification_id=verification.pk, report=verify_chain())
    assert len(audit_events()) == count


def test_verification_task__worker_died_mid_walk__redelivered_walks_again_and_finishes(
        history, django_capture_on_commit_callbacks, audit_events):
    verification, _ = _started(django_capture_on_commit_callbacks)  # the first delivery's worker was lost
    AuditVerification.objects.filter(pk=verification.pk).update(status="running", checked=4)
    assert run_audit_verification(str(verification.pk)) == "ok"
    verification.refresh_from_db()
    assert (verification.status, verification.checked) == ("ok", verification.total)
    assert [e.action for e in audit_events()] == ["audit.verification_started", "audit.verified"]


def test_verification_task__unknown_id__nothing_to_do():
    assert run_audit_verification("00000000-0000-0000-0000-000000000001") is None


def test_verification_task__walk_raises__error_kept_no_outcome_event(
        history, django_capture_on_commit_callbacks, audit_events, monkeypatch):
    import audit.tasks

    def broken(**kwargs: Any) -> Any:
        raise ConnectionError("database went away")

    verification, callbacks = _started(django_capture_on_commit_callbacks)
    monkeypatch.setattr(audit.tasks, "verify_chain", broken)
    with pytest.raises(ConnectionError):
        _run(callbacks)
    verification.refresh_from_db()
    assert (verification.status, verification.error, verification.report) == (
        "error", "ConnectionError: database went away", None)
    assert verification.finished_at is not None and verification.result_sequence is None
    assert [e.action for e in audit_events()] == ["audit.verification_started"]


@pytest.mark.parametrize("how", sorted(set(TAMPERING) - {"insert_row"}))
def test_verification__tampered_chain__job_fails_naming_the_first_bad_sequence(
        history, django_capture_on_commit_callbacks, audit_events, how):
    tamper, first_bad, problem = TAMPERING[how]
    tamper()
    expected = first_bad()
    verification, callbacks = _started(django_capture_on_commit_callbacks)
    _run(callbacks)
    verification.refresh_from_db()
    assert (verification.status, verification.report["ok"], verification.report["first_bad_sequence"]) == (
        "failed", False, expected)
    assert problem in verification.report["problem"]
    failed = AuditEvent.objects.get(action="audit.verification_failed")
    assert (failed.after["first_bad_sequence"], failed.actor) == (expected, "system:audit-verify")
    assert verification.result_sequence == failed.sequence


def test_verification__row_forged_past_the_head_after_the_request__failed_report_kept_without_event(
        history, django_capture_on_commit_callbacks, audit_events):
    """The forged row takes the sequence the writer needs next, so no outcome event can be appended:
    the job still keeps its report (first bad: the forged row) and says why nothing was recorded."""
    verification, callbacks = _started(django_capture_on_commit_callbacks)
    insert_row()
    with pytest.raises(AuditUnavailable):
        _run(callbacks)
    verification.refresh_from_db()
    assert (verification.status, verification.report["first_bad_sequence"]) == (
        "failed", verification.audit_sequence + 1)
    assert "not written by the audit writer" in verification.report["problem"]
    assert verification.error.startswith("the outcome could not be recorded in the audit log: AuditUnavailable")
    assert verification.result_sequence is None
    assert not AuditEvent.objects.filter(action__in=["audit.verified", "audit.verification_failed"]).exists()


# --- the API ----------------------------------------------------------------------------------------------


def test_verify_api__post__202_location_then_polled_to_the_report(history, api_as, django_capture_on_commit_callbacks):
    client = api_as("compliance")
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post("/api/v1/audit/verify")
    assert response.status_code == 202
    job = response.json()
    assert response["Location"] == job["links"]["self"] == f"/api/v1/audit/verifications/{job['id']}/"
    assert (job["status"], job["checked"], job["progress"], job["report"], job["requested_by"]) == (
        "pending", 0, 0.0, None, client.actor)
    assert client.get(response["Location"]).json()["status"] == "pending"  # not committed yet: not queued
    _run(callbacks)
    body = client.get(response["Location"]).json()
    assert (body["status"], body["progress"], body["checked"], body["total"]) == (
        "ok", 1.0, job["audit_sequence"], job["audit_sequence"])
    assert body["report"]["ok"] is True and body["report"]["head_sequence"] == job["audit_sequence"]
    assert body["result_sequence"] == AuditEvent.objects.get(action="audit.verified").sequence
    assert body["finished_at"] is not None and body["error"] == ""
    # The synchronous GET is unchanged.
    assert client.get("/api/v1/audit/verify").json()["ok"] is True


def test_verify_api__tampered_chain__job_reports_the_first_bad_sequence(
        history, api_as, django_capture_on_commit_callbacks):
    client = api_as("compliance")
    edit_field()
    with django_capture_on_commit_callbacks(execute=True):
        location = client.post("/api/v1/audit/verify")["Location"]
    body = client.get(location).json()
    assert (body["status"], body["report"]["ok"], body["report"]["first_bad_sequence"]) == ("failed", False, 8)
    assert body["report"]["checked"] == body["checked"] == 7


@pytest.mark.parametrize(("role", "expected"), [
    (None, 403), ("viewer", 403), ("editor", 403), ("approver", 403), ("compliance", 202), ("admin", 202),
])
def test_verify_api__roles__only_compliance_and_admin_start_or_read_jobs(history, api_as, role, expected):
    verification = audit_verification_start(actor=SETUP)
    client = api_as(role)
    count = AuditEvent.objects.count()
    response = client.post("/api/v1/audit/verify")
    assert response.status_code == expected
    assert AuditEvent.objects.count() == count + (expected == 202)
    detail = client.get(f"/api/v1/audit/verifications/{verification.pk}/")
    assert detail.status_code == (200 if expected == 202 else 403)
    if expected == 403:
        assert "may not export or verify the audit log" in response.json()["error"]["message"]


def test_verify_api__anonymous__refused():
    from rest_framework.test import APIClient

    client = APIClient()
    assert client.post("/api/v1/audit/verify").status_code in (401, 403)
    assert client.get("/api/v1/audit/verifications/00000000-0000-0000-0000-000000000001/").status_code in (401, 403)
    assert not AuditVerification.objects.exists()


@pytest.mark.parametrize("pk", ["00000000-0000-0000-0000-000000000001", "not-a-uuid", "0"])
def test_verification_api__unknown_id__404_with_the_error_body(history, api_as, pk):
    response = api_as("compliance").get(f"/api/v1/audit/verifications/{pk}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# --- the command stays synchronous --------------------------------------------------------------------------


def test_audit_verify_command__progress__printed_per_batch_on_stderr(history, capsys, monkeypatch):
    import audit.management.commands.audit_verify as command

    monkeypatch.setattr(command, "verify_chain", lambda progress: verify_chain(batch=4, progress=progress))
    head = AuditEvent.objects.count()
    call_command("audit_verify", "--progress")
    out, err = capsys.readouterr()
    assert f"audit chain OK: {head} events" in out
    assert err.splitlines()[0] == f"checked 0 of {head} events"
    assert err.splitlines()[-1] == f"checked {head} of {head} events"
    assert not AuditVerification.objects.exists()


# --- the page: a short chain at once, a long one in the background -----------------------------------------


def test_audit_verify_page__short_chain__verified_at_once_no_job(history, audit_events):
    client = signed_in("compliance")
    count = len(audit_events())
    body = text(client.post("/audit/verify/", **HTMX))
    assert "Verified:" in body and "Verify again" in body
    assert not AuditVerification.objects.exists() and len(audit_events()) == count


def test_audit_verify_page__long_chain__background_job_polled_to_its_report(
        history, settings, django_capture_on_commit_callbacks):
    settings.TURNOUT_AUDIT_VERIFY_SYNC_MAX = 5
    client = signed_in("compliance")
    with django_capture_on_commit_callbacks() as callbacks:
        body = text(client.post("/audit/verify/", **HTMX))
    verification = AuditVerification.objects.get()
    progress_url = f"/audit/verifications/{verification.pk}/"
    assert "runs in the background" in body and f'hx-get="{progress_url}"' in body
    assert 'hx-trigger="every 1s"' in body and "Pending: 0 of" in body
    # While pending the fragment keeps polling; once the job is done it shows the report and stops.
    assert 'hx-trigger="every 1s"' in text(client.get(progress_url, **HTMX))
    _run(callbacks)
    done = text(client.get(progress_url, **HTMX))
    assert "hx-trigger" not in done and "Verified:" in done
    verification.refresh_from_db()
    assert f"event #{verification.result_sequence}" in done
    assert AuditEvent.objects.get(action="audit.verification_started").actor == "compliance"


def test_verification_page__report_kept_but_not_recorded__shows_why_instead_of_failing(
        history, django_capture_on_commit_callbacks):
    """A forged row past the head leaves the job with a report and no outcome event: the page says so."""
    client = signed_in("compliance")  # before the forgery: signing a user up is audited too
    verification, callbacks = _started(django_capture_on_commit_callbacks)
    insert_row()
    with pytest.raises(AuditUnavailable):
        _run(callbacks)
    for extra in ({}, HTMX):
        response = client.get(f"/audit/verifications/{verification.pk}/", **extra)
        assert response.status_code == 200
        body = text(response)
        assert "Not recorded in the audit log:" in body and "hx-trigger" not in body


def test_audit_verify_page__long_chain_without_htmx__redirected_to_the_progress_page(
        history, settings, django_capture_on_commit_callbacks):
    settings.TURNOUT_AUDIT_VERIFY_SYNC_MAX = 5
    edit_field()
    client = signed_in("compliance")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/audit/verify/")
    assert response.status_code == 302
    assert response["Location"] == f"/audit/verifications/{AuditVerification.objects.get().pk}/"
    page = text(client.get(response["Location"]))
    assert "<h1>Chain verification</h1>" in page and "Broken at event #8:" in page


def test_audit_verify_page__viewer__403_and_no_get(history, settings):
    verification = audit_verification_start(actor=SETUP)
    viewer = signed_in("viewer")
    assert viewer.post("/audit/verify/", **HTMX).status_code == 403
    assert viewer.get(f"/audit/verifications/{verification.pk}/").status_code == 403
    assert signed_in("compliance", "carol").get("/audit/verify/").status_code == 405
    assert AuditVerification.objects.count() == 1


# --- a real Celery worker ------------------------------------------------------------------------------------


@pytest.mark.services
def test_verification__on_a_real_celery_worker__progress_then_ok_report(celery_worker_process):
    import time

    from rest_framework.test import APIClient

    from rollout.access.keys import api_token_create
    from rollout.access.users import user_create

    user_create(actor=SETUP, username="carol", password=None, roles=["compliance"])
    _, secret = api_token_create(actor=SETUP, username="carol", name="worker")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    location = client.post("/api/v1/audit/verify")["Location"]
    deadline = time.monotonic() + 60
    while (body := client.get(location).json())["status"] in ("pending", "running"):
        assert time.monotonic() < deadline, body
        time.sleep(0.2)
    assert (body["status"], body["progress"], body["report"]["ok"]) == ("ok", 1.0, True)
    started = AuditEvent.objects.get(action="audit.verification_started")
    assert body["report"]["head_sequence"] == body["audit_sequence"] == started.sequence
    verified = AuditEvent.objects.get(action="audit.verified")
    assert (verified.sequence, verified.actor) == (body["result_sequence"], "system:audit-verify")
    assert verify_chain().ok
