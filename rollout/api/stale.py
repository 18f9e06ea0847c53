"""Stale flags (read by everyone) and archiving / restoring a flag (an action: policy decides)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from actions.submit import submit
from audit.names import Action
from common.api import ManagementView, requested_version
from common.errors import ValidationFailed
from common.fields import ReasonField
from common.inputs import Input
from common.schema import errors
from rollout.api.change_requests import SUBMIT_RESPONSES, outcome_response
from rollout.stale import stale_flags

TAGS = ["flags"]
DAYS = OpenApiParameter("days", OpenApiTypes.INT, description="stale after this many days without a change "
                                                              "(default TURNOUT_STALE_FLAG_DAYS, 30)")


class StaleFlagOutput(serializers.Serializer[Any]):
    key = serializers.CharField()
    workload = serializers.CharField()
    archived = serializers.BooleanField()
    why = serializers.CharField(help_text="'legacy retired', '100% parallel' or 'unchanged'")
    last_change = serializers.DateTimeField(allow_null=True)
    last_evaluated = serializers.DictField(child=serializers.DateTimeField(allow_null=True),
                                           help_text="environment key -> the last minute SDKs reported calls")


class StaleFlagListView(ManagementView):
    @extend_schema(operation_id="stale_flags_list", summary="Flags to clean up", tags=TAGS, parameters=[DAYS],
                   responses={200: StaleFlagOutput(many=True), **errors(400)},
                   description="Flags whose every environment has been retired, at 100% parallel or unchanged "
                               "for the given days, with the last SDK evaluation per environment.")
    def get(self, request: Request) -> Response:
        raw = request.query_params.get("days")
        days = None
        if raw is not None:
            if not raw.isdigit() or not 0 <= int(raw) <= 3650:
                raise ValidationFailed.field("days", "must be a whole number of days from 0 to 3650")
            days = int(raw)
        return Response(StaleFlagOutput(stale_flags(days=days), many=True).data)


class ArchiveInput(Input):
    version = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**31 - 1)
    reason = ReasonField()


def _applied(flag: Any) -> dict[str, Any]:
    return {"applied": True, "target": {"key": flag.key, "version": flag.version,
                                        "archived": flag.archived_at is not None}}


class FlagArchiveView(ManagementView):
    @extend_schema(operation_id="flags_archive", summary="Archive a flag nobody evaluates", tags=TAGS,
                   request=ArchiveInput, responses=SUBMIT_RESPONSES,
                   description="The flag leaves every ruleset (SDKs asking for it get legacy with FLAG_NOT_FOUND); "
                               "refused (409) while any SDK evaluated it within the stale age.")
    def post(self, request: Request, key: str) -> Response:
        data = ArchiveInput(data=request.data)
        data.is_valid(raise_exception=True)
        outcome = submit(actor=self.actor(), action=Action.FLAG_ARCHIVED, target=key,
                         version=requested_version(request, data.validated_data.get("version"), required=False),
                         reason=data.validated_data["reason"])
        return outcome_response(outcome, _applied)


class FlagRestoreView(ManagementView):
    @extend_schema(operation_id="flags_restore", summary="Restore an archived flag", tags=TAGS,
                   request=ArchiveInput, responses=SUBMIT_RESPONSES,
                   description="The flag returns to every ruleset with its states as they were.")
    def post(self, request: Request, key: str) -> Response:
        data = ArchiveInput(data=request.data)
        data.is_valid(raise_exception=True)
        outcome = submit(actor=self.actor(), action=Action.FLAG_RESTORED, target=key,
                         version=requested_version(request, data.validated_data.get("version"), required=False),
                         reason=data.validated_data["reason"])
        return outcome_response(outcome, _applied)
