"""Rollout API: plans (stages), advance / pause / rollback, guardrails, readiness, mismatches, gates.

Changes go through ``change_request_submit``: ``200`` with the state when applied at once,
``202`` with the change request when it waits for a second person. Pause and rollback never wait.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.actors import Actor
from common.errors import ValidationFailed
from common.permissions import Capability, HasCapability
from common.schema import ERROR_RESPONSES, ErrorSerializer
from rollout.models import BreachAction, Gate
from rollout.readiness import get_state, plan_status, readiness
from rollout.services.change_requests import Submitted, change_request_submit
from rollout.services.guardrails import LIMIT_FIELDS
from rollout.services.mismatches import mismatch_summary
from rollout.services.stages import plan_template, rollout_pause, rollout_rollback
from rollout.snapshots import change_request_snapshot, guardrail_snapshot

STATE_PARAMS = [
    OpenApiParameter("key", OpenApiTypes.STR, OpenApiParameter.PATH, description="flag key"),
    OpenApiParameter("env", OpenApiTypes.STR, OpenApiParameter.PATH, description="environment key"),
]
SUBMIT_RESPONSES = {
    200: OpenApiResponse(OpenApiTypes.OBJECT, description="Applied: the rollout as it now stands"),
    202: OpenApiResponse(OpenApiTypes.OBJECT, description="Waiting for approval: the change request"),
    404: OpenApiResponse(ErrorSerializer, description="No such flag or environment"),
    409: OpenApiResponse(ErrorSerializer, description="Stale version, or the rollout cannot do this now"),
    **ERROR_RESPONSES,
}


def submitted_response(result: Submitted) -> Response:
    if result.change_request is not None:
        return Response({"applied": False, "change_request": change_request_snapshot(result.change_request)},
                        status=status.HTTP_202_ACCEPTED)
    return Response({"applied": True, "rollout": plan_status(result.state)})


class RolloutView(APIView):
    permission_classes = [IsAuthenticated, HasCapability]

    def submit(self, request: Request, key: str, env: str, action: str, params: dict[str, Any],
               data: dict[str, Any]) -> Response:
        return submitted_response(change_request_submit(
            actor=Actor.from_request(request), flag=key, environment=env, action=action, params=params,
            version=data.get("version"), reason=data.get("reason", "")))


class ChangeInput(serializers.Serializer):
    version = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                       help_text="the flag state version you read (409 if it moved)")
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class StageInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    percentage = serializers.DecimalField(max_digits=7, decimal_places=4, required=False, default=0)
    compare_percentage = serializers.DecimalField(max_digits=7, decimal_places=4, required=False, default=0)
    include_cohorts = serializers.ListField(child=serializers.CharField(max_length=63), required=False, default=list)
    min_soak_seconds = serializers.IntegerField(required=False, default=0, min_value=0)
    gate = serializers.ChoiceField(choices=Gate.choices, required=False, default=Gate.MANUAL)
    scheduled_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    retires_legacy = serializers.BooleanField(required=False, default=False)


class PlanInput(ChangeInput):
    stages = StageInput(many=True, required=False)
    template = serializers.ChoiceField(choices=["standard"], required=False)
    internal_cohorts = serializers.ListField(child=serializers.CharField(max_length=63), required=False, default=list)
    pilot_cohorts = serializers.ListField(child=serializers.CharField(max_length=63), required=False, default=list)
    soak_seconds = serializers.IntegerField(required=False, allow_null=True, min_value=0, default=None)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("stages" in attrs) == ("template" in attrs):
            raise serializers.ValidationError("give either stages or a template")
        return attrs


def _stage_json(stage: dict[str, Any]) -> dict[str, Any]:
    out = dict(stage)
    out["percentage"] = float(out["percentage"])
    out["compare_percentage"] = float(out["compare_percentage"])
    out["scheduled_at"] = out["scheduled_at"].isoformat() if out["scheduled_at"] else None
    return out


class StagesView(RolloutView):
    @extend_schema(operation_id="rollout_plan_get", parameters=STATE_PARAMS, tags=["rollouts"],
                   responses={200: OpenApiTypes.OBJECT, 404: ErrorSerializer, **ERROR_RESPONSES},
                   description="The rollout plan, the stage in force, soak time left, pending change requests.")
    def get(self, request: Request, key: str, env: str) -> Response:
        return Response(plan_status(get_state(key, env)))

    @extend_schema(operation_id="rollout_plan_set", parameters=STATE_PARAMS, tags=["rollouts"], request=PlanInput,
                   responses=SUBMIT_RESPONSES,
                   description="Replace the plan of a rollout that has not started: explicit `stages`, or a "
                               "`template` (`standard`: validate → internal → pilot → 5% → 25% → 50% → 100% → "
                               "retire legacy).")
    def put(self, request: Request, key: str, env: str) -> Response:
        data = PlanInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        if "template" in v:
            stages = plan_template(v["template"], internal_cohorts=v["internal_cohorts"],
                                   pilot_cohorts=v["pilot_cohorts"], soak_seconds=v["soak_seconds"])
        else:
            stages = [_stage_json(s) for s in v["stages"]]
        return self.submit(request, key, env, "plan", {"stages": stages}, v)


class AdvanceInput(ChangeInput):
    force = serializers.BooleanField(required=False, default=False,
                                     help_text="advance past a breached guardrail (needs a reason)")


class AdvanceView(RolloutView):
    @extend_schema(operation_id="rollout_advance", parameters=STATE_PARAMS, tags=["rollouts"], request=AdvanceInput,
                   responses=SUBMIT_RESPONSES, description="Apply the next stage (the first call starts the plan).")
    def post(self, request: Request, key: str, env: str) -> Response:
        data = AdvanceInput(data=request.data)
        data.is_valid(raise_exception=True)
        params = {"force": True} if data.validated_data["force"] else {}
        return self.submit(request, key, env, "advance", params, data.validated_data)


class EmergencyInput(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class PauseView(RolloutView):
    write_capability = Capability.EMERGENCY

    @extend_schema(operation_id="rollout_pause", parameters=STATE_PARAMS, tags=["rollouts"], request=EmergencyInput,
                   responses={200: OpenApiTypes.OBJECT, 404: ErrorSerializer, 409: ErrorSerializer,
                              **ERROR_RESPONSES},
                   description="Hold the rollout where it is (no auto-advance, no scheduled start; the split is "
                               "unchanged). Never waits for approval.")
    def post(self, request: Request, key: str, env: str) -> Response:
        data = EmergencyInput(data=request.data)
        data.is_valid(raise_exception=True)
        state = rollout_pause(actor=Actor.from_request(request), flag=key, environment=env,
                              reason=data.validated_data["reason"])
        return Response({"applied": True, "rollout": plan_status(state)})


class RollbackView(RolloutView):
    write_capability = Capability.EMERGENCY

    @extend_schema(operation_id="rollout_rollback", parameters=STATE_PARAMS, tags=["rollouts"],
                   request=EmergencyInput,
                   responses={200: OpenApiTypes.OBJECT, 404: ErrorSerializer, 409: ErrorSerializer,
                              **ERROR_RESPONSES},
                   description="Back to the previous stage at once, then paused. Never waits for approval; where "
                               "approval would apply it is marked break-glass and an approver must review it. A "
                               "dual-write workload rolled back past the stage where parallel became primary "
                               "needs a reason.")
    def post(self, request: Request, key: str, env: str) -> Response:
        data = EmergencyInput(data=request.data)
        data.is_valid(raise_exception=True)
        state = rollout_rollback(actor=Actor.from_request(request), flag=key, environment=env,
                                 reason=data.validated_data["reason"])
        return Response({"applied": True, "rollout": plan_status(state)})


class GuardrailInput(ChangeInput):
    max_error_rate = serializers.DecimalField(max_digits=7, decimal_places=4, required=False, allow_null=True,
                                              help_text="percent of parallel calls")
    max_error_rate_increase = serializers.DecimalField(max_digits=7, decimal_places=4, required=False,
                                                       allow_null=True, help_text="percentage points above legacy")
    max_latency_p95_ratio = serializers.DecimalField(max_digits=8, decimal_places=3, required=False,
                                                     allow_null=True, help_text="parallel p95 / legacy p95")
    max_mismatch_rate = serializers.DecimalField(max_digits=7, decimal_places=4, required=False, allow_null=True,
                                                 help_text="percent of comparisons (known differences excluded)")
    min_sample_size = serializers.IntegerField(required=False, min_value=0)
    window_seconds = serializers.IntegerField(required=False, min_value=60, max_value=86_400)
    action = serializers.ChoiceField(choices=BreachAction.choices, required=False)


class GuardrailsView(RolloutView):
    @extend_schema(operation_id="rollout_guardrails_get", parameters=STATE_PARAMS, tags=["rollouts"],
                   responses={200: OpenApiTypes.OBJECT, 404: ErrorSerializer, **ERROR_RESPONSES})
    def get(self, request: Request, key: str, env: str) -> Response:
        state = get_state(key, env)
        from rollout.models import Guardrail
        from rollout.services.guardrails import evaluate_state, last_check

        health = evaluate_state(state)
        return Response({"config": guardrail_snapshot(Guardrail.objects.filter(flag_state=state).first()),
                         "status": health.status, "breaches": health.breaches, "judged": health.figures(),
                         "last_check": last_check(state.pk)})

    @extend_schema(operation_id="rollout_guardrails_set", parameters=STATE_PARAMS, tags=["rollouts"],
                   request=GuardrailInput, responses=SUBMIT_RESPONSES,
                   description="Create or change the guardrails; an omitted limit keeps its value, null removes it.")
    def put(self, request: Request, key: str, env: str) -> Response:
        data = GuardrailInput(data=request.data)
        data.is_valid(raise_exception=True)
        limits = {k: (float(v) if v is not None and k not in {"min_sample_size", "window_seconds", "action"} else v)
                  for k, v in data.validated_data.items() if k in LIMIT_FIELDS}
        return self.submit(request, key, env, "guardrails", limits, data.validated_data)


class ReadinessView(RolloutView):
    @extend_schema(operation_id="rollout_readiness", parameters=[
        *STATE_PARAMS, OpenApiParameter("window", OpenApiTypes.INT, description="seconds (60 to 604800)")],
        tags=["rollouts"], responses={200: OpenApiTypes.OBJECT, 404: ErrorSerializer, **ERROR_RESPONSES},
        description="Legacy vs parallel side by side over a window (calls, error rates, latency percentiles, "
                    "mismatch rate and groups with samples), the guardrails' status, soak time left and a "
                    "verdict: `ready`, `not_yet` or `failing`, with the reasons.")
    def get(self, request: Request, key: str, env: str) -> Response:
        window = request.query_params.get("window")
        if window is not None and not window.isdigit():
            raise ValidationFailed.field("window", "must be a whole number of seconds")
        return Response(readiness(get_state(key, env), window_seconds=int(window) if window else None))


class MismatchesView(RolloutView):
    @extend_schema(operation_id="rollout_mismatches", parameters=STATE_PARAMS, tags=["rollouts"],
                   responses={200: OpenApiTypes.OBJECT, 404: ErrorSerializer, **ERROR_RESPONSES},
                   description="Mismatch groups: kinds of difference, their counts and shares, known differences.")
    def get(self, request: Request, key: str, env: str) -> Response:
        return Response(mismatch_summary(get_state(key, env)))


class KnownInput(ChangeInput):
    known = serializers.BooleanField(required=False, default=True)


class MismatchKnownView(RolloutView):
    @extend_schema(operation_id="rollout_mismatch_known", parameters=[
        *STATE_PARAMS, OpenApiParameter("group", OpenApiTypes.INT, OpenApiParameter.PATH)], tags=["rollouts"],
        request=KnownInput, responses=SUBMIT_RESPONSES,
        description="Mark a mismatch group as a known difference (with a reason) or take the mark back; known "
                    "differences do not count against the mismatch guardrail.")
    def post(self, request: Request, key: str, env: str, group: int) -> Response:
        data = KnownInput(data=request.data)
        data.is_valid(raise_exception=True)
        return self.submit(request, key, env, "known_difference",
                           {"group": group, "known": data.validated_data["known"]}, data.validated_data)


class GateView(APIView):
    permission_classes = [IsAuthenticated, HasCapability]

    @extend_schema(
        operation_id="deployment_gate", tags=["gates"],
        parameters=[OpenApiParameter("flag", OpenApiTypes.STR, OpenApiParameter.PATH),
                    OpenApiParameter("env", OpenApiTypes.STR, OpenApiParameter.PATH),
                    OpenApiParameter("always_ok", OpenApiTypes.BOOL, description=(
                        "answer 200 whatever the verdict (for tools that judge the JSON, e.g. Argo Rollouts' "
                        "web metric, which counts any other status as a measurement error)"))],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="Healthy and ready to advance"),
                   409: OpenApiResponse(OpenApiTypes.OBJECT, description="Not yet (soak, traffic, paused...)"),
                   503: OpenApiResponse(OpenApiTypes.OBJECT, description="Failing: a guardrail is breached"),
                   404: ErrorSerializer, **ERROR_RESPONSES},
        examples=[OpenApiExample("ready", response_only=True, status_codes=["200"], value={
            "flag": "invoice-engine", "environment": "production", "ready": True, "verdict": "ready",
            "reasons": ["healthy, soaked and ready to advance"], "stage": 4, "guardrails": "healthy"})],
        description="For deployment tools (Argo Rollouts web metric, Flagger webhooks): 200 when the flag state "
                    "is healthy and ready to advance, 409 when not yet, 503 when failing; the reasons as JSON.")
    def get(self, request: Request, flag: str, env: str) -> Response:
        report = readiness(get_state(flag, env))
        body = {"flag": flag, "environment": env, "ready": report["verdict"] == "ready",
                "verdict": report["verdict"], "reasons": report["reasons"], "stage": report["plan"]["stage"],
                "guardrails": report["guardrails"]["status"], "breaches": report["guardrails"]["breaches"],
                "soak_seconds_left": report["soak_seconds_left"]}
        code = {"ready": 200, "not_yet": 409, "failing": 503}[report["verdict"]]
        if request.query_params.get("always_ok") in {"1", "true"}:
            code = 200
        return Response(body, status=code)
