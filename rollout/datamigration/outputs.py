"""The figures of a data migration as the API shows them: per origin × operation, divergence counts, whether
it may complete — in the migration status and in the readiness report's ``migration`` section."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class OriginFiguresOutput(serializers.Serializer[Any]):
    origin = serializers.CharField()
    operation = serializers.CharField()
    calls = serializers.IntegerField()
    error_rate = serializers.FloatField(allow_null=True)
    late = serializers.IntegerField()
    skipped = serializers.IntegerField()
    p50_ms = serializers.FloatField(allow_null=True, help_text="upper bound of the median's latency bucket")
    p95_ms = serializers.FloatField(allow_null=True, help_text="upper bound of the p95 latency bucket")
    checks = serializers.IntegerField()
    inconsistent = serializers.IntegerField()
    check_errors = serializers.IntegerField()
    consistency_rate = serializers.FloatField(allow_null=True)
    divergences = serializers.IntegerField()

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        fields["errors"] = serializers.IntegerField()  # ``errors`` is a Serializer attribute: declared here
        return fields


class DivergenceCountOutput(serializers.Serializer[Any]):
    origin = serializers.CharField()
    operation = serializers.CharField()
    records = serializers.IntegerField()
    unresolved = serializers.IntegerField()
    failed_writes = serializers.IntegerField()
    first_seen = serializers.CharField(allow_null=True)
    last_seen = serializers.CharField(allow_null=True)


class CompleteReadinessOutput(serializers.Serializer[Any]):
    ready = serializers.BooleanField()
    reasons = serializers.ListField(child=serializers.CharField())


class MigrationReadinessOutput(serializers.Serializer[Any]):
    stage = serializers.CharField(help_text="the base stage")
    furthest = serializers.CharField(help_text="the furthest stage anyone stands at")
    origins = OriginFiguresOutput(many=True, help_text="SDK figures per origin × operation over the report's window")
    divergences = DivergenceCountOutput(many=True)
    unresolved_divergences = serializers.IntegerField()
    complete = CompleteReadinessOutput()
