"""Flags and their per-environment states (the rollout), with kill / resume / retire actions."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import ManagementListView, ManagementView, etag, query_reason, requested_version
from common.fields import PercentageField, ReasonField, key_field, provided
from common.permissions import Capability, require
from common.schema import IF_MATCH, errors
from rollout import selectors
from rollout.api.fields import OverridesField
from rollout.filters import FlagFilter
from rollout.models import FlagState
from rollout.services.flags import (
    flag_create,
    flag_delete,
    flag_state_kill,
    flag_state_resume,
    flag_state_retire,
    flag_state_update,
    flag_update,
)

TAGS = ["flags"]
STATE_TAGS = ["flag states"]
VERSION_FIELD: dict[str, Any] = {"min_value": 1, "max_value": 2**31 - 1, "required": False,
                 "help_text": "The version read (or send If-Match)."}


class FlagOutput(serializers.Serializer):  # type: ignore[type-arg]
    key = serializers.CharField()
    workload = serializers.CharField(source="workload.key")
    description = serializers.CharField()
    salt = serializers.CharField()
    bucket_by = serializers.CharField(help_text="Attribute to bucket by (empty: the context key).")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class FlagStateOutput(serializers.Serializer):  # type: ignore[type-arg]
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

    class FlagCreateInput(serializers.Serializer):  # type: ignore[type-arg]
        key = key_field()
        workload = key_field(help_text="The workload's key.")
        description = serializers.CharField(max_length=10_000, required=False, allow_blank=True, default="")
        salt = serializers.CharField(max_length=100, required=False, allow_blank=True, default="",
                                     help_text="Bucketing salt; defaults to the flag key.")
        bucket_by = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")

    def get_queryset(self):  # type: ignore[no-untyped-def]
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
    class FlagUpdateInput(serializers.Serializer):  # type: ignore[type-arg]
        description = serializers.CharField(max_length=10_000, required=False, allow_blank=True)
        salt = serializers.CharField(max_length=100, required=False)
        bucket_by = serializers.CharField(max_length=100, required=False, allow_blank=True)
        reason = ReasonField(help_text="Why: kept in the audit log; required when salt or bucket_by change.")

    @extend_schema(operation_id="flags_retrieve", summary="One flag", tags=TAGS,
                   responses={200: FlagOutput, **errors(404)})
    def get(self, request: Request, key: str) -> Response:
        return Response(FlagOutput(selectors.flag_get(key)).data)

    @extend_schema(operation_id="flags_update", summary="Change a flag", tags=TAGS,
                   description="Changing `salt` or `bucket_by` moves subjects between paths wherever the flag is "
                               "live, so it needs a reason and the right to change each of those environments.",
                   request=FlagUpdateInput, responses={200: FlagOutput, **errors(400, 404)})
    def patch(self, request: Request, key: str) -> Response:
        data = self.FlagUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = provided(data.validated_data, "description", "salt", "bucket_by")
        flag = selectors.flag_get(key)
        if any(name in fields and fields[name].strip() != getattr(flag, name) for name in ("salt", "bucket_by")):
            for env in selectors.flag_live_environments(flag):
                require(request.user, Capability.CHANGE_ENV, environment=env)
        flag = flag_update(actor=self.actor(), key=key, reason=data.validated_data["reason"], **fields)
        return Response(FlagOutput(flag).data)

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

    class FlagStateUpdateInput(serializers.Serializer):  # type: ignore[type-arg]
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
                   responses={200: FlagStateOutput, **errors(400, 404, 409, 428)})
    def patch(self, request: Request, key: str, env: str) -> Response:
        data = self.FlagStateUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = requested_version(request, data.validated_data.get("version"))
        require(request.user, Capability.CHANGE_ENV, environment=selectors.environment_get(env))
        values = provided(data.validated_data, "enabled", "compare_percentage", "include_cohorts",
                          "exclude_cohorts", "overrides")
        if "percentage" in data.validated_data:
            values["percentage_value"] = data.validated_data["percentage"]
        state = flag_state_update(actor=self.actor(), flag=key, environment=env, version=version,
                                  reason=data.validated_data["reason"], **values)
        return _state_response(state)


class FlagStateKillView(ManagementView):
    capabilities = {"POST": Capability.EMERGENCY}

    class FlagStateKillInput(serializers.Serializer):  # type: ignore[type-arg]
        reason = ReasonField()

    @extend_schema(operation_id="flag_states_kill", summary="Kill: everyone to legacy, now (no version needed)",
                   tags=STATE_TAGS, request=FlagStateKillInput,
                   responses={200: FlagStateOutput, **errors(400, 404, 409)})
    def post(self, request: Request, key: str, env: str) -> Response:
        data = self.FlagStateKillInput(data=request.data)
        data.is_valid(raise_exception=True)
        state = flag_state_kill(actor=self.actor(), flag=key, environment=env, reason=data.validated_data["reason"])
        return _state_response(state)


class _VersionedActionInput(serializers.Serializer):  # type: ignore[type-arg]
    version = serializers.IntegerField(**VERSION_FIELD)
    reason = ReasonField()


class FlagStateResumeView(ManagementView):
    capabilities = {"POST": Capability.CHANGE_ENV}

    class FlagStateResumeInput(_VersionedActionInput):
        pass

    @extend_schema(operation_id="flag_states_resume", summary="Resume a killed (disabled) rollout",
                   tags=STATE_TAGS, parameters=[IF_MATCH], request=FlagStateResumeInput,
                   responses={200: FlagStateOutput, **errors(400, 404, 409, 428)})
    def post(self, request: Request, key: str, env: str) -> Response:
        data = self.FlagStateResumeInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = requested_version(request, data.validated_data.get("version"))
        require(request.user, Capability.CHANGE_ENV, environment=selectors.environment_get(env))
        state = flag_state_resume(actor=self.actor(), flag=key, environment=env, version=version,
                                  reason=data.validated_data["reason"])
        return _state_response(state)


class FlagStateRetireView(ManagementView):
    capabilities = {"POST": Capability.CHANGE_ENV}

    class FlagStateRetireInput(_VersionedActionInput):
        pass

    @extend_schema(operation_id="flag_states_retire", summary="Retire legacy: everyone to parallel (from 100%)",
                   tags=STATE_TAGS, parameters=[IF_MATCH], request=FlagStateRetireInput,
                   responses={200: FlagStateOutput, **errors(400, 404, 409, 428)})
    def post(self, request: Request, key: str, env: str) -> Response:
        data = self.FlagStateRetireInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = requested_version(request, data.validated_data.get("version"))
        require(request.user, Capability.CHANGE_ENV, environment=selectors.environment_get(env))
        state = flag_state_retire(actor=self.actor(), flag=key, environment=env, version=version,
                                  reason=data.validated_data["reason"])
        return _state_response(state)
