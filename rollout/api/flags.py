"""Flags and their per-environment states (the rollout), with kill / resume / retire actions."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from actions.submit import Outcome, submit, submit_state
from audit.names import Action
from common.api import ManagementListView, ManagementView, etag, query_reason, requested_version
from common.fields import PercentageField, ReasonField, key_field, provided
from common.inputs import Input
from common.permissions import Capability
from common.schema import IF_MATCH, errors
from rollout import selectors
from rollout.api.change_requests import outcome_response
from rollout.api.fields import OverridesField
from rollout.api.rollout_outputs import PendingOutput
from rollout.filters import FlagFilter
from rollout.models import Flag, FlagKind, FlagState
from rollout.services.flags import flag_create, flag_delete

TAGS = ["flags"]
STATE_TAGS = ["flag states"]
VERSION_FIELD: dict[str, Any] = {"min_value": 1, "max_value": 2**31 - 1, "required": False,
                 "help_text": "The version read (or send If-Match)."}


class FlagOutput(serializers.Serializer[Any]):
    key = serializers.CharField()
    workload = serializers.CharField(source="workload.key")
    description = serializers.CharField()
    salt = serializers.CharField()
    bucket_by = serializers.CharField(help_text="Attribute to bucket by (empty: the context key).")
    kind = serializers.ChoiceField(choices=FlagKind.choices, help_text="`migration`: a data migration.")
    version = serializers.IntegerField(help_text="Send it back with a change (or If-Match); a stale one gets 409.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class FlagStateOutput(serializers.Serializer[Any]):
    flag = serializers.CharField(source="flag.key")
    environment = serializers.CharField(source="environment.key")
    enabled = serializers.BooleanField()
    retired = serializers.BooleanField()
    percentage = serializers.FloatField()
    compare_percentage = serializers.FloatField()
    include_cohorts = serializers.SerializerMethodField()
    exclude_cohorts = serializers.SerializerMethodField()
    overrides = OverridesField()
    stage = serializers.IntegerField()
    version = serializers.IntegerField(help_text="Send it back with a change; a stale one gets 409.")
    updated_at = serializers.DateTimeField()

    def get_include_cohorts(self, state: FlagState) -> list[str]:
        return sorted(c.key for c in state.include_cohorts.all())

    def get_exclude_cohorts(self, state: FlagState) -> list[str]:
        return sorted(c.key for c in state.exclude_cohorts.all())


def _state_outcome(outcome: Outcome) -> Response:
    """Applied: the state as it now stands (with its ETag); waiting for approval: 202 and the request."""
    if outcome.applied:
        return _state_response(outcome.target)
    return outcome_response(outcome, FlagStateOutput)


def _state_response(state: FlagState, status_code: int = status.HTTP_200_OK) -> Response:
    state = selectors.flag_state_get(state.flag.key, state.environment.key)
    response = Response(FlagStateOutput(state).data, status=status_code)
    response["ETag"] = etag(state.version)
    return response


class FlagListView(ManagementListView):
    serializer_class = FlagOutput
    filterset_class = FlagFilter
    ordering_fields = ["key", "created_at", "updated_at"]
    ordering = ["key"]

    class FlagCreateInput(Input):
        key = key_field()
        workload = key_field(help_text="The workload's key.")
        description = serializers.CharField(max_length=10_000, required=False, allow_blank=True, default="")
        salt = serializers.CharField(max_length=100, required=False, allow_blank=True, default="",
                                     help_text="Bucketing salt; defaults to the flag key.")
        bucket_by = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
        kind = serializers.ChoiceField(choices=FlagKind.choices, required=False, default=FlagKind.RELEASE,
                                       help_text="`migration`: a data migration with read/write stages "
                                                 "(docs/migrations.md).")

    def get_queryset(self) -> QuerySet[Flag]:
        return selectors.flag_list()

    @extend_schema(operation_id="flags_list", summary="List flags", tags=TAGS,
                   responses={200: FlagOutput(many=True), **errors(400)})
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(operation_id="flags_create", summary="Create a flag (off, 0% in every environment)", tags=TAGS,
                   request=FlagCreateInput, responses={201: FlagOutput, **errors(400)})
    def post(self, request: Request) -> Response:
        data = self.FlagCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        values["salt"] = values["salt"] or None
        flag = flag_create(actor=self.actor(), **values)
        return Response(FlagOutput(flag).data, status=status.HTTP_201_CREATED)


class FlagDetailView(ManagementView):
    class FlagUpdateInput(Input):
        description = serializers.CharField(max_length=10_000, required=False, allow_blank=True)
        salt = serializers.CharField(max_length=100, required=False)
        bucket_by = serializers.CharField(max_length=100, required=False, allow_blank=True)
        version = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False,
                                           help_text="Optional: the version read (or If-Match); 409 if stale.")
        reason = ReasonField(help_text="Why: kept in the audit log; required when salt or bucket_by change.")

    @extend_schema(operation_id="flags_retrieve", summary="One flag", tags=TAGS,
                   responses={200: FlagOutput, **errors(404)})
    def get(self, request: Request, key: str) -> Response:
        return Response(FlagOutput(selectors.flag_get(key)).data)

    @extend_schema(operation_id="flags_update", summary="Change a flag", tags=TAGS,
                   description="Changing `salt` or `bucket_by` moves subjects between paths wherever the flag is "
                               "live, so it needs a reason and the approval those environments and the workload "
                               "require (202 with a change request where a second person must approve).",
                   parameters=[IF_MATCH], request=FlagUpdateInput,
                   responses={200: FlagOutput, 202: PendingOutput, **errors(400, 403, 404, 409)})
    def patch(self, request: Request, key: str) -> Response:
        data = self.FlagUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = provided(data.validated_data, "description", "salt", "bucket_by")
        version = requested_version(request, data.validated_data.get("version"), required=False)
        outcome = submit(actor=self.actor(), action=Action.FLAG_UPDATED, target=key, params=fields, version=version,
                         reason=data.validated_data["reason"])
        return outcome_response(outcome, lambda flag: FlagOutput(flag).data)

    @extend_schema(operation_id="flags_destroy", summary="Delete a flag that is off everywhere", tags=TAGS,
                   parameters=[OpenApiParameter("reason", OpenApiTypes.STR, required=False)],
                   responses={204: None, **errors(400, 404, 409)})
    def delete(self, request: Request, key: str) -> Response:
        flag_delete(actor=self.actor(), key=key, reason=query_reason(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class FlagStateListView(ManagementView):
    @extend_schema(operation_id="flag_states_list", summary="A flag's state in every environment",
                   tags=STATE_TAGS, responses={200: FlagStateOutput(many=True), **errors(404)})
    def get(self, request: Request, key: str) -> Response:
        return Response(FlagStateOutput(selectors.flag_state_list(key), many=True).data)


class FlagStateDetailView(ManagementView):
    capabilities = {"PATCH": Capability.CHANGE_ENV}

    class FlagStateUpdateInput(Input):
        version = serializers.IntegerField(**VERSION_FIELD)
        enabled = serializers.BooleanField(required=False)
        percentage = PercentageField(required=False)
        compare_percentage = PercentageField(required=False)
        include_cohorts = serializers.ListField(child=key_field(), max_length=1000, required=False)
        exclude_cohorts = serializers.ListField(child=key_field(), max_length=1000, required=False)
        overrides = OverridesField(required=False)
        reason = ReasonField()

    @extend_schema(operation_id="flag_states_retrieve", summary="A flag's state in one environment",
                   tags=STATE_TAGS, responses={200: FlagStateOutput, **errors(404)})
    def get(self, request: Request, key: str, env: str) -> Response:
        state = selectors.flag_state_get(key, env)
        response = Response(FlagStateOutput(state).data)
        response["ETag"] = etag(state.version)
        return response

    @extend_schema(operation_id="flag_states_update", summary="Change the rollout (needs the version read)",
                   tags=STATE_TAGS, parameters=[IF_MATCH], request=FlagStateUpdateInput,
                   responses={200: FlagStateOutput, 202: PendingOutput, **errors(400, 403, 404, 409, 428)})
    def patch(self, request: Request, key: str, env: str) -> Response:
        data = self.FlagStateUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = requested_version(request, data.validated_data.get("version"))
        values = provided(data.validated_data, "enabled", "percentage", "compare_percentage", "include_cohorts",
                          "exclude_cohorts", "overrides")
        for name in ("percentage", "compare_percentage"):  # the change request keeps JSON, not Decimal
            if name in values:
                values[name] = str(values[name])
        return _state_outcome(submit_state(actor=self.actor(), flag=key, environment=env,
                                           action=Action.FLAG_STATE_UPDATED, params=values, version=version,
                                           reason=data.validated_data["reason"]))


class FlagStateKillView(ManagementView):
    capabilities = {"POST": Capability.EMERGENCY}

    class FlagStateKillInput(Input):
        version = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False, help_text=(
            "Optional: the version read (or If-Match); a stale one gets 409. Without it the kill applies to "
            "whatever stands now, and the audit event records the version it replaced."))
        reason = ReasonField()

    @extend_schema(operation_id="flag_states_kill", summary="Kill: everyone to legacy, now (no version needed)",
                   tags=STATE_TAGS, parameters=[IF_MATCH], request=FlagStateKillInput,
                   responses={200: FlagStateOutput, **errors(400, 403, 404, 409)})
    def post(self, request: Request, key: str, env: str) -> Response:
        data = self.FlagStateKillInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = requested_version(request, data.validated_data.get("version"), required=False)
        return _state_outcome(submit_state(actor=self.actor(), flag=key, environment=env,
                                           action=Action.FLAG_STATE_KILLED, version=version,
                                           reason=data.validated_data["reason"]))


class _VersionedActionInput(Input):
    version = serializers.IntegerField(**VERSION_FIELD)
    reason = ReasonField()


class FlagStateResumeView(ManagementView):
    capabilities = {"POST": Capability.CHANGE_ENV}

    class FlagStateResumeInput(_VersionedActionInput):
        pass

    @extend_schema(operation_id="flag_states_resume", summary="Resume a killed (disabled) rollout",
                   tags=STATE_TAGS, parameters=[IF_MATCH], request=FlagStateResumeInput,
                   responses={200: FlagStateOutput, 202: PendingOutput, **errors(400, 403, 404, 409, 428)})
    def post(self, request: Request, key: str, env: str) -> Response:
        data = self.FlagStateResumeInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = requested_version(request, data.validated_data.get("version"))
        return _state_outcome(submit_state(actor=self.actor(), flag=key, environment=env,
                                           action=Action.FLAG_STATE_RESUMED, version=version,
                                           reason=data.validated_data["reason"]))


class FlagStateRetireView(ManagementView):
    capabilities = {"POST": Capability.CHANGE_ENV}

    class FlagStateRetireInput(_VersionedActionInput):
        pass

    @extend_schema(operation_id="flag_states_retire", summary="Retire legacy: everyone to parallel (from 100%)",
                   tags=STATE_TAGS, parameters=[IF_MATCH], request=FlagStateRetireInput,
                   responses={200: FlagStateOutput, 202: PendingOutput, **errors(400, 403, 404, 409, 428)})
    def post(self, request: Request, key: str, env: str) -> Response:
        data = self.FlagStateRetireInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = requested_version(request, data.validated_data.get("version"))
        return _state_outcome(submit_state(actor=self.actor(), flag=key, environment=env,
                                           action=Action.FLAG_STATE_RETIRED, version=version,
                                           reason=data.validated_data["reason"]))
