"""The one writer of the audit log."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from audit.chain import GENESIS_HASH, event_hash
from audit.evidence import evidence_queryset, resolve_subject
from audit.filters import clean_filters, filtered_events
from audit.models import (
    AuditChainHead,
    AuditEvent,
    AuditExport,
    AuditVerification,
    ExportFormat,
    ExportKind,
    ExportStatus,
    LoginFailureWindow,
    NotificationOutbox,
    VerificationStatus,
)
from audit.names import Action
from common.actors import Actor
from common.conf import get_setting
from common.errors import AuditUnavailable, NotFound, ValidationFailed
from common.jobs import enqueue, enqueue_or_drop
from common.request_context import current_request_id

logger = logging.getLogger("turnout.audit")

if TYPE_CHECKING:
    from audit.verify import ChainReport


def _jsonable(value: Any) -> Any:
    """What the database will give back: JSON-native values only (so the hash recomputes)."""
    if value is None:
        return None
    return json.loads(json.dumps(value, default=str, allow_nan=False))


def _locked_head() -> AuditChainHead:
    head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        # The head row is made by a migration; should it ever be missing, rebuild it from the last
        # event (never restarting the chain). ``ignore_conflicts`` settles concurrent rebuilders.
        last = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash").first()
        sequence, tip = last if last else (0, GENESIS_HASH)
        AuditChainHead.objects.bulk_create([AuditChainHead(pk=1, sequence=sequence, hash=tip)],
                                           ignore_conflicts=True)
        head = AuditChainHead.objects.select_for_update().get(pk=1)
    return head


def audit_record(
    *,
    actor: Actor,
    action: str,
    object_type: str,
    object_key: str,
    environment: str = "",
    before: Any = None,
    after: Any = None,
    reason: str = "",
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction.

    The chain head row is locked for the rest of the transaction, so concurrent writers take
    sequence numbers one after the other and a rolled-back change leaves no event and no gap.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the change it records")
    head = _locked_head()
    event = AuditEvent(
        sequence=head.sequence + 1,
        occurred_at=timezone.now(),
        actor_type=actor.type,
        actor=actor.label[:150],
        action=action,
        object_type=object_type,
        object_key=str(object_key)[:255],
        environment=environment or "",
        before=_jsonable(before),
        after=_jsonable(after),
        reason=reason or "",
        request_id=current_request_id() or "",
        prev_hash=head.hash,
    )
    event.hash = event_hash(head.hash, vars(event))
    try:
        event.save(force_insert=True)
    except IntegrityError as exc:
        # The head row is locked, so no other writer can hold this number: a row was put past the head
        # behind the writer's back. Fail closed — the change is rolled back with its event — and say why.
        logger.error("audit.chain_blocked", extra={"sequence": event.sequence, "error": str(exc)[:300]})
        raise AuditUnavailable(
            f"the audit log cannot take event {event.sequence}: a row with that sequence or hash already exists "
            "past the chain head, written outside the audit writer. Nothing was changed. Run "
            "'manage.py audit_verify' and restore the chain before making changes.") from exc
    AuditChainHead.objects.filter(pk=1).update(sequence=event.sequence, hash=event.hash)
    if notifiable(action, event.after):
        # Durably, in the change's own transaction: a broker that is down when it commits loses nothing.
        NotificationOutbox.objects.create(sequence=event.sequence, created_at=event.occurred_at)
        sequence = event.sequence
        transaction.on_commit(lambda: _announce(sequence))
    return event


#: Events people may be told about (notifications/kinds.py turns them into notices): the four-eyes
#: decisions, the emergency actions, and any change that carries out an approval.
NOTIFIABLE = frozenset({
    Action.CHANGE_REQUEST_CREATED, Action.CHANGE_REQUEST_APPROVED, Action.CHANGE_REQUEST_REJECTED,
    Action.CHANGE_REQUEST_STALE, Action.FLAG_STATE_KILLED, Action.FLAG_STATE_ROLLED_BACK, Action.FLAG_STATE_PAUSED,
    Action.MIGRATION_DIVERGENCES_DETECTED, Action.FLAGS_STALE_DETECTED, Action.USER_INVITED,
})
NOTIFY_TASK = "notifications.tasks.notify_event"


def notifiable(action: str, after: Any) -> bool:
    return action in NOTIFIABLE or (isinstance(after, Mapping) and "approval" in after)


def notification_hand_over(sequence: int, *, on_request_path: bool = True) -> bool:
    """Hand the outbox row of event ``sequence`` to the notification task, then delete it; False when the
    row is gone or another process holds it (``SKIP LOCKED``: an event is handed over once). Raises when
    the broker does not take it, and the row stays for the drain. On the request path the broker is never
    waited on (``enqueue_or_drop``); a worker's drain uses Celery's publish retries."""
    with transaction.atomic():
        row = NotificationOutbox.objects.select_for_update(skip_locked=True).filter(sequence=sequence).first()
        if row is None:
            return False
        (enqueue_or_drop if on_request_path else enqueue)(NOTIFY_TASK, sequence)
        row.delete()
    return True


def _announce(sequence: int) -> None:
    """After commit: hand the event to the notification task. The change stands whatever happens here,
    so a broker that cannot take the message is logged, never raised into the request; its outbox row
    waits for the drain (``notifications.tasks.drain_notification_outbox``)."""
    try:
        notification_hand_over(sequence)  # never waits on a broker that is down or hung
    except Exception as exc:  # the change is committed: its notification must not turn it into an error
        logger.warning("notification.enqueue_deferred", extra={"sequence": sequence, "error": type(exc).__name__})


_composing: contextvars.ContextVar[bool] = contextvars.ContextVar("turnout_composing_action", default=False)


def audited_atomic() -> transaction.Atomic:
    """The outermost transaction of an entry-point service.

    Durable, so a service can never be folded into somebody else's half-finished transaction by
    accident — except inside ``action_atomic()``, where the action layer has opened the one durable
    transaction of the action it performs and the service's block becomes a savepoint of it.
    """
    if _composing.get() and connection.in_atomic_block:
        return transaction.atomic()
    return transaction.atomic(durable=True)


@contextlib.contextmanager
def action_atomic() -> Iterator[None]:
    """The action layer's one durable transaction: services called inside it join it."""
    with transaction.atomic(durable=True):
        token = _composing.set(True)
        try:
            yield
        finally:
            _composing.reset(token)


