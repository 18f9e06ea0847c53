"""Migration API (docs/migrations.md) under ``/api/v1/flags/{key}/states/{env}/migration/``.

``GET`` the status (stages, per origin × operation figures, divergence counts, whether it may complete);
``POST`` a stage change; ``rollback/``; ``divergences/`` (list), ``divergences/export`` (CSV or JSON Lines),
``divergences/resolve/``. Changes go through the action layer: ``200`` applied, ``202`` a change request.
"""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from actions.submit import Outcome, submit_state
from audit.api import FormatIsOurs
from audit.names import Action
from common.api import ManagementView, requested_version
from common.errors import ValidationFailed
from common.fields import ReasonField, key_field
from common.inputs import Input
from common.permissions import Capability
from common.schema import IF_MATCH, errors
from common.streaming import streamed
from rollout.api.change_requests import outcome_response
from rollout.datamigration.outputs import CompleteReadinessOutput, DivergenceCountOutput, OriginFiguresOutput
from rollout.datamigration.reports import (
    DEFAULT_WINDOW,
    divergence_list,
    divergence_row,
    export_lines,
    migration_status,
)
from rollout.datamigration.rules import STAGES
from rollout.selectors import flag_state_get

TAGS = ["migrations"]
STATE_PARAMS = [
    OpenApiParameter("key", OpenApiTypes.STR, OpenApiParameter.PATH, description="flag key"),
    OpenApiParameter("env", OpenApiTypes.STR, OpenApiParameter.PATH, description="environment key"),
]
RESOLVED = OpenApiParameter("resolved", OpenApiTypes.STR, enum=["true", "false"],
                            description="only resolved (true) or unresolved (false) divergences")
VERSION: dict[str, Any] = {"min_value": 1, "max_value": 2**31 - 1, "required": False,
                           "help_text": "The flag state version read (or send If-Match); a stale one gets 409."}


class MigrationSplitInput(Input):
    stage = serializers.ChoiceField(choices=STAGES)
    percentage = serializers.FloatField(min_value=0, max_value=100)


class MigrationCohortInput(Input):
    cohort = key_field()
    stage = serializers.ChoiceField(choices=STAGES)


class MigrationStageInput(Input):
    version = serializers.IntegerField(**VERSION)
    reason = ReasonField()
    stage = serializers.ChoiceField(choices=STAGES, required=False,
                                    help_text="the base stage: the next one at most (`complete` is irreversible)")
    splits = MigrationSplitInput(many=True, required=False, max_length=5)  # type: ignore[call-arg]  # stub lacks max_length
    cohorts = MigrationCohortInput(many=True, required=False, max_length=100)  # type: ignore[call-arg]  # as above
    max_divergences = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=10**9,
                                               help_text="guardrail: divergences since the stage began that roll "
                                                         "it back (null: unchecked)")


class MigrationRollbackInput(Input):
    version = serializers.IntegerField(**VERSION)
    reason = ReasonField(help_text="Why (required): kept in the audit log with the divergences at risk.")


class DivergenceResolveInput(Input):
    reason = ReasonField(help_text="How the divergences were reconciled (required).")
    divergences = serializers.JSONField(help_text='divergence ids, or "all" for every unresolved one')


class MigrationSplitOutput(serializers.Serializer[Any]):
    stage = serializers.CharField()
    percentage = serializers.FloatField()


class MigrationCohortOutput(serializers.Serializer[Any]):
    cohort = serializers.CharField()
    stage = serializers.CharField()


class StageMeaningOutput(serializers.Serializer[Any]):
    stage = serializers.CharField()
    meaning = serializers.CharField()


