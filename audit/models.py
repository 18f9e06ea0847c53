"""The append-only, hash-chained audit log.

Rows are only ever inserted, by ``audit.services.audit_record``. The ORM refuses updates and
deletes (here, on every database); on PostgreSQL a trigger refuses them too (migration 0002).
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.db import models


class AppendOnlyError(Exception):
    """Raised on any attempt to change or remove an audit event."""


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events are append-only: update refused")

    def delete(self) -> NoReturn:
        raise AppendOnlyError("audit events are append-only: delete refused")

    def _raw_delete(self, using: Any) -> NoReturn:
        raise AppendOnlyError("audit events are append-only: delete refused")

    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events are append-only: update refused")

    def in_order(self) -> AuditEventQuerySet:
        return self.order_by("sequence")


class ActorType(models.TextChoices):
    USER = "user", "User"
    TOKEN = "token", "API token"
    SYSTEM = "system", "System"
    ANONYMOUS = "anonymous", "Anonymous"


class AuditEvent(models.Model):
    sequence = models.BigIntegerField(unique=True)
    occurred_at = models.DateTimeField(db_index=True)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor = models.CharField(max_length=150, db_index=True, help_text="username, token prefix, or system:<cause>")
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64)
    object_key = models.CharField(max_length=255)
    environment = models.CharField(max_length=63, blank=True, default="", db_index=True)
    before = models.JSONField(null=True)
    after = models.JSONField(null=True)
    reason = models.TextField(blank=True, default="")
    request_id = models.CharField(max_length=64, blank=True, default="")
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["sequence"]
        indexes = [models.Index(fields=["object_type", "object_key", "sequence"], name="audit_object_seq")]
        constraints = [
            # Sequence numbers start at 1 and the chain is walked in order; 0 is the genesis marker.
            models.CheckConstraint(condition=models.Q(sequence__gte=1), name="audit_sequence_positive"),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} {self.object_type}:{self.object_key} by {self.actor}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError("audit events are append-only: update refused")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events are append-only: delete refused")


class AuditChainHead(models.Model):
    """One row holding the chain's tip: locked by every writer so sequences have no gaps."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    sequence = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64)

    class Meta:
        constraints = [
            # There is exactly one chain, so exactly one head row.
            models.CheckConstraint(condition=models.Q(id=1), name="audit_chain_head_singleton"),
        ]


class NotificationOutbox(models.Model):
    """An audit event people may have to be told about, not yet handed to the notification task.

    Written by ``audit_record`` in the event's own transaction, so a committed change always leaves it;
    deleted by whoever hands the event to the broker (the request after commit, or the notification
    outbox drain on Celery beat and on Redis's recovery). Both lock the row (``SKIP LOCKED``) while
    they publish, so an event is handed over once.
    """

    sequence = models.BigIntegerField(primary_key=True, help_text="the audit event's sequence")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["sequence"]


class ExportKind(models.TextChoices):
    EVENTS = "events", "Events"
    EVIDENCE = "evidence", "Evidence pack"


class ExportFormat(models.TextChoices):
    CSV = "csv", "CSV"
    JSONL = "jsonl", "JSON Lines"
    ZIP = "zip", "Evidence pack (zip)"


class ExportStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class AuditExport(models.Model):
    """One export of the audit log (or one evidence pack): its range, progress, file and signed manifest.

    The export request itself is an audit event (``audit_sequence``); the exported range stops at
    ``until_sequence``, the chain's tip just before that event, so the export never contains itself.
    This row is bookkeeping, not evidence: the file and its signed manifest are what a reviewer checks.
    """

    id = models.UUIDField(primary_key=True)
    kind = models.CharField(max_length=8, choices=ExportKind.choices)
    format = models.CharField(max_length=5, choices=ExportFormat.choices)
    filters = models.JSONField(default=dict)
    subject_type = models.CharField(max_length=32, blank=True, default="")
    subject_key = models.CharField(max_length=255, blank=True, default="")
    requested_by = models.CharField(max_length=150)
    requested_by_user_id = models.IntegerField(null=True)
    until_sequence = models.BigIntegerField()
    until_hash = models.CharField(max_length=64)
    audit_sequence = models.BigIntegerField()
    total = models.BigIntegerField()
    done = models.BigIntegerField(default=0)
    status = models.CharField(max_length=8, choices=ExportStatus.choices, default=ExportStatus.PENDING)
    file_name = models.CharField(max_length=200, blank=True, default="")
    manifest = models.JSONField(null=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Progress counts events written so far: never negative, never past the range's size.
            models.CheckConstraint(condition=models.Q(done__gte=0, done__lte=models.F("total")),
                                   name="audit_export_progress_range"),
            models.CheckConstraint(condition=models.Q(status__in=ExportStatus.values),
                                   name="audit_export_status_valid"),
            models.CheckConstraint(condition=models.Q(format__in=ExportFormat.values),
                                   name="audit_export_format_valid"),
            # The export's own event comes right after the range it exports.
            models.CheckConstraint(condition=models.Q(audit_sequence=models.F("until_sequence") + 1),
                                   name="audit_export_after_its_range"),
        ]

    def __str__(self) -> str:
        return f"export {self.id} ({self.kind}, {self.format}, {self.status})"


class VerificationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    OK = "ok", "Verified"
    FAILED = "failed", "Broken"  # the chain is not intact: the report names the first bad event
    ERROR = "error", "Error"  # the job could not finish (the chain was not judged)


class AuditVerification(models.Model):
    """One background verification of the whole chain: its progress and, once done, its report.

    Bookkeeping, not part of the chain: the request is an audit event (``audit_sequence``,
    ``audit.verification_started``) and so is the outcome (``result_sequence``, ``audit.verified`` or
    ``audit.verification_failed``); this row only carries progress and the full report in between.
    ``total`` is the chain head's sequence when the job started (the request's own event at first, then
    the head the walk captured), ``checked`` the events checked so far.
    """

    id = models.UUIDField(primary_key=True)
    requested_by = models.CharField(max_length=150)
    requested_by_user_id = models.IntegerField(null=True)
    audit_sequence = models.BigIntegerField()
    total = models.BigIntegerField()
    checked = models.BigIntegerField(default=0)
    status = models.CharField(max_length=8, choices=VerificationStatus.choices, default=VerificationStatus.PENDING)
    report = models.JSONField(null=True)
    result_sequence = models.BigIntegerField(null=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Progress counts events checked so far: never negative, never past the head being checked.
            models.CheckConstraint(condition=models.Q(checked__gte=0, checked__lte=models.F("total")),
                                   name="audit_verification_progress_range"),
            models.CheckConstraint(condition=models.Q(status__in=VerificationStatus.values),
                                   name="audit_verification_status_valid"),
        ]

    def __str__(self) -> str:
        return f"verification {self.id} ({self.status}, {self.checked} of {self.total})"

    @property
    def finished(self) -> bool:
        return self.status in (VerificationStatus.OK, VerificationStatus.FAILED, VerificationStatus.ERROR)


class LoginFailureWindow(models.Model):
    """Failed sign-ins in one fixed window of time (``TURNOUT_LOGIN_AUDIT_WINDOW`` seconds).

    Bookkeeping that keeps the audit log from being flooded by anonymous traffic: the window's first
    few failures per username and per address get an ``auth.login_failed`` event each (``recorded``);
    the rest are only counted here, and once the window has ended they become ONE
    ``auth.login_failed_burst`` event carrying the count, written in the same transaction that
    deletes this row — so no failure is ever counted twice or lost.
    """

    starts_at = models.DateTimeField(unique=True)
    ends_at = models.DateTimeField(db_index=True)
    total = models.PositiveIntegerField(default=0)
    recorded = models.PositiveIntegerField(default=0)
    # Failures per attempted username (as typed, truncated) and per client address: at most
    # ``LOGIN_FAILURE_TALLY_KEYS`` of each, first come; failures for any other one count in ``other_*``.
    usernames = models.JSONField(default=dict)
    addresses = models.JSONField(default=dict)
    other_usernames = models.PositiveIntegerField(default=0)
    other_addresses = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            # A failure is recorded individually or counted for the burst, never both.
            models.CheckConstraint(condition=models.Q(recorded__lte=models.F("total")),
                                   name="audit_login_failure_recorded_within_total"),
            models.CheckConstraint(condition=models.Q(ends_at__gt=models.F("starts_at")),
                                   name="audit_login_failure_window_ends_after_start"),
        ]

    def __str__(self) -> str:
        return f"failed sign-ins from {self.starts_at:%Y-%m-%d %H:%M:%S}: {self.total}"