# --- exports: the request is the audited act; the job row's progress is bookkeeping ---------------

EXPORT_FORMATS = {ExportKind.EVENTS: (ExportFormat.CSV, ExportFormat.JSONL), ExportKind.EVIDENCE: (ExportFormat.ZIP,)}


def audit_export_create(
    *,
    actor: Actor,
    format: str,
    filters: Mapping[str, Any] | None = None,
    subject_type: str = "",
    subject_key: str = "",
    background: bool | None = None,
) -> AuditExport:
    """Fix the range of an export (everything up to the chain's current tip), count it and record the
    export as one audit event, which falls just after the range and so never breaks its verification.

    ``background`` None: run as a Celery task when the range holds more events than
    ``TURNOUT_AUDIT_EXPORT_ASYNC_THRESHOLD``; otherwise the caller streams or writes it now.
    """
    kind = ExportKind.EVIDENCE if subject_type else ExportKind.EVENTS
    if format not in EXPORT_FORMATS[kind]:
        raise ValidationFailed.field("format", f"must be one of {', '.join(EXPORT_FORMATS[kind])}")
    clean = clean_filters(filters or {}) if kind == ExportKind.EVENTS else {}
    with audited_atomic():
        head = _locked_head()
        until, until_hash = head.sequence, head.hash
        if kind == ExportKind.EVIDENCE:
            subject = resolve_subject(subject_type, subject_key, until_sequence=until)
            queryset = evidence_queryset(subject)
        else:
            queryset = filtered_events(clean)
        total = queryset.filter(sequence__lte=until).count()
        if background is None:
            background = total > get_setting("AUDIT_EXPORT_ASYNC_THRESHOLD")
        export_id = uuid.uuid4()
        event = audit_record(
            actor=actor,
            action=Action.AUDIT_EVIDENCE_EXPORTED if kind == ExportKind.EVIDENCE else Action.AUDIT_EXPORTED,
            object_type="audit_export", object_key=str(export_id), environment=clean.get("environment", ""),
            after={"kind": kind, "format": format, "filters": clean,
                   "subject": {"type": subject_type, "key": subject_key} if subject_type else None,
                   "count": total, "until_sequence": until, "background": background},
        )
        export = AuditExport.objects.create(
            id=export_id, kind=kind, format=format, filters=clean, subject_type=subject_type,
            subject_key=subject_key, requested_by=actor.label[:150], requested_by_user_id=actor.user_id,
            until_sequence=until, until_hash=until_hash, audit_sequence=event.sequence, total=total,
            status=ExportStatus.PENDING if background else ExportStatus.RUNNING, created_at=event.occurred_at,
        )
        if background:
            transaction.on_commit(lambda: enqueue("audit.tasks.run_audit_export", str(export_id)))
    return export


def audit_export_progress(*, export_id: Any, done: int) -> None:
    """Bookkeeping of a running export (not an audit event: the export was recorded when requested)."""
    AuditExport.objects.filter(pk=export_id).update(status=ExportStatus.RUNNING, done=done)


