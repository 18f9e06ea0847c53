"""Workloads: what moves from legacy to parallel. Writes carry the version they read."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from actions.submit import submit
from audit.names import Action
from common.api import ManagementListView, ManagementView, etag, query_reason, requested_version
from common.fields import ReasonField, key_field, provided
from common.inputs import Input
from common.schema import IF_MATCH, errors
from rollout import selectors
from rollout.api.change_requests import outcome_response
from rollout.api.rollout_outputs import PendingOutput
from rollout.filters import WorkloadFilter
from rollout.models import Phase, Reversibility, Risk, Workload
from rollout.services.workloads import EDITABLE, workload_create, workload_delete

TAGS = ["workloads"]


class WorkloadOutput(serializers.Serializer[Any]):
    key = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    owner = serializers.CharField()
    risk = serializers.ChoiceField(choices=Risk.choices)
    phase = serializers.ChoiceField(choices=Phase.choices)
    reversibility = serializers.ChoiceField(choices=Reversibility.choices)
    legacy_system = serializers.CharField()
    parallel_system = serializers.CharField()
    version = serializers.IntegerField(help_text="Send it back with a change; a stale one gets 409.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


def _fields(required: bool) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
    optional: dict[str, Any] = {"required": False}
    text: dict[str, Any] = {"required": False, "allow_blank": True}
    return {
        "name": serializers.CharField(max_length=200, **({} if required else optional)),
        "description": serializers.CharField(max_length=10_000, **text),
        "owner": serializers.CharField(max_length=200, **text),
        "risk": serializers.ChoiceField(choices=Risk.choices, required=False),
        "phase": serializers.ChoiceField(choices=Phase.choices, required=False),
        "reversibility": serializers.ChoiceField(choices=Reversibility.choices, required=False),
        "legacy_system": serializers.CharField(max_length=200, **text),
        "parallel_system": serializers.CharField(max_length=200, **text),
    }


class WorkloadListView(ManagementListView):
    serializer_class = WorkloadOutput
    filterset_class = WorkloadFilter
    ordering_fields = ["key", "name", "risk", "phase", "updated_at"]
    ordering = ["key"]

    WorkloadCreateInput = type("WorkloadCreateInput", (Input,), {"key": key_field(), **_fields(True)})

    def get_queryset(self) -> QuerySet[Workload]:
        return selectors.workload_list()

    @extend_schema(operation_id="workloads_list", summary="List workloads", tags=TAGS,
                   responses={200: WorkloadOutput(many=True), **errors(400)})
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(operation_id="workloads_create", summary="Create a workload", tags=TAGS,
                   request=WorkloadCreateInput, responses={201: WorkloadOutput, **errors(400)})
    def post(self, request: Request) -> Response:
        data = self.WorkloadCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        workload = workload_create(actor=self.actor(), **data.validated_data)
        response = Response(WorkloadOutput(workload).data, status=status.HTTP_201_CREATED)
        response["ETag"] = etag(workload.version)
        return response


class WorkloadDetailView(ManagementView):
    WorkloadUpdateInput = type("WorkloadUpdateInput", (Input,), {
        "version": serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False,
                                            help_text="The version read (or send If-Match)."),
        **_fields(False),
        "reason": ReasonField(),
    })

    @extend_schema(operation_id="workloads_retrieve", summary="One workload", tags=TAGS,
                   responses={200: WorkloadOutput, **errors(404)})
    def get(self, request: Request, key: str) -> Response:
        workload = selectors.workload_get(key)
        response = Response(WorkloadOutput(workload).data)
        response["ETag"] = etag(workload.version)
        return response

    @extend_schema(operation_id="workloads_update", summary="Change a workload (needs the version read)",
                   tags=TAGS, parameters=[IF_MATCH], request=WorkloadUpdateInput,
                   responses={200: WorkloadOutput, 202: PendingOutput, **errors(400, 403, 404, 409, 428)},
                   description="Risk and reversibility decide what needs a second person, so changing them needs "
                               "the approval that the current and the new value require (202 with the change "
                               "request); other fields are applied at once.")
    def patch(self, request: Request, key: str) -> Response:
        data = self.WorkloadUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = requested_version(request, data.validated_data.get("version"))
        outcome = submit(actor=self.actor(), action=Action.WORKLOAD_UPDATED, target=key,
                         params=provided(data.validated_data, *EDITABLE), version=version,
                         reason=data.validated_data["reason"])
        if not outcome.applied:
            return outcome_response(outcome, WorkloadOutput)
        workload = outcome.target
        response = Response(WorkloadOutput(workload).data)
        response["ETag"] = etag(workload.version)
        return response

    @extend_schema(operation_id="workloads_destroy", summary="Delete a workload without flags", tags=TAGS,
                   parameters=[IF_MATCH,
                               OpenApiParameter("version", OpenApiTypes.INT, required=False,
                                                description="The version read (or send If-Match)."),
                               OpenApiParameter("reason", OpenApiTypes.STR, required=False)],
                   responses={204: None, **errors(400, 404, 409, 428)})
    def delete(self, request: Request, key: str) -> Response:
        version = requested_version(request)
        workload_delete(actor=self.actor(), key=key, version=version,
                        reason=query_reason(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
