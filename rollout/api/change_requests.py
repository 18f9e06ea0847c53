"""Change requests (four eyes) and break-glass review items."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.actors import Actor
from common.errors import Conflict, NotFound
from common.permissions import Capability, HasCapability
from common.schema import ERROR_RESPONSES, ErrorSerializer
from rollout.api.rollouts import SUBMIT_RESPONSES, submitted_response
from rollout.models import ChangeRequest, ChangeRequestStatus, ReviewItem
from rollout.services.change_requests import (
    ACTIONS,
    change_request_approve,
    change_request_cancel,
    change_request_reject,
    change_request_submit,
    review_item_acknowledge,
)
from rollout.snapshots import change_request_snapshot


def _cr_out(cr: ChangeRequest) -> dict[str, Any]:
    return {**change_request_snapshot(cr), "reason": cr.reason, "created_at": cr.created_at.isoformat(),
            "decided_at": cr.decided_at.isoformat() if cr.decided_at else None,
            "stale": cr.status == ChangeRequestStatus.PENDING and cr.flag_state.version != cr.based_on_version}


def _review_out(item: ReviewItem) -> dict[str, Any]:
    return {"id": item.pk, "flag": item.flag_state.flag.key, "environment": item.flag_state.environment.key,
            "action": item.action, "actor": item.actor_label, "reason": item.reason,
            "audit_sequence": item.audit_sequence, "created_at": item.created_at.isoformat(),
            "acknowledged_by": item.acknowledged_by_label or None,
            "acknowledged_at": item.acknowledged_at.isoformat() if item.acknowledged_at else None, "note": item.note}


class SubmitInput(serializers.Serializer):
    flag = serializers.CharField(max_length=63)
    environment = serializers.CharField(max_length=63)
    action = serializers.ChoiceField(choices=sorted(ACTIONS))
    params = serializers.DictField(required=False, default=dict)
    version = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class ChangeRequestListView(APIView):
    permission_classes = [IsAuthenticated, HasCapability]

    @extend_schema(operation_id="change_requests_list", tags=["change requests"], parameters=[
        OpenApiParameter("status", OpenApiTypes.STR, enum=ChangeRequestStatus.values),
        OpenApiParameter("flag", OpenApiTypes.STR), OpenApiParameter("environment", OpenApiTypes.STR)],
        responses={200: OpenApiTypes.OBJECT, **ERROR_RESPONSES})
    def get(self, request: Request) -> Response:
        qs = ChangeRequest.objects.select_related("flag_state__flag", "flag_state__environment").order_by("-pk")
        params = request.query_params
        if params.get("status"):
            qs = qs.filter(status=params["status"])
        if params.get("flag"):
            qs = qs.filter(flag_state__flag__key=params["flag"])
        if params.get("environment"):
            qs = qs.filter(flag_state__environment__key=params["environment"])
        return Response({"results": [_cr_out(cr) for cr in qs[:200]]})

    @extend_schema(operation_id="change_requests_submit", tags=["change requests"], request=SubmitInput,
                   responses=SUBMIT_RESPONSES,
                   description="Submit any change by its action name: applied at once (200) when the policy "
                               "allows, otherwise a pending change request (202).")
    def post(self, request: Request) -> Response:
        data = SubmitInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        return submitted_response(change_request_submit(
            actor=Actor.from_request(request), flag=v["flag"], environment=v["environment"], action=v["action"],
            params=v["params"], version=v.get("version"), reason=v["reason"]))


class ChangeRequestDetailView(APIView):
    permission_classes = [IsAuthenticated, HasCapability]

    @extend_schema(operation_id="change_requests_get", tags=["change requests"],
                   responses={200: OpenApiTypes.OBJECT, 404: ErrorSerializer, **ERROR_RESPONSES})
    def get(self, request: Request, pk: int) -> Response:
        cr = ChangeRequest.objects.select_related("flag_state__flag", "flag_state__environment").filter(pk=pk).first()
        if cr is None:
            raise NotFound(f"change request {pk} does not exist")
        return Response(_cr_out(cr))


class DecisionInput(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


DECISION_RESPONSES = {200: OpenApiTypes.OBJECT, 404: ErrorSerializer,
                      409: OpenApiResponse(ErrorSerializer, description="Not pending, or stale (now marked so)"),
                      **ERROR_RESPONSES}


class ApproveView(APIView):
    permission_classes = [IsAuthenticated, HasCapability]
    write_capability = Capability.APPROVE

    @extend_schema(operation_id="change_requests_approve", tags=["change requests"], request=DecisionInput,
                   responses=DECISION_RESPONSES,
                   description="Approve and apply (by an approver other than the requester). If the flag state "
                               "moved since the request, it is marked stale instead and 409 is returned.")
    def post(self, request: Request, pk: int) -> Response:
        data = DecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        cr = change_request_approve(actor=Actor.from_request(request), change_request=pk,
                                    reason=data.validated_data["reason"])
        if cr.status == ChangeRequestStatus.STALE:
            raise Conflict(f"change request {pk} is stale: the flag state changed since it was requested",
                           current_version=cr.flag_state.version)
        return Response(_cr_out(cr))


class RejectView(APIView):
    permission_classes = [IsAuthenticated, HasCapability]
    write_capability = Capability.APPROVE

    @extend_schema(operation_id="change_requests_reject", tags=["change requests"], request=DecisionInput,
                   responses=DECISION_RESPONSES)
    def post(self, request: Request, pk: int) -> Response:
        data = DecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(_cr_out(change_request_reject(actor=Actor.from_request(request), change_request=pk,
                                                      reason=data.validated_data["reason"])))


class CancelView(APIView):
    permission_classes = [IsAuthenticated, HasCapability]

    @extend_schema(operation_id="change_requests_cancel", tags=["change requests"], request=DecisionInput,
                   responses=DECISION_RESPONSES, description="The requester withdraws a pending request.")
    def post(self, request: Request, pk: int) -> Response:
        data = DecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(_cr_out(change_request_cancel(actor=Actor.from_request(request), change_request=pk,
                                                      reason=data.validated_data["reason"])))


class ReviewItemListView(APIView):
    permission_classes = [IsAuthenticated, HasCapability]

    @extend_schema(operation_id="review_items_list", tags=["change requests"],
                   parameters=[OpenApiParameter("open", OpenApiTypes.BOOL)],
                   responses={200: OpenApiTypes.OBJECT, **ERROR_RESPONSES},
                   description="Break-glass actions (kill / rollback where approval would apply) to review.")
    def get(self, request: Request) -> Response:
        qs = ReviewItem.objects.select_related("flag_state__flag", "flag_state__environment").order_by("-pk")
        if request.query_params.get("open") in {"1", "true"}:
            qs = qs.filter(acknowledged_at__isnull=True)
        return Response({"results": [_review_out(i) for i in qs[:200]]})


class AcknowledgeView(APIView):
    permission_classes = [IsAuthenticated, HasCapability]
    write_capability = Capability.APPROVE

    @extend_schema(operation_id="review_items_acknowledge", tags=["change requests"], request=DecisionInput,
                   responses={200: OpenApiTypes.OBJECT, 404: ErrorSerializer, 409: ErrorSerializer,
                              **ERROR_RESPONSES})
    def post(self, request: Request, pk: int) -> Response:
        data = DecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        item = review_item_acknowledge(actor=Actor.from_request(request), review_item=pk,
                                       note=data.validated_data["reason"])
        return Response(_review_out(item), status=status.HTTP_200_OK)