def audit_export_finish(*, export_id: Any, manifest: dict[str, Any], file_name: str = "") -> None:
    AuditExport.objects.filter(pk=export_id).update(
        status=ExportStatus.READY, manifest=manifest, file_name=file_name, done=F("total"),
        finished_at=timezone.now(), error="")


def audit_export_fail(*, export_id: Any, error: str) -> None:
    AuditExport.objects.filter(pk=export_id).update(status=ExportStatus.FAILED, error=error[:2000],
                                                    finished_at=timezone.now())


# --- background chain verification: the request and the outcome are audited; progress is bookkeeping ----


def audit_verification_start(*, actor: Actor) -> AuditVerification:
    """Record a request to verify the whole chain and queue it (a Celery task, once this commits).

    Audited like an export request: one ``audit.verification_started`` event naming who asked and the
    chain's head at that moment. The job then checks every event up to the head it captures when it
    starts, which includes this request's own event.
    """
    with audited_atomic():
        head = _locked_head()
        verification_id = uuid.uuid4()
        event = audit_record(actor=actor, action=Action.AUDIT_VERIFICATION_STARTED, object_type="audit_verification",
                             object_key=str(verification_id), after={"head_sequence": head.sequence})
        verification = AuditVerification.objects.create(
            id=verification_id, requested_by=actor.label[:150], requested_by_user_id=actor.user_id,
            audit_sequence=event.sequence, total=event.sequence, created_at=event.occurred_at,
        )
        transaction.on_commit(lambda: enqueue("audit.tasks.run_audit_verification", str(verification_id)))
    return verification


def audit_verification_progress(*, verification_id: Any, checked: int, total: int) -> None:
    """Bookkeeping of a running verification (not an audit event: the request and the outcome are)."""
    # Never on a finished job: a late update from a re-delivered copy of the task must not reopen it.
    AuditVerification.objects.filter(pk=verification_id).exclude(
        status__in=(VerificationStatus.OK, VerificationStatus.FAILED, VerificationStatus.ERROR)).update(
        status=VerificationStatus.RUNNING, checked=checked, total=total)


def audit_verification_finish(*, actor: Actor, verification_id: Any, report: ChainReport) -> AuditVerification:
    """Record the report, and the outcome as one audit event: ``audit.verified`` or ``audit.verification_failed``.

    The outcome is an event (not only this job row, which is bookkeeping anyone with table access could
    edit) because the question a compliance reviewer asks of the log itself is "when was the chain last
    verified, up to which event, by whom, and what was found": the event answers it with the report's
    figures (head sequence and hash, first bad sequence). Appending it does not disturb the report: the
    walk covered the head it captured when it began, and this event lands after it (the next
    verification covers it). A job finished already (a re-delivered task that lost the race) is
    returned as it is, recorded once.
    """
    with audited_atomic():
        verification = AuditVerification.objects.select_for_update().filter(pk=verification_id).first()
        if verification is None:
            raise NotFound(f"verification '{verification_id}' does not exist")
        if verification.finished:
            return verification
        event = audit_record(
            actor=actor, action=Action.AUDIT_VERIFIED if report.ok else Action.AUDIT_VERIFICATION_FAILED,
            object_type="audit_verification", object_key=str(verification.pk),
            after={**report.as_dict(), "requested_by": verification.requested_by,
                   "requested_at_sequence": verification.audit_sequence},
        )
        verification.status = VerificationStatus.OK if report.ok else VerificationStatus.FAILED
        verification.report = report.as_dict()
        verification.total = report.head_sequence
        verification.checked = report.checked
        verification.result_sequence = event.sequence
        verification.finished_at = event.occurred_at
        verification.error = ""
        verification.save(update_fields=["status", "report", "total", "checked", "result_sequence", "finished_at",
                                         "error"])
    return verification


def audit_verification_error(*, verification_id: Any, error: str, report: ChainReport | None = None) -> None:
    """The job could not finish, or could not record its outcome (bookkeeping only, like a failed export).

    Without a report (a database error, a lost worker...) nothing was judged: status ``error``, and the
    request's event stays without an outcome until someone verifies again. With a report whose outcome
    event could not be appended (a row forged right past the chain head takes the sequence the writer
    needs next), the report is kept on the job: ``failed`` when it found the chain broken.
    """
    values: dict[str, Any] = {"status": VerificationStatus.ERROR, "error": error[:2000], "finished_at": timezone.now()}
    if report is not None:
        values.update(report=report.as_dict(), total=report.head_sequence, checked=report.checked)
        if not report.ok:
            values["status"] = VerificationStatus.FAILED
    AuditVerification.objects.filter(pk=verification_id).exclude(
        status__in=(VerificationStatus.OK, VerificationStatus.FAILED)).update(**values)


# --- sign-ins: Django's auth signals (audit/signals.py) call these --------------------------------

MAX_ATTEMPTED_USERNAME = 64


