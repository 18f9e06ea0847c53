"""Rollout API: plans (stages), advance / pause / rollback, guardrails, readiness, mismatches, gates.

Changes go through ``change_request_submit``: ``200`` with the state when applied at once,
``202`` with the change request when it waits for a second person. Pause and rollback never wait.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from actions.submit import Outcome, submit_state
from audit.names import Action
from common.api import ManagementView, object_id, requested_version
from common.errors import ValidationFailed
from common.fields import PercentageField, ReasonField, key_field
from common.inputs import Input
from common.permissions import Capability
from common.schema import IF_MATCH, errors
from rollout.api.change_requests import outcome_response
from rollout.api.rollout_outputs import (
    AppliedOutput,
    GateOutput,
    GuardrailsOutput,
    MismatchSummaryOutput,
    PendingOutput,
    ReadinessOutput,
    RolloutOutput,
)
from rollout.models import BreachAction, Gate, Guardrail
from rollout.plans.guardrails import LIMIT_FIELDS
from rollout.plans.health import evaluate_state, last_check
from rollout.plans.readiness import plan_status, readiness
from rollout.plans.stages import plan_template
from rollout.selectors import flag_state_get
from rollout.snapshots import guardrail_snapshot
from rollout.telemetry.mismatches import mismatch_summary

STATE_PARAMS = [
    OpenApiParameter("key", OpenApiTypes.STR, OpenApiParameter.PATH, description="flag key"),
    OpenApiParameter("env", OpenApiTypes.STR, OpenApiParameter.PATH, description="environment key"),
]
SUBMIT_RESPONSES = {
    200: OpenApiResponse(AppliedOutput, description="Applied: the rollout as it now stands"),
    202: OpenApiResponse(PendingOutput, description="Waiting for a second person: the change request"),
    **errors(400, 403, 404, 409, 428),
}
ACTION_RESPONSES = {200: AppliedOutput, **errors(400, 403, 404, 409, 428)}
TAGS = ["rollouts"]
VERSION: dict[str, Any] = {"min_value": 1, "max_value": 2**31 - 1, "required": False,
           "help_text": "The flag state version read (or send If-Match); a stale one gets 409."}


def rollout_data(state: Any) -> dict[str, Any]:
    return RolloutOutput(plan_status(state)).data


def submitted_response(result: Outcome) -> Response:
    return outcome_response(result, lambda state: {"applied": True, "rollout": rollout_data(state)})


class RolloutView(ManagementView):
    version_required = True

    def submit(self, request: Request, key: str, env: str, action: Action, params: dict[str, Any],
               data: dict[str, Any]) -> Response:
        """Every change of a rollout goes through the action layer: applied (200), a change request (202)
        or refused (403) — the same answer the UI gets for the same change."""
        version = requested_version(request, data.get("version"), required=self.version_required)
        return submitted_response(submit_state(
            actor=self.actor(), flag=key, environment=env, action=action, params=params, version=version,
            reason=data.get("reason", "")))


class ChangeInput(Input):
    version = serializers.IntegerField(**VERSION)
    reason = ReasonField()


class StageInput(Input):
    name = serializers.CharField(max_length=100)
    percentage = PercentageField(required=False, default=0)
    compare_percentage = PercentageField(required=False, default=0)
    include_cohorts = serializers.ListField(child=key_field(), max_length=100, required=False, default=list)
    min_soak_seconds = serializers.IntegerField(required=False, default=0, min_value=0, max_value=90 * 86_400)
    gate = serializers.ChoiceField(choices=Gate.choices, required=False, default=Gate.MANUAL)
    scheduled_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    retires_legacy = serializers.BooleanField(required=False, default=False)


class PlanInput(ChangeInput):
    # many=True takes max_length (DRF 3.14+, passed to the ListSerializer); the stub lacks it.
    stages = StageInput(many=True, required=False, max_length=20)  # type: ignore[call-arg]  # stub lacks max_length
    template = serializers.ChoiceField(choices=["standard"], required=False)
    internal_cohorts = serializers.ListField(child=key_field(), max_length=100, required=False, default=list)
    pilot_cohorts = serializers.ListField(child=key_field(), max_length=100, required=False, default=list)
    soak_seconds = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=90 * 86_400,
                                            default=None)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("stages" in attrs) == ("template" in attrs):
            raise serializers.ValidationError("give either stages or a template")
        return attrs


def stage_json(stage: dict[str, Any]) -> dict[str, Any]:
    out = dict(stage)
    out["percentage"] = float(out["percentage"])
    out["compare_percentage"] = float(out["compare_percentage"])
    out["scheduled_at"] = out["scheduled_at"].isoformat() if out["scheduled_at"] else None
    return out


class StagesView(RolloutView):
    capabilities = {"PUT": Capability.EDIT}

    @extend_schema(operation_id="rollout_plan_get", summary="The rollout plan and where it stands",
                   parameters=STATE_PARAMS, tags=TAGS, responses={200: RolloutOutput, **errors(404)},
                   description="The plan's stages with their status, the stage in force, soak time left, pending "
                               "change requests and open break-glass reviews.")
    def get(self, request: Request, key: str, env: str) -> Response:
        return Response(rollout_data(flag_state_get(key, env)))

    @extend_schema(operation_id="rollout_plan_set", summary="Set the plan (before it starts)", parameters=[
        *STATE_PARAMS, IF_MATCH], tags=TAGS, request=PlanInput, responses=SUBMIT_RESPONSES,
        description="Replace the plan of a rollout that has not started: explicit `stages`, or a `template` "
                    "(`standard`: validate → internal → pilot → 5% → 25% → 50% → 100% → retire legacy).")
    def put(self, request: Request, key: str, env: str) -> Response:
        data = PlanInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        if "template" in v:
            stages = plan_template(v["template"], internal_cohorts=v["internal_cohorts"],
                                   pilot_cohorts=v["pilot_cohorts"], soak_seconds=v["soak_seconds"])
        else:
            stages = [stage_json(s) for s in v["stages"]]
        return self.submit(request, key, env, Action.FLAG_STATE_PLAN_SET, {"stages": stages}, v)


class AdvanceInput(ChangeInput):
    force = serializers.BooleanField(required=False, default=False,
                                     help_text="advance past a breached guardrail (needs a reason)")
    resume = serializers.BooleanField(required=False, default=False,
                                      help_text="lift a pause in the same change (undoing a rollback)")


class AdvanceView(RolloutView):
    capabilities = {"POST": Capability.EDIT}

    @extend_schema(operation_id="rollout_advance", summary="Advance to the next stage", parameters=[
        *STATE_PARAMS, IF_MATCH], tags=TAGS, request=AdvanceInput, responses=SUBMIT_RESPONSES,
        description="Apply the next stage (the first call starts the plan); a change request where approval "
                    "is needed.")
    def post(self, request: Request, key: str, env: str) -> Response:
        data = AdvanceInput(data=request.data)
        data.is_valid(raise_exception=True)
        params = {name: True for name in ("force", "resume") if data.validated_data[name]}
        return self.submit(request, key, env, Action.FLAG_STATE_ADVANCED, params, data.validated_data)


class EmergencyInput(ChangeInput):
    """The version read is required (or If-Match): two people pulling the same lever at once act once."""


class PauseView(RolloutView):
    capabilities = {"POST": Capability.EMERGENCY}

    @extend_schema(operation_id="rollout_pause", summary="Pause: hold the rollout where it is",
                   parameters=[*STATE_PARAMS, IF_MATCH], tags=TAGS, request=EmergencyInput, responses=ACTION_RESPONSES,
                   description="No auto-advance, no scheduled start; the split is unchanged. Never waits for "
                               "approval.")
    def post(self, request: Request, key: str, env: str) -> Response:
        data = EmergencyInput(data=request.data)
        data.is_valid(raise_exception=True)
        return self.submit(request, key, env, Action.FLAG_STATE_PAUSED, {}, data.validated_data)


class RollbackView(RolloutView):
    capabilities = {"POST": Capability.EMERGENCY}

    @extend_schema(operation_id="rollout_rollback", summary="Roll back to the previous stage, now",
                   parameters=[*STATE_PARAMS, IF_MATCH], tags=TAGS, request=EmergencyInput, responses=ACTION_RESPONSES,
                   description="Back to the previous stage at once, then paused. Never waits for approval; where "
                               "approval would apply it is marked break-glass and an approver must review it. A "
                               "dual-write workload rolled back past the stage where parallel became primary "
                               "needs a reason.")
    def post(self, request: Request, key: str, env: str) -> Response:
        data = EmergencyInput(data=request.data)
        data.is_valid(raise_exception=True)
        return self.submit(request, key, env, Action.FLAG_STATE_ROLLED_BACK, {}, data.validated_data)


class GuardrailInput(ChangeInput):
    max_error_rate = PercentageField(required=False, allow_null=True, help_text="% of parallel runs")
    max_error_rate_increase = PercentageField(required=False, allow_null=True,
                                              help_text="percentage points above legacy's error rate")
    max_latency_p95_ratio = serializers.FloatField(required=False, allow_null=True, min_value=1, max_value=99_999,
                                                   help_text="parallel p95 / legacy p95")
    max_mismatch_rate = PercentageField(required=False, allow_null=True,
                                        help_text="% of comparisons (known differences excluded)")
    min_sample_size = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1)
    window_seconds = serializers.IntegerField(required=False, min_value=60, max_value=86_400)
    action = serializers.ChoiceField(choices=BreachAction.choices, required=False)


def guardrails_data(state: Any) -> dict[str, Any]:
    health = evaluate_state(state)
    return GuardrailsOutput({
        "config": guardrail_snapshot(Guardrail.objects.filter(flag_state=state).first()),
        "status": health.status, "breaches": health.breaches, "judged": health.figures(),
        "last_check": last_check(state.pk)}).data


class GuardrailsView(RolloutView):
    capabilities = {"PUT": Capability.EDIT}

    @extend_schema(operation_id="rollout_guardrails_get", summary="Guardrails and their current verdict",
                   parameters=STATE_PARAMS, tags=TAGS, responses={200: GuardrailsOutput, **errors(404)})
    def get(self, request: Request, key: str, env: str) -> Response:
        return Response(guardrails_data(flag_state_get(key, env)))

    @extend_schema(operation_id="rollout_guardrails_set", summary="Set the guardrails", parameters=[
        *STATE_PARAMS, IF_MATCH], tags=TAGS, request=GuardrailInput, responses=SUBMIT_RESPONSES,
        description="Create or change the guardrails; an omitted limit keeps its value, null removes it.")
    def put(self, request: Request, key: str, env: str) -> Response:
        data = GuardrailInput(data=request.data)
        data.is_valid(raise_exception=True)
        limits = {k: (float(v) if v is not None and k not in {"min_sample_size", "window_seconds", "action"} else v)
                  for k, v in data.validated_data.items() if k in LIMIT_FIELDS}
        return self.submit(request, key, env, Action.FLAG_STATE_GUARDRAILS_SET, limits, data.validated_data)


class ReadinessView(RolloutView):
    @extend_schema(operation_id="rollout_readiness", summary="Readiness report: legacy vs parallel, verdict",
                   parameters=[*STATE_PARAMS, OpenApiParameter("window", OpenApiTypes.INT,
                                                               description="seconds, 60 to 604800")],
                   tags=TAGS, responses={200: ReadinessOutput, **errors(400, 404)},
                   description="Legacy vs parallel side by side over a window (calls, error rates, latency "
                               "percentiles, mismatch rate and groups with samples), the guardrails' status, soak "
                               "time left and a verdict: `ready`, `not_yet` or `failing`, with the reasons.")
    def get(self, request: Request, key: str, env: str) -> Response:
        window = request.query_params.get("window")
        if window is not None and (not window.isdigit() or len(window) > 7):
            raise ValidationFailed.field("window", "must be a whole number of seconds")
        report = readiness(flag_state_get(key, env), window_seconds=int(window) if window else None)
        return Response(ReadinessOutput(report).data)


class MismatchesView(RolloutView):
    @extend_schema(operation_id="rollout_mismatches", summary="Mismatch groups", parameters=STATE_PARAMS,
                   tags=TAGS, responses={200: MismatchSummaryOutput, **errors(404)},
                   description="Kinds of difference between legacy and parallel results, their counts and "
                               "shares, and which are known differences.")
    def get(self, request: Request, key: str, env: str) -> Response:
        return Response(MismatchSummaryOutput(mismatch_summary(flag_state_get(key, env))).data)


class KnownInput(ChangeInput):
    known = serializers.BooleanField(required=False, default=True)


class MismatchKnownView(RolloutView):
    capabilities = {"POST": Capability.EDIT}
    version_required = False

    @extend_schema(operation_id="rollout_mismatch_known", summary="Mark a known difference", parameters=[
        *STATE_PARAMS, OpenApiParameter("group", OpenApiTypes.STR, OpenApiParameter.PATH,
                                        description="the group id (digits)")], tags=TAGS,
        request=KnownInput, responses=SUBMIT_RESPONSES,
        description="Mark a mismatch group as a known difference (with a reason) or take the mark back; known "
                    "differences do not count against the mismatch guardrail.")
    def post(self, request: Request, key: str, env: str, group: str) -> Response:
        group_id = object_id(group, "mismatch group")
        data = KnownInput(data=request.data)
        data.is_valid(raise_exception=True)
        return self.submit(request, key, env, Action.MISMATCH_GROUP_KNOWN,
                           {"group": group_id, "known": data.validated_data["known"]}, data.validated_data)


class GateView(ManagementView):
    @extend_schema(
        operation_id="deployment_gate", summary="Deployment gate: ready to advance?", tags=["gates"],
        parameters=[OpenApiParameter("flag", OpenApiTypes.STR, OpenApiParameter.PATH),
                    OpenApiParameter("env", OpenApiTypes.STR, OpenApiParameter.PATH),
                    OpenApiParameter("always_ok", OpenApiTypes.BOOL, description=(
                        "answer 200 whatever the verdict (for tools that judge the JSON, e.g. Argo Rollouts' "
                        "web metric, which counts any other status as a measurement error)"))],
        responses={200: OpenApiResponse(GateOutput, description="Healthy and ready to advance"),
                   409: OpenApiResponse(GateOutput, description="Not yet (soak, traffic, paused...)"),
                   503: OpenApiResponse(GateOutput, description="Failing: a guardrail is breached"),
                   **errors(404)},
        examples=[OpenApiExample("ready", response_only=True, status_codes=["200"], value={
            "flag": "invoice-engine", "environment": "production", "ready": True, "verdict": "ready",
            "reasons": ["healthy, soaked and ready to advance"], "stage": 4, "guardrails": "healthy",
            "breaches": [], "soak_seconds_left": 0})],
        description="For deployment tools (Argo Rollouts web metric, Flagger webhooks): 200 when the flag state "
                    "is healthy and ready to advance, 409 when not yet, 503 when failing; the reasons as JSON.")
    def get(self, request: Request, flag: str, env: str) -> Response:
        report = readiness(flag_state_get(flag, env))
        body = {"flag": flag, "environment": env, "ready": report["verdict"] == "ready",
                "verdict": report["verdict"], "reasons": report["reasons"], "stage": report["plan"]["stage"],
                "guardrails": report["guardrails"]["status"], "breaches": report["guardrails"]["breaches"],
                "soak_seconds_left": report["soak_seconds_left"]}
        code = {"ready": 200, "not_yet": 409, "failing": 503}[report["verdict"]]
        if request.query_params.get("always_ok") in {"1", "true"}:
            code = 200
        if code != 200:
            body["error"] = {"code": "failing" if code == 503 else "not_ready",
                             "message": "; ".join(report["reasons"]), "fields": {}}
        return Response(GateOutput(body).data, status=code)
