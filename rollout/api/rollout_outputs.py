"""Output shapes of the rollout, change request and gate endpoints, described for OpenAPI.

The data come from ``rollout/plans/readiness.py`` and the snapshots as plain dicts; these serializers
render them unchanged and document every field.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from actions.submit import target_version
from rollout.api.fields import OverridesField
from rollout.datamigration.outputs import MigrationReadinessOutput
from rollout.feedback.outputs import FeedbackReportOutput
from rollout.models import (
    BreachAction,
    ChangeRequest,
    ChangeRequestStatus,
    Gate,
    Phase,
    Reversibility,
    Risk,
    TargetType,
)
from rollout.snapshots import change_request_snapshot


@extend_schema_field({"description": "Any JSON value (as the SDK reported it, redacted)", "nullable": True})
class AnyJsonField(serializers.JSONField):
    pass


@extend_schema_field({"type": "object", "additionalProperties": True,
                      "description": "The parameters of the service call the change request will make."})
class ParamsField(serializers.JSONField):
    pass


@extend_schema_field({"type": "object", "additionalProperties": True, "nullable": True,
                      "description": "The latest guardrail check (as in `judged`, plus `checked_at`), if any."})
class LastCheckField(serializers.JSONField):
    pass


@extend_schema_field({"type": "array", "items": {"type": "array", "items": {"type": "string"}},
                      "description": "[path, kind, legacy type, parallel type] for every difference."})
class ShapeField(serializers.JSONField):
    pass


def _float(**kw: Any) -> serializers.FloatField:
    return serializers.FloatField(allow_null=True, **kw)


class StageOutput(serializers.Serializer[Any]):
    position = serializers.IntegerField()
    name = serializers.CharField()
    percentage = serializers.FloatField()
    compare_percentage = serializers.FloatField()
    include_cohorts = serializers.ListField(child=serializers.CharField())
    min_soak_seconds = serializers.IntegerField()
    gate = serializers.ChoiceField(choices=Gate.choices)
    scheduled_at = serializers.CharField(allow_null=True, help_text="ISO-8601, or null")
    retires_legacy = serializers.BooleanField()


class StageStatusOutput(StageOutput):
    status = serializers.ChoiceField(choices=["done", "current", "pending"])


class WorkloadBriefOutput(serializers.Serializer[Any]):
    key = serializers.CharField()
    risk = serializers.ChoiceField(choices=Risk.choices)
    phase = serializers.ChoiceField(choices=Phase.choices)
    reversibility = serializers.ChoiceField(choices=Reversibility.choices)


class RolloutOutput(serializers.Serializer[Any]):
    flag = serializers.CharField()
    environment = serializers.CharField()
    enabled = serializers.BooleanField()
    retired = serializers.BooleanField()
    percentage = serializers.FloatField()
    compare_percentage = serializers.FloatField()
    include_cohorts = serializers.ListField(child=serializers.CharField())
    exclude_cohorts = serializers.ListField(child=serializers.CharField())
    overrides = OverridesField()
    stage = serializers.IntegerField(help_text="Position of the stage in force; 0 = the plan has not started")
    paused = serializers.BooleanField()
    version = serializers.IntegerField(help_text="Send it back with a change; a stale one gets 409.")
    workload = WorkloadBriefOutput()
    paused_at = serializers.CharField(allow_null=True)
    paused_reason = serializers.CharField()
    stage_started_at = serializers.CharField(allow_null=True)
    current_stage = StageOutput(allow_null=True)
    next_stage = StageOutput(allow_null=True)
    soak_seconds_left = serializers.IntegerField(allow_null=True)
    next_needs_approval = serializers.BooleanField()
    stages = StageStatusOutput(many=True)
    pending_change_requests = serializers.ListField(child=serializers.IntegerField())
    open_reviews = serializers.ListField(child=serializers.IntegerField())


class ChangeRequestOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    target_type = serializers.ChoiceField(choices=TargetType.choices, help_text="what the change changes")
    target = serializers.CharField(help_text="'flag@environment' for a flag state, else the object's key")
    flag = serializers.CharField(allow_null=True, help_text="for a flag-state change")
    environment = serializers.CharField(allow_null=True, help_text="for a flag-state change")
    action = serializers.CharField(help_text="the action, named by the audit event it writes")
    params = ParamsField()
    based_on_version = serializers.IntegerField()
    summary = serializers.CharField()
    status = serializers.ChoiceField(choices=ChangeRequestStatus.choices)
    requested_by = serializers.CharField()
    decided_by = serializers.CharField(allow_null=True)
    decision_reason = serializers.CharField()
    reason = serializers.CharField()
    created_at = serializers.CharField()
    decided_at = serializers.CharField(allow_null=True)
    stale = serializers.BooleanField(help_text="pending, but the target moved since: approving marks it stale")


class AppliedOutput(serializers.Serializer[Any]):
    applied = serializers.BooleanField(help_text="true: the change is in place")
    rollout = RolloutOutput()


class PendingOutput(serializers.Serializer[Any]):
    applied = serializers.BooleanField(help_text="false: the change waits for a second person")
    change_request = ChangeRequestOutput()


class PathStatsOutput(serializers.Serializer[Any]):
    calls = serializers.IntegerField(help_text="decisions that chose the path (bare decide() included)")
    runs = serializers.IntegerField(help_text="runs of the path with a known outcome: what error_rate is a share of")
    # A declared field: SerializerMetaclass takes it out of the class, so Serializer.errors stays as it is.
    errors = serializers.IntegerField()  # type: ignore[assignment]  # a field, not Serializer.errors (see above)
    error_rate = _float(help_text="% of runs")
    p50_ms = _float()
    p95_ms = _float()
    p99_ms = _float()
    comparisons = serializers.IntegerField()
    mismatches = serializers.IntegerField()
    mismatch_rate = _float(help_text="%")


class CheckOutput(serializers.Serializer[Any]):
    name = serializers.CharField()
    limit = serializers.FloatField()
    value = _float()
    ok = serializers.BooleanField(allow_null=True, help_text="null: not judged (no data)")


class WindowOutput(serializers.Serializer[Any]):
    start = serializers.CharField(allow_null=True)
    end = serializers.CharField(allow_null=True)


class FiguresOutput(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=["healthy", "breached", "insufficient_data", "unguarded", "inactive"])
    window = WindowOutput()
    legacy = PathStatsOutput()
    parallel = PathStatsOutput()
    mismatch_rate_excluding_known = _float()
    known_share = serializers.FloatField()
    sample_size = serializers.IntegerField()
    min_sample_size = serializers.IntegerField()
    checks = CheckOutput(many=True)


class GuardrailConfigOutput(serializers.Serializer[Any]):
    max_error_rate = _float()
    max_error_rate_increase = _float()
    max_latency_p95_ratio = _float()
    max_mismatch_rate = _float()
    min_sample_size = serializers.IntegerField()
    window_seconds = serializers.IntegerField()
    action = serializers.ChoiceField(choices=BreachAction.choices)


class GuardrailsOutput(serializers.Serializer[Any]):
    config = GuardrailConfigOutput(allow_null=True)
    status = serializers.CharField()
    breaches = serializers.ListField(child=serializers.CharField())
    judged = FiguresOutput()
    last_check = LastCheckField(allow_null=True)


class MismatchGroupOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    fingerprint = serializers.CharField()
    count = serializers.IntegerField()
    share = serializers.FloatField(help_text="% of all samples")
    shape = ShapeField()
    example = AnyJsonField()
    first_seen = serializers.CharField()
    last_seen = serializers.CharField()
    flag_version = serializers.IntegerField(allow_null=True)
    code_version = serializers.CharField()
    known = serializers.BooleanField()
    known_reason = serializers.CharField()
    known_by = serializers.CharField()
    known_at = serializers.CharField(allow_null=True)


class MismatchSummaryOutput(serializers.Serializer[Any]):
    kinds = serializers.IntegerField()
    samples = serializers.IntegerField()
    known_samples = serializers.IntegerField()
    groups = MismatchGroupOutput(many=True)


class SampleOutput(serializers.Serializer[Any]):
    at = serializers.CharField()
    version = serializers.IntegerField(allow_null=True)
    served = serializers.CharField()
    legacy = AnyJsonField()
    parallel = AnyJsonField()
    truncated = serializers.BooleanField()


class ReadinessMismatchesOutput(MismatchSummaryOutput):
    recent_samples = SampleOutput(many=True)


class SeriesPointOutput(serializers.Serializer[Any]):
    minute = serializers.CharField()
    legacy = PathStatsOutput()
    parallel = PathStatsOutput()


class ReadinessWindowOutput(WindowOutput):
    seconds = serializers.IntegerField()


class ReadinessOutput(serializers.Serializer[Any]):
    flag = serializers.CharField()
    environment = serializers.CharField()
    generated_at = serializers.CharField()
    window = ReadinessWindowOutput()
    legacy = PathStatsOutput()
    parallel = PathStatsOutput()
    series = SeriesPointOutput(many=True)
    guardrails = GuardrailsOutput()
    plan = RolloutOutput()
    soak_seconds_left = serializers.IntegerField(allow_null=True)
    mismatches = ReadinessMismatchesOutput()
    feedback = FeedbackReportOutput(help_text="User feedback per path and its readiness rule (docs/feedback.md)")
    verdict = serializers.ChoiceField(choices=["ready", "not_yet", "failing"])
    reasons = serializers.ListField(child=serializers.CharField())
    migration = MigrationReadinessOutput(allow_null=True, help_text="a migration flag's SDK figures per origin × "
                                                                    "operation and its divergences (null for a "
                                                                    "release flag)")


class GateErrorOutput(serializers.Serializer[Any]):
    code = serializers.ChoiceField(choices=["not_ready", "failing"])
    message = serializers.CharField()
    # A declared field: SerializerMetaclass takes it out of the class, so Serializer.fields stays as it is.
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))  # type: ignore[assignment]  # a field, not Serializer.fields


class GateOutput(serializers.Serializer[Any]):
    error = GateErrorOutput(required=False, help_text="On 409 / 503: the one error body, with the reasons")
    flag = serializers.CharField()
    environment = serializers.CharField()
    ready = serializers.BooleanField()
    verdict = serializers.ChoiceField(choices=["ready", "not_yet", "failing"])
    reasons = serializers.ListField(child=serializers.CharField())
    stage = serializers.IntegerField()
    guardrails = serializers.CharField()
    breaches = serializers.ListField(child=serializers.CharField())
    soak_seconds_left = serializers.IntegerField(allow_null=True)


class ReviewItemOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    flag = serializers.CharField()
    environment = serializers.CharField()
    action = serializers.CharField()
    actor = serializers.CharField()
    reason = serializers.CharField()
    audit_sequence = serializers.IntegerField()
    created_at = serializers.CharField()
    acknowledged_by = serializers.CharField(allow_null=True)
    acknowledged_at = serializers.CharField(allow_null=True)
    note = serializers.CharField()


class ChangeRequestListOutput(serializers.Serializer[Any]):
    results = ChangeRequestOutput(many=True)


class ReviewItemListOutput(serializers.Serializer[Any]):
    results = ReviewItemOutput(many=True)


def change_request_data(cr: ChangeRequest) -> dict[str, Any]:
    return ChangeRequestOutput({
        **change_request_snapshot(cr), "reason": cr.reason, "created_at": cr.created_at.isoformat(),
        "decided_at": cr.decided_at.isoformat() if cr.decided_at else None,
        "stale": cr.status == ChangeRequestStatus.PENDING and target_version(cr) != cr.based_on_version,
    }).data
