"""Output shapes of the audit API (read-only: nothing writes the audit log through a serializer)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from audit.chain import format_time
from audit.models import AuditEvent, AuditExport, AuditVerification


def diff(before: Any, after: Any) -> dict[str, dict[str, Any]]:
    """The top-level keys whose value changed, each with its before and after."""
    if isinstance(before, dict) or isinstance(after, dict):
        b = before if isinstance(before, dict) else {}
        a = after if isinstance(after, dict) else {}
        return {k: {"before": b.get(k), "after": a.get(k)} for k in sorted(set(b) | set(a))
                if (k in b) != (k in a) or b.get(k) != a.get(k)}
    return {} if before == after else {"value": {"before": before, "after": after}}


class AuditEventSerializer(serializers.ModelSerializer[AuditEvent]):
    occurred_at = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = ["sequence", "occurred_at", "actor_type", "actor", "action", "object_type", "object_key",
                  "environment", "before", "after", "reason", "request_id", "prev_hash", "hash"]
        read_only_fields = fields

    def get_occurred_at(self, event: AuditEvent) -> str:
        """The time exactly as hashed: UTC, microseconds, Z."""
        return format_time(event.occurred_at)


class AuditEventChangeSerializer(AuditEventSerializer):
    changes = serializers.SerializerMethodField()

    class Meta(AuditEventSerializer.Meta):
        fields = [*AuditEventSerializer.Meta.fields, "changes"]
        read_only_fields = fields

    @extend_schema_field({"type": "object", "description": "Changed keys, each with its before and after.",
                          "additionalProperties": {"type": "object", "properties": {
                              "before": {"description": "Any JSON value (null when absent)."},
                              "after": {"description": "Any JSON value (null when absent)."}}}})
    def get_changes(self, event: AuditEvent) -> dict[str, dict[str, Any]]:
        """Changed keys, each ``{"before": …, "after": …}``."""
        return diff(event.before, event.after)


class ChainReportSerializer(serializers.Serializer[Any]):
    ok = serializers.BooleanField()
    checked = serializers.IntegerField()
    last_sequence = serializers.IntegerField()
    last_hash = serializers.CharField()
    head_sequence = serializers.IntegerField()
    head_hash = serializers.CharField()
    first_bad_sequence = serializers.IntegerField(allow_null=True)
    problem = serializers.CharField(allow_blank=True)


class PublicKeySerializer(serializers.Serializer[Any]):
    key_id = serializers.CharField(help_text="sha256 (hex) of the raw 32-byte public key")
    algorithm = serializers.CharField()
    public_key = serializers.CharField(help_text="base64 of the raw 32-byte Ed25519 public key")
    pem = serializers.CharField()
    current = serializers.BooleanField()


class PublicKeysSerializer(serializers.Serializer[Any]):
    keys = PublicKeySerializer(many=True)


class AuditExportSerializer(serializers.ModelSerializer[AuditExport]):
    kind = serializers.CharField(read_only=True, help_text="events (an export) or evidence (an evidence pack)")
    progress = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()
    subject = serializers.SerializerMethodField()

    class Meta:
        model = AuditExport
        fields = ["id", "kind", "format", "status", "filters", "subject", "total", "done", "progress",
                  "until_sequence", "audit_sequence", "requested_by", "created_at", "finished_at", "error", "links"]
        read_only_fields = fields

    def get_progress(self, export: AuditExport) -> float:
        """Share of events written, 0 to 1."""
        return 1.0 if export.total == 0 else round(export.done / export.total, 4)

    def get_subject(self, export: AuditExport) -> dict[str, str] | None:
        return {"type": export.subject_type, "key": export.subject_key} if export.subject_type else None

    def get_links(self, export: AuditExport) -> dict[str, str]:
        return {
            "self": reverse("audit-export-detail", args=[export.pk]),
            "manifest": reverse("audit-export-manifest", args=[export.pk]),
            "download": reverse("audit-export-download", args=[export.pk]),
        }


class AuditVerificationSerializer(serializers.ModelSerializer[AuditVerification]):
    progress = serializers.SerializerMethodField()
    report = ChainReportSerializer(read_only=True, allow_null=True,
                                   help_text="The final report (null until the job has finished)")
    links = serializers.SerializerMethodField()

    class Meta:
        model = AuditVerification
        fields = ["id", "status", "total", "checked", "progress", "report", "requested_by", "audit_sequence",
                  "result_sequence", "created_at", "finished_at", "error", "links"]
        read_only_fields = fields
        extra_kwargs = {
            "status": {"help_text": "ok: the chain is intact up to the report's head; failed: it is not (the "
                                    "report names the first bad event); error: the job could not finish (see error)"},
            "total": {"help_text": "The chain head's sequence when the job started (the walk's end)"},
            "checked": {"help_text": "Events checked so far"},
            "audit_sequence": {"help_text": "The audit event that recorded the request"},
            "result_sequence": {"help_text": "The audit event that recorded the outcome (null until finished)"},
        }

    def get_progress(self, verification: AuditVerification) -> float:
        """Share of events checked, 0 to 1."""
        return 1.0 if verification.total == 0 else round(verification.checked / verification.total, 4)

    def get_links(self, verification: AuditVerification) -> dict[str, str]:
        return {"self": reverse("audit-verification-detail", args=[verification.pk])}