class MigrationStatusOutput(serializers.Serializer[Any]):
    flag = serializers.CharField()
    environment = serializers.CharField()
    enabled = serializers.BooleanField()
    stage = serializers.CharField()
    splits = MigrationSplitOutput(many=True)
    cohorts = MigrationCohortOutput(many=True)
    furthest = serializers.CharField()
    next_stage = serializers.CharField(allow_null=True)
    stages = StageMeaningOutput(many=True)
    window_seconds = serializers.IntegerField()
    origins = OriginFiguresOutput(many=True)
    divergences = DivergenceCountOutput(many=True)
    unresolved_divergences = serializers.IntegerField()
    complete = CompleteReadinessOutput()


class DivergenceOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    origin = serializers.CharField()
    operation = serializers.CharField()
    identifier = serializers.CharField()
    key_hash = serializers.CharField()
    stage = serializers.CharField()
    count = serializers.IntegerField()
    first_seen = serializers.CharField()
    last_seen = serializers.CharField()
    last_error = serializers.CharField()
    resolved_at = serializers.CharField(allow_null=True)
    resolved_by = serializers.CharField()
    resolution = serializers.CharField()


def _resolved(request: Request) -> bool | None:
    value = request.query_params.get("resolved")
    if value is None:
        return None
    if value not in ("true", "false"):
        raise ValidationFailed.field("resolved", "must be 'true' or 'false'")
    return value == "true"


def _response(outcome: Outcome) -> Response:
    return outcome_response(outcome, lambda state: {"applied": True, "migration": migration_status(state)})


class MigrationView(ManagementView):
    capabilities = {"POST": Capability.EDIT}

    @extend_schema(operation_id="migration_status", summary="Where a data migration stands", tags=TAGS,
                   parameters=[*STATE_PARAMS, OpenApiParameter("window", OpenApiTypes.INT,
                                                               description="seconds, 60 to 604800")],
                   responses={200: MigrationStatusOutput, **errors(400, 404)},
                   description="Base stage, splits and placed cohorts, what each stage means, the next stage, "
                               "SDK figures per origin and operation (calls, error rate, late, p95, consistency "
                               "rate, divergences) over the window, divergence counts and whether it may "
                               "complete.")
    def get(self, request: Request, key: str, env: str) -> Response:
        window = request.query_params.get("window")
        if window is not None and (not window.isdigit() or not 60 <= int(window[:7]) <= 604_800):
            raise ValidationFailed.field("window", "must be a whole number of seconds from 60 to 604800")
        seconds = int(window) if window else DEFAULT_WINDOW
        return Response(MigrationStatusOutput(migration_status(flag_state_get(key, env), window_seconds=seconds)).data)

    @extend_schema(operation_id="migration_stage_set", summary="Move a data migration forward", tags=TAGS,
                   parameters=[*STATE_PARAMS, IF_MATCH], request=MigrationStageInput,
                   responses={200: OpenApiResponse(description="applied"),
                              202: OpenApiResponse(description="a change request waits for a second person"),
                              **errors(400, 403, 404, 409, 428)},
                   description="Forward only, one stage at a time (no skipping); moving subjects back is a "
                               "rollback. Entering `live` or `complete` needs approval where the environment or "
                               "the workload's risk says so; `complete` is irreversible and needs no unresolved "
                               "divergence.")
    def post(self, request: Request, key: str, env: str) -> Response:
        data = MigrationStageInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        params = {name: values[name] for name in ("stage", "splits", "cohorts", "max_divergences") if name in values}
        if not params:
            raise ValidationFailed.field("stage", "give stage, splits or cohorts")
        for name in ("splits", "cohorts"):
            if name in params:
                params[name] = [dict(item) for item in params[name]]
        version = requested_version(request, values.get("version"))
        return _response(submit_state(actor=self.actor(), flag=key, environment=env,
                                      action=Action.MIGRATION_STAGE_SET, params=params, version=version,
                                      reason=values.get("reason", "")))


