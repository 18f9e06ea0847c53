"""The SDK API: what services (with an SDK key) read and report."""

from __future__ import annotations

from typing import Any, cast

from django.http import HttpRequest, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView
from turnout.types import Reason

from common import metrics as prometheus
from common.conf import get_setting
from common.schema import ERROR_RESPONSES, AttributeValueField
from rollout.access.auth import SdkKeyAuthentication, SdkPrincipal
from rollout.datamigration.telemetry import migration_record, parse_migration_batch
from rollout.delivery.evaluation import acompiled_ruleset, compiled_ruleset, decision_body
from rollout.delivery.lean import (
    BadRequest,
    asdk_guard,
    bad_request,
    described,
    error_response,
    json_response,
    read_json,
    sdk_guard,
    sdk_throttle_wait,
)
from rollout.delivery.ruleset import get_ruleset
from rollout.telemetry.batches import parse_batch
from rollout.telemetry.ingest import metrics_record


class SdkKeyThrottle(BaseThrottle):
    """Per SDK key, on the shared cache (Redis when configured): the ``sdk`` rate, one budget for
    every SDK endpoint (the lean ones count through the same ``sdk_throttle_wait``)."""

    scope = "sdk"

    def allow_request(self, request: Request, view: Any) -> bool:
        principal = request.auth
        ident = principal.prefix if isinstance(principal, SdkPrincipal) else (self.get_ident(request) or "anon")
        self._wait = sdk_throttle_wait(ident)
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait


class SdkView(APIView):
    authentication_classes = [SdkKeyAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes = [SdkKeyThrottle]

    @property
    def principal(self) -> SdkPrincipal:
        return cast(SdkPrincipal, self.request.auth)  # what SdkKeyAuthentication sets; IsAuthenticated holds


def _etag_matches(header: str, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    candidates = [part.strip() for part in header.split(",")]
    return etag in candidates or f"W/{etag}" in candidates


class RulesetView(SdkView):
    @extend_schema(
        operation_id="sdk_ruleset",
        summary="The environment's ruleset (the document SDKs evaluate locally)",
        parameters=[OpenApiParameter("If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False)],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="The ruleset document, schema 1"),
                   304: OpenApiResponse(description="Unchanged since the ETag given"), **ERROR_RESPONSES},
        tags=["sdk"],
    )
    def get(self, request: Request) -> HttpResponse:
        built = get_ruleset(self.principal.environment_id)
        if built is None:
            return HttpResponse(status=404)
        etag = built.etag
        if _etag_matches(request.headers.get("If-None-Match", ""), etag):
            response = HttpResponse(status=304)
        else:
            response = HttpResponse(built.body, content_type="application/json")
        response["ETag"] = etag
        response["Cache-Control"] = "no-cache"
        response["X-Turnout-Ruleset-Version"] = str(built.version)
        return response


# -- evaluation (lean views: see rollout/delivery/lean.py) ----------------------------------------------

_ContextSerializer = inline_serializer(
    name="SdkContext",
    fields={
        "key": serializers.CharField(allow_null=True, required=False,
                                     help_text="The subject (user, tenant, …); null or missing: TARGETING_KEY_MISSING"),
        "attributes": serializers.DictField(child=AttributeValueField(), required=False, allow_null=True),
    },
)
_DecisionSerializer = inline_serializer(
    name="SdkDecision",
    fields={
        "flag": serializers.CharField(),
        "path": serializers.ChoiceField(choices=["legacy", "parallel"]),
        "compare": serializers.BooleanField(help_text="Also run the other path as a shadow and compare"),
        "reason": serializers.ChoiceField(choices=[r.value for r in Reason]),
        "error_code": serializers.CharField(required=False, help_text="Only when reason is ERROR"),
        "stage": serializers.IntegerField(allow_null=True),
        "version": serializers.IntegerField(allow_null=True, help_text="The ruleset version that decided"),
    },
)


def _context(data: Any) -> tuple[str | None, dict[str, Any] | None]:
    if not isinstance(data, dict):
        raise BadRequest("body", "must be a JSON object")
    context = data.get("context")
    if context is None:
        raise BadRequest("context", "is required")
    if not isinstance(context, dict):
        raise BadRequest("context", "must be an object")
    key = context.get("key")
    if key is not None and not isinstance(key, str):
        raise BadRequest("context.key", "must be a string or null")
    attributes = context.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise BadRequest("context.attributes", "must be an object or null")
    return key, attributes


def _not_ready() -> HttpResponse:
    return error_response(404, "not_found", "The key's environment no longer exists.")


@described({"POST": {
    "operation_id": "sdk_evaluate",
    "summary": "Decide one flag for one subject on the server (same engine and ruleset as the SDK)",
    "request": inline_serializer(name="SdkEvaluateRequest", fields={
        "flag": serializers.CharField(), "context": _ContextSerializer}),
    "responses": {200: _DecisionSerializer, **ERROR_RESPONSES},
    "tags": ["sdk"],
}})
async def evaluate(request: HttpRequest) -> HttpResponse:
    """``{flag, context: {key, attributes}}`` → the decision. An unknown flag is a decision too
    (legacy, reason ERROR, error_code FLAG_NOT_FOUND), exactly as the SDK would answer."""
    # Async: on the hot path (key and compiled ruleset already in this process) the one Redis
    # round trip is awaited on the event loop and nothing runs in a thread (rollout/delivery/lean.py).
    guarded = await asdk_guard(request)
    if isinstance(guarded, HttpResponse):
        return guarded
    principal, version = guarded
    try:
        data = read_json(request)
        key, attributes = _context(data)
        flag = data.get("flag")
        if not isinstance(flag, str) or not flag:
            raise BadRequest("flag", "must be a non-empty string")
    except BadRequest as exc:
        return bad_request(exc)
    compiled = await acompiled_ruleset(principal.environment_id, environment=principal.environment, version=version)
    if compiled is None:
        return _not_ready()
    decision = compiled.ruleset.decide(flag, key, attributes)
    prometheus.record_evaluation(api="evaluate", environment=compiled.environment, reason=str(decision.reason))
    return json_response(decision_body(decision))


@described({"POST": {
    "operation_id": "sdk_evaluate_bulk",
    "summary": "Decide every flag of the environment for one subject",
    "request": inline_serializer(name="SdkEvaluateBulkRequest", fields={"context": _ContextSerializer}),
    "responses": {200: inline_serializer(name="SdkEvaluateBulkResponse", fields={
        "environment": serializers.CharField(),
        "version": serializers.IntegerField(),
        "flags": serializers.DictField(child=_DecisionSerializer, help_text="By flag key"),
    }), **ERROR_RESPONSES},
    "tags": ["sdk"],
}})
def evaluate_bulk(request: HttpRequest) -> HttpResponse:
    """``{context}`` → ``{environment, version, flags: {flag: decision}}``."""
    guarded = sdk_guard(request)
    if isinstance(guarded, HttpResponse):
        return guarded
    principal, version = guarded
    try:
        key, attributes = _context(read_json(request))
    except BadRequest as exc:
        return bad_request(exc)
    compiled = compiled_ruleset(principal.environment_id, environment=principal.environment, version=version)
    if compiled is None:
        return _not_ready()
    decide = compiled.ruleset.decide
    decisions = {flag: decide(flag, key, attributes) for flag in sorted(compiled.ruleset.flag_keys)}
    prometheus.record_decisions(api="evaluate_bulk", environment=compiled.environment, decisions=decisions.values())
    flags = {flag: decision_body(decision) for flag, decision in decisions.items()}
    return json_response({"environment": compiled.environment, "version": compiled.version, "flags": flags})


# -- metrics -------------------------------------------------------------------------------------


@described({"POST": {
    "operation_id": "sdk_metrics",
    "summary": "Report a batch of SDK metrics (per flag × path counts, latency histogram, mismatch samples)",
    "description": "The batch format is in docs/sdk-protocol.md (\"Metrics\"). `202` once counted; a bad "
                   "field answers `400` naming it (`flags[2].latency_ms`), a body over the limit `413`.",
    "request": OpenApiTypes.OBJECT,
    "responses": {202: inline_serializer(name="SdkMetricsAccepted", fields={"accepted": serializers.BooleanField()}),
                  413: ERROR_RESPONSES[400], **ERROR_RESPONSES},
    "tags": ["sdk"],
}})
def metrics(request: HttpRequest) -> HttpResponse:
    guarded = sdk_guard(request)
    if isinstance(guarded, HttpResponse):
        return guarded
    principal = guarded[0]
    try:
        data = read_json(request, max_bytes=get_setting("METRICS_MAX_BODY"))
        batch = parse_batch(data)
        migrations = parse_migration_batch(data)  # the data-migration fields (optional)
    except BadRequest as exc:
        prometheus.record_sdk_report(environment=principal.environment, outcome="rejected")
        return bad_request(exc)
    metrics_record(environment_id=principal.environment_id, batch=batch)
    migration_record(environment_id=principal.environment_id, batch=migrations)
    prometheus.record_sdk_report(environment=principal.environment, outcome="accepted")
    return json_response({"accepted": True}, status=202)
