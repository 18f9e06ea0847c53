"""Environments: listed by everyone, created and changed by admins."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import ManagementListView, ManagementView
from common.fields import ReasonField, key_field, provided
from common.inputs import Input
from common.permissions import Capability
from common.schema import errors
from rollout import selectors
from rollout.models import Environment
from rollout.services.environments import environment_create, environment_update

TAGS = ["environments"]


class EnvironmentOutput(serializers.Serializer[Any]):
    key = serializers.CharField()
    name = serializers.CharField()
    order = serializers.IntegerField()
    requires_approval = serializers.BooleanField()
    description = serializers.CharField()
    ruleset_version = serializers.IntegerField(help_text="Grows with every change SDKs must see.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class EnvironmentListView(ManagementListView):
    write_capability = Capability.ADMINISTER
    serializer_class = EnvironmentOutput
    ordering_fields = ["key", "order", "name"]
    ordering = ["order", "key"]
    filterset_fields: list[str] = []

    class EnvironmentCreateInput(Input):
        key = key_field()
        name = serializers.CharField(max_length=100)
        order = serializers.IntegerField(min_value=0, max_value=2**31 - 1, default=0)
        requires_approval = serializers.BooleanField(default=False)
        description = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")

    def get_queryset(self) -> QuerySet[Environment]:
        return selectors.environment_list()

    @extend_schema(operation_id="environments_list", summary="List environments", tags=TAGS,
                   responses={200: EnvironmentOutput(many=True), **errors(400)})
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(operation_id="environments_create", summary="Create an environment (admin)", tags=TAGS,
                   request=EnvironmentCreateInput, responses={201: EnvironmentOutput, **errors(400)})
    def post(self, request: Request) -> Response:
        data = self.EnvironmentCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        env = environment_create(actor=self.actor(), **data.validated_data)
        return Response(EnvironmentOutput(env).data, status=status.HTTP_201_CREATED)


class EnvironmentDetailView(ManagementView):
    write_capability = Capability.ADMINISTER

    class EnvironmentUpdateInput(Input):
        name = serializers.CharField(max_length=100, required=False)
        order = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False)
        requires_approval = serializers.BooleanField(required=False)
        description = serializers.CharField(max_length=2000, required=False, allow_blank=True)
        reason = ReasonField()

    @extend_schema(operation_id="environments_retrieve", summary="One environment", tags=TAGS,
                   responses={200: EnvironmentOutput, **errors(404)})
    def get(self, request: Request, key: str) -> Response:
        return Response(EnvironmentOutput(selectors.environment_get(key)).data)

    @extend_schema(operation_id="environments_update", summary="Change an environment (admin)", tags=TAGS,
                   request=EnvironmentUpdateInput, responses={200: EnvironmentOutput, **errors(400, 404)})
    def patch(self, request: Request, key: str) -> Response:
        data = self.EnvironmentUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = provided(data.validated_data, "name", "order", "requires_approval", "description")
        env = environment_update(actor=self.actor(), key=key, reason=data.validated_data["reason"], **fields)
        return Response(EnvironmentOutput(env).data)
