"""Change requests (four eyes) and break-glass review items."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import ManagementView, object_id
from common.errors import Conflict, NotFound, ValidationFailed
from common.fields import ReasonField, key_field
from common.permissions import Capability
from common.schema import errors
from rollout.api.rollout_outputs import (
    ChangeRequestListOutput,
    ChangeRequestOutput,
    ParamsField,
    ReviewItemListOutput,
    ReviewItemOutput,
    change_request_data,
)
from rollout.api.rollouts import SUBMIT_RESPONSES, submitted_response
from rollout.models import ChangeRequest, ChangeRequestStatus, ReviewItem
from rollout.services.change_requests import (
    ACTION_CHOICES,
    ACTIONS,
    change_request_approve,
    change_request_cancel,
    change_request_reject,
    change_request_submit,
    review_item_acknowledge,
)

TAGS = ["change requests"]
PK = OpenApiParameter("pk", OpenApiTypes.STR, OpenApiParameter.PATH, description="the id (digits)")
LIST_LIMIT = 200


def review_item_data(item: ReviewItem) -> dict[str, Any]:
    return ReviewItemOutput({
        "id": item.pk, "flag": item.flag_state.flag.key, "environment": item.flag_state.environment.key,
        "action": item.action, "actor": item.actor_label, "reason": item.reason,
        "audit_sequence": item.audit_sequence, "created_at": item.created_at.isoformat(),
        "acknowledged_by": item.acknowledged_by_label or None,
        "acknowledged_at": item.acknowledged_at.isoformat() if item.acknowledged_at else None, "note": item.note,
    }).data  # type: ignore[return-value]


def _requests() -> Any:
    return ChangeRequest.objects.select_related("flag_state__flag", "flag_state__environment")


class SubmitInput(serializers.Serializer):  # type: ignore[type-arg]
    flag = key_field()
    environment = key_field()
    action = serializers.ChoiceField(choices=ACTION_CHOICES)
    params = ParamsField(required=False, default=dict)
    version = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**31 - 1)
    reason = ReasonField()


class ChangeRequestListView(ManagementView):
    capabilities = {"POST": Capability.EDIT}

    @extend_schema(operation_id="change_requests_list", summary="Change requests, newest first", tags=TAGS,
                   parameters=[OpenApiParameter("status", OpenApiTypes.STR, enum=ChangeRequestStatus.values),
                               OpenApiParameter("flag", OpenApiTypes.STR),
                               OpenApiParameter("environment", OpenApiTypes.STR)],
                   responses={200: ChangeRequestListOutput, **errors(400)})
    def get(self, request: Request) -> Response:
        qs = _requests().order_by("-pk")
        params = request.query_params
        if params.get("status"):
            if params["status"] not in ChangeRequestStatus.values:
                raise ValidationFailed.field("status", f"one of {', '.join(ChangeRequestStatus.values)}")
            qs = qs.filter(status=params["status"])
        if params.get("flag"):
            qs = qs.filter(flag_state__flag__key=params["flag"])
        if params.get("environment"):
            qs = qs.filter(flag_state__environment__key=params["environment"])
        return Response({"results": [change_request_data(cr) for cr in qs[:LIST_LIMIT]]})

    @extend_schema(operation_id="change_requests_submit", summary="Submit a change by its action name", tags=TAGS,
                   request=SubmitInput, responses=SUBMIT_RESPONSES,
                   description="Applied at once (200) when the policy allows, otherwise a pending change "
                               "request (202). Actions: " + ", ".join(sorted(ACTIONS)) + ".")
    def post(self, request: Request) -> Response:
        data = SubmitInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        return submitted_response(change_request_submit(
            actor=self.actor(), flag=v["flag"], environment=v["environment"], action=v["action"],
            params=v["params"], version=v.get("version"), reason=v["reason"]))


class ChangeRequestDetailView(ManagementView):
    @extend_schema(operation_id="change_requests_retrieve", summary="One change request", tags=TAGS,
                   parameters=[PK], responses={200: ChangeRequestOutput, **errors(404)})
    def get(self, request: Request, pk: str) -> Response:
        cr = _requests().filter(pk=object_id(pk, "change request")).first()
        if cr is None:
            raise NotFound(f"change request {pk} does not exist")
        return Response(change_request_data(cr))


class DecisionInput(serializers.Serializer):  # type: ignore[type-arg]
    reason = ReasonField()


DECISION_RESPONSES = {200: ChangeRequestOutput, **errors(400, 404, 409)}


class ApproveView(ManagementView):
    capabilities = {"POST": Capability.APPROVE}

    @extend_schema(operation_id="change_requests_approve", summary="Approve and apply", tags=TAGS,
                   parameters=[PK], request=DecisionInput, responses=DECISION_RESPONSES,
                   description="By an approver other than the requester. If the flag state moved since the "
                               "request, it is marked stale instead and 409 is returned.")
    def post(self, request: Request, pk: str) -> Response:
        data = DecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        cr = change_request_approve(actor=self.actor(), change_request=object_id(pk, "change request"),
                                    reason=data.validated_data["reason"])
        if cr.status == ChangeRequestStatus.STALE:
            raise Conflict(f"change request {pk} is stale: the flag state changed since it was requested",
                           current_version=cr.flag_state.version)
        return Response(change_request_data(cr))


class RejectView(ManagementView):
    capabilities = {"POST": Capability.APPROVE}

    @extend_schema(operation_id="change_requests_reject", summary="Reject", tags=TAGS, parameters=[PK],
                   request=DecisionInput, responses=DECISION_RESPONSES)
    def post(self, request: Request, pk: str) -> Response:
        data = DecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(change_request_data(change_request_reject(
            actor=self.actor(), change_request=object_id(pk, "change request"), reason=data.validated_data["reason"])))


class CancelView(ManagementView):
    capabilities = {"POST": Capability.EDIT}

    @extend_schema(operation_id="change_requests_cancel", summary="Withdraw your own pending request", tags=TAGS,
                   parameters=[PK], request=DecisionInput, responses=DECISION_RESPONSES)
    def post(self, request: Request, pk: str) -> Response:
        data = DecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(change_request_data(change_request_cancel(
            actor=self.actor(), change_request=object_id(pk, "change request"), reason=data.validated_data["reason"])))


class ReviewItemListView(ManagementView):
    @extend_schema(operation_id="review_items_list", summary="Break-glass actions to review", tags=TAGS,
                   parameters=[OpenApiParameter("open", OpenApiTypes.BOOL, description="only unacknowledged")],
                   responses={200: ReviewItemListOutput, **errors()},
                   description="Kills and rollbacks made where approval would apply, for an approver to review.")
    def get(self, request: Request) -> Response:
        qs = ReviewItem.objects.select_related("flag_state__flag", "flag_state__environment").order_by("-pk")
        if request.query_params.get("open") in {"1", "true"}:
            qs = qs.filter(acknowledged_at__isnull=True)
        return Response({"results": [review_item_data(i) for i in qs[:LIST_LIMIT]]})


class AcknowledgeView(ManagementView):
    capabilities = {"POST": Capability.APPROVE}

    @extend_schema(operation_id="review_items_acknowledge", summary="Acknowledge a break-glass action", tags=TAGS,
                   parameters=[PK], request=DecisionInput,
                   responses={200: OpenApiResponse(ReviewItemOutput), **errors(400, 404, 409)},
                   description="By an approver other than the person who broke the glass.")
    def post(self, request: Request, pk: str) -> Response:
        data = DecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(review_item_data(review_item_acknowledge(
            actor=self.actor(), review_item=object_id(pk, "review item"), note=data.validated_data["reason"])))
