"""The one writer of the audit log."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from audit.chain import GENESIS_HASH, event_hash
from audit.models import AuditChainHead, AuditEvent, AuditExport, ExportFormat, ExportKind, ExportStatus
from common.actors import Actor
from common.conf import get_setting
from common.errors import ValidationFailed
from common.request_context import current_request_id


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
    event.save(force_insert=True)
    AuditChainHead.objects.filter(pk=1).update(sequence=event.sequence, hash=event.hash)
    return event


def audited_atomic() -> transaction.Atomic:
    """The outermost transaction of an entry-point service."""
    return transaction.atomic(durable=True)


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
    from audit.evidence import evidence_queryset, resolve_subject
    from audit.filters import clean_filters, filtered_events

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
            actor=actor, action="audit.evidence_exported" if kind == ExportKind.EVIDENCE else "audit.exported",
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
            from audit.tasks import run_audit_export

            transaction.on_commit(lambda: run_audit_export.delay(str(export_id)))
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


# --- sign-ins: Django's auth signals (audit/signals.py) call these --------------------------------

MAX_ATTEMPTED_USERNAME = 64


def auth_login_recorded(*, actor: Actor, username: str, remote_addr: str = "") -> AuditEvent:
    with audited_atomic():
        return audit_record(actor=actor, action="auth.login", object_type="user", object_key=username,
                            after={"remote_addr": remote_addr})


def auth_login_failed_recorded(*, actor: Actor, username: str, remote_addr: str = "") -> AuditEvent:
    """A failed sign-in: the attempted username (truncated), never the password."""
    attempted = (username or "")[:MAX_ATTEMPTED_USERNAME]
    with audited_atomic():
        return audit_record(actor=actor, action="auth.login_failed", object_type="user", object_key=attempted,
                            after={"remote_addr": remote_addr,
                                   "username_truncated": len(username or "") > len(attempted)})


def auth_logout_recorded(*, actor: Actor, username: str, remote_addr: str = "") -> AuditEvent:
    with audited_atomic():
        return audit_record(actor=actor, action="auth.logout", object_type="user", object_key=username,
                            after={"remote_addr": remote_addr})