class MigrationRollbackView(ManagementView):
    capabilities = {"POST": Capability.EMERGENCY}

    @extend_schema(operation_id="migration_rollback", summary="Roll a data migration back one stage, now",
                   tags=TAGS, parameters=[*STATE_PARAMS, IF_MATCH], request=MigrationRollbackInput,
                   responses={200: OpenApiResponse(description="applied"), **errors(400, 403, 404, 409)},
                   description="The furthest tier one stage back at once; never waits for approval (break-glass "
                               "where approval applies). Needs a reason; from `live` or `rampdown` the audit event "
                               "records the divergences since parallel became authoritative. `complete` is "
                               "irreversible (409).")
    def post(self, request: Request, key: str, env: str) -> Response:
        data = MigrationRollbackInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = requested_version(request, data.validated_data.get("version"), required=False)
        return _response(submit_state(actor=self.actor(), flag=key, environment=env,
                                      action=Action.MIGRATION_ROLLED_BACK, version=version,
                                      reason=data.validated_data.get("reason", "")))


class DivergenceListView(ManagementView):
    @extend_schema(operation_id="migration_divergences", summary="The divergence list (reconciliation trail)",
                   tags=TAGS, parameters=[*STATE_PARAMS, RESOLVED],
                   responses={200: DivergenceOutput(many=True), **errors(400, 404)},
                   description="Writes that reached the authoritative origin but not the other one, one row "
                               "per record (key hash, origin, operation, identifier), newest first; at most "
                               "1000 (the export has them all).")
    def get(self, request: Request, key: str, env: str) -> Response:
        state = flag_state_get(key, env)
        rows = divergence_list(state, resolved=_resolved(request))[:1000]
        return Response(DivergenceOutput([divergence_row(state, d) for d in rows], many=True).data)


class DivergenceExportView(ManagementView):
    content_negotiation_class = FormatIsOurs  # ``format`` names the export's, not DRF's renderer
    @extend_schema(operation_id="migration_divergences_export", summary="Export the divergence list",
                   tags=TAGS, parameters=[*STATE_PARAMS, RESOLVED, OpenApiParameter(
                       "format", OpenApiTypes.STR, enum=["csv", "jsonl"], description="csv (default) or jsonl")],
                   responses={(200, "text/csv"): OpenApiTypes.STR, (200, "application/x-ndjson"): OpenApiTypes.STR,
                              **errors(400, 404)},
                   description="Every divergence, streamed: CSV with a header row, or JSON Lines.")
    def get(self, request: Request, key: str, env: str) -> HttpResponseBase:
        fmt = request.query_params.get("format", "csv")
        if fmt not in ("csv", "jsonl"):
            raise ValidationFailed.field("format", "must be 'csv' or 'jsonl'")
        state = flag_state_get(key, env)
        response = StreamingHttpResponse(streamed(request, export_lines(state, fmt=fmt, resolved=_resolved(request))),
                                         content_type="text/csv" if fmt == "csv" else "application/x-ndjson")
        response["Content-Disposition"] = f'attachment; filename="divergences-{key}-{env}.{fmt}"'
        return response


class DivergenceResolveView(ManagementView):
    capabilities = {"POST": Capability.EDIT}

    @extend_schema(operation_id="migration_divergences_resolve", summary="Mark divergences resolved",
                   tags=TAGS, parameters=STATE_PARAMS, request=DivergenceResolveInput,
                   responses={200: OpenApiResponse(description="applied"),
                              202: OpenApiResponse(description="a change request waits for a second person"),
                              **errors(400, 403, 404, 409)},
                   description="Divergences someone reconciled (ids, or \"all\"), with how (the reason). "
                               "Audited; a record that diverges again is open again.")
    def post(self, request: Request, key: str, env: str) -> Response:
        data = DivergenceResolveInput(data=request.data)
        data.is_valid(raise_exception=True)
        return _response(submit_state(actor=self.actor(), flag=key, environment=env,
                                      action=Action.MIGRATION_DIVERGENCES_RESOLVED,
                                      params={"divergences": data.validated_data["divergences"]},
                                      reason=data.validated_data.get("reason", "")))
