"""Change requests (four eyes) and break-glass review items."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from actions.registry import ACTION_CHOICES
from actions.submit import (
    Outcome,
    change_request_approve,
    change_request_cancel,
    change_request_reject,
    review_item_acknowledge,
    submit,
    target_version,
)
from common.api import ManagementView, object_id
from common.errors import Conflict, NotFound, ValidationFailed
from common.fields import ReasonField, key_field
from common.inputs import Input, ObjectField
from common.permissions import Capability
from common.schema import errors
from rollout.api.rollout_outputs import (
    ChangeRequestListOutput,
    ChangeRequestOutput,
    PendingOutput,
    ReviewItemListOutput,
    ReviewItemOutput,
    RolloutOutput,
    change_request_data,
)
from rollout.models import ChangeRequest, ChangeRequestStatus, FlagState, ReviewItem
from rollout.plans.readiness import plan_status

TAGS = ["change requests"]
SUBMIT_RESPONSES = {
    200: OpenApiResponse(description="Applied: the target as it now stands"),
    202: OpenApiResponse(PendingOutput, description="Waiting for a second person: the change request"),
    **errors(400, 403, 404, 409, 428),
}
PK = OpenApiParameter("pk", OpenApiTypes.STR, OpenApiParameter.PATH, description="the id (digits)")
LIST_LIMIT = 200


def outcome_response(outcome: Outcome, applied: Callable[[Any], Any]) -> Response:
    """An action's outcome as the API says it: 200 with ``applied(target)`` when applied, 202 with the
    change request when it waits for a second person (refusals are 403 errors, raised before this)."""
    if outcome.change_request is not None:
        return Response({"applied": False, "change_request": change_request_data(outcome.change_request)},
                        status=status.HTTP_202_ACCEPTED)
    return Response(applied(outcome.target))


def _applied(target: Any) -> dict[str, Any]:
    if isinstance(target, FlagState):
        return {"applied": True, "rollout": RolloutOutput(plan_status(target)).data}
    return {"applied": True, "target": {"key": target.key, "version": target.version}}


def review_item_data(item: ReviewItem) -> dict[str, Any]:
    return ReviewItemOutput({
        "id": item.pk, "flag": item.flag_state.flag.key, "environment": item.flag_state.environment.key,
        "action": item.action, "actor": item.actor_label, "reason": item.reason,
        "audit_sequence": item.audit_sequence, "created_at": item.created_at.isoformat(),
        "acknowledged_by": item.acknowledged_by_label or None,
        "acknowledged_at": item.acknowledged_at.isoformat() if item.acknowledged_at else None, "note": item.note,
    }).data


def _requests() -> Any:
    return ChangeRequest.objects.select_related("flag_state__flag", "flag_state__environment")


class SubmitInput(Input):
    flag = key_field(required=False)
    environment = key_field(required=False)
    target = serializers.CharField(max_length=255, required=False, help_text=(
        "what the action changes: 'flag@environment' for a flag state, else the flag, workload or cohort key "
        "(instead of flag + environment)"))
    action = serializers.ChoiceField(choices=ACTION_CHOICES)
    params = ObjectField(required=False, default=dict, help_text="The action's parameters (a JSON object).")
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
                               "request (202), or refused (403) — the same answer as the UI and the per-object "
                               "endpoints. Actions: " + ", ".join(ACTION_CHOICES) + ".")
    def post(self, request: Request) -> Response:
        data = SubmitInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        if "target" in v:
            target = v["target"]
        elif "flag" in v and "environment" in v:
            target = f"{v['flag']}@{v['environment']}"
        else:
            raise ValidationFailed.field("target", "name the target, or the flag and the environment")
        return outcome_response(submit(actor=self.actor(), action=v["action"], target=target, params=v["params"],
                                       version=v.get("version"), reason=v["reason"]), _applied)


class ChangeRequestDetailView(ManagementView):
    @extend_schema(operation_id="change_requests_retrieve", summary="One change request", tags=TAGS,
                   parameters=[PK], responses={200: ChangeRequestOutput, **errors(404)})
    def get(self, request: Request, pk: str) -> Response:
        cr = _requests().filter(pk=object_id(pk, "change request")).first()
        if cr is None:
            raise NotFound(f"change request {pk} does not exist")
        return Response(change_request_data(cr))


class DecisionInput(Input):
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
            raise Conflict(f"change request {pk} is stale: {cr.target_label} changed since it was requested",
                           current_version=target_version(cr))
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