def auth_login_recorded(*, actor: Actor, username: str, remote_addr: str = "") -> AuditEvent:
    with audited_atomic():
        return audit_record(actor=actor, action=Action.AUTH_LOGIN, object_type="user", object_key=username,
                            after={"remote_addr": remote_addr})


LOGIN_FAILURE_TALLY_KEYS = 20  # usernames and addresses named per window (each), the rest counted as "other"


def _login_window(now: datetime) -> tuple[datetime, datetime]:
    seconds = max(1, int(get_setting("LOGIN_AUDIT_WINDOW")))
    start = int(now.timestamp()) // seconds * seconds
    starts_at = datetime.fromtimestamp(start, tz=UTC)
    return starts_at, starts_at + timedelta(seconds=seconds)


def _tally(counts: dict[str, int], key: str) -> int | None:
    """Count one failure for ``key``; its count so far (before this one), or None when not tallied."""
    if key not in counts and len(counts) >= LOGIN_FAILURE_TALLY_KEYS:
        return None
    seen = counts.get(key, 0)
    counts[key] = seen + 1
    return seen


def auth_login_failed_recorded(*, actor: Actor, username: str, remote_addr: str = "",
                               now: datetime | None = None) -> AuditEvent | None:
    """A failed sign-in: the attempted username (truncated), never the password.

    Anonymous traffic must not grow the log without bound, so in each window of
    ``TURNOUT_LOGIN_AUDIT_WINDOW`` seconds only the first ``TURNOUT_LOGIN_AUDIT_INDIVIDUAL`` failures per
    username and per address (and ``TURNOUT_LOGIN_AUDIT_INDIVIDUAL_MAX`` in all) get an event of their
    own; the others are counted in the window's ``LoginFailureWindow`` row (same transaction) and
    recorded together by ``auth_login_failed_burst_recorded`` once the window has ended. Returns the
    event, or None when the failure was counted for the burst.
    """
    attempted = (username or "")[:MAX_ATTEMPTED_USERNAME]
    starts_at, ends_at = _login_window(now or timezone.now())
    with audited_atomic():
        LoginFailureWindow.objects.get_or_create(starts_at=starts_at, defaults={"ends_at": ends_at})
        window = LoginFailureWindow.objects.select_for_update().get(starts_at=starts_at)
        by_user, by_addr = _tally(window.usernames, attempted), _tally(window.addresses, remote_addr)
        if by_user is None:
            window.other_usernames += 1
        if by_addr is None:
            window.other_addresses += 1
        per_key = int(get_setting("LOGIN_AUDIT_INDIVIDUAL"))
        individual = (by_user is not None and by_user < per_key and by_addr is not None and by_addr < per_key
                      and window.recorded < int(get_setting("LOGIN_AUDIT_INDIVIDUAL_MAX")))
        window.total += 1
        window.recorded += int(individual)
        window.save()
        if not individual:
            return None
        return audit_record(actor=actor, action=Action.AUTH_LOGIN_FAILED, object_type="user", object_key=attempted,
                            after={"remote_addr": remote_addr,
                                   "username_truncated": len(username or "") > len(attempted)})


def auth_login_failed_burst_recorded(*, actor: Actor, now: datetime | None = None) -> list[AuditEvent]:
    """Close every window of failed sign-ins that has ended: one ``auth.login_failed_burst`` event for
    each that counted failures without recording them (``count``), and the window's row goes in the
    same transaction. Called before each sign-in event is recorded and by a periodic task."""
    moment = now or timezone.now()
    if not LoginFailureWindow.objects.filter(ends_at__lte=moment).exists():
        return []
    events: list[AuditEvent] = []
    with audited_atomic():
        closed = LoginFailureWindow.objects.select_for_update(skip_locked=True).filter(
            ends_at__lte=moment).order_by("starts_at")
        for window in closed:
            count = window.total - window.recorded
            if count:
                events.append(audit_record(
                    actor=actor, action=Action.AUTH_LOGIN_FAILED_BURST, object_type="user", object_key="*",
                    after={"count": count, "total": window.total, "recorded_individually": window.recorded,
                           "window_start": window.starts_at.isoformat(), "window_end": window.ends_at.isoformat(),
                           "window_seconds": int((window.ends_at - window.starts_at).total_seconds()),
                           "usernames": window.usernames, "other_usernames": window.other_usernames,
                           "addresses": window.addresses, "other_addresses": window.other_addresses},
                    reason=f"{count} more failed sign-ins in this window, counted and not recorded one by one"))
            window.delete()
    return events


def auth_logout_recorded(*, actor: Actor, username: str, remote_addr: str = "") -> AuditEvent:
    with audited_atomic():
        return audit_record(actor=actor, action=Action.AUTH_LOGOUT, object_type="user", object_key=username,
                            after={"remote_addr": remote_addr})
