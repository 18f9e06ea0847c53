"""The SDK API: what services (with an SDK key) read and report."""

from __future__ import annotations

from typing import Any

import redis
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers
from turnout.types import Reason

from common import metrics as prometheus
from common.conf import get_setting
from common.errors import RETRY_AFTER_SECONDS, UNAVAILABLE_MESSAGES
from common.redis import get_async_redis
from common.schema import ERROR_RESPONSES, AttributeValueField
from rollout.datamigration.telemetry import parse_migration_batch
from rollout.delivery.evaluation import acompiled_ruleset, compiled_ruleset, decision_body
from rollout.delivery.lean import (
    BadRequest,
    asdk_guard,
    bad_request,
    described,
    error_response,
    json_response,
    read_json,
    run_detached,
    sdk_guard,
    single_flight,
)
from rollout.delivery.serving import Need, accepts_gzip, etag_matches, served, served_local
from rollout.plans.watch import trigger_checks
from rollout.tasks import enqueue_check
from rollout.telemetry.batches import parse_batch
from rollout.telemetry.ingest import Backlog, ametrics_accept, metrics_accept, queue_metrics_drain


def _etag_matches(header: str, etag: str) -> bool:
    return etag_matches(header, etag)


@described({"GET": {
    "operation_id": "sdk_ruleset",
    "summary": "The environment's ruleset (the document SDKs evaluate locally)",
    "description": "`ETag` per version; a matching `If-None-Match` answers `304` (its cost does not grow with "
                   "the document). With `Accept-Encoding: gzip` the document comes gzip-compressed "
                   "(`Content-Encoding: gzip`, compressed once per version; its ETag ends in `-gz\"`, and "
                   "either ETag of the current version answers `304`).",
    "parameters": [OpenApiParameter("If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False),
                   OpenApiParameter("Accept-Encoding", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False),
                   OpenApiParameter("members", OpenApiTypes.STR, OpenApiParameter.QUERY, required=False,
                                    description="`1`: large cohorts as member-list references (schema 2 when "
                                                "one is present; docs/sdk-protocol.md, \"Member lists\")")],
    "responses": {200: OpenApiResponse(OpenApiTypes.OBJECT, description="The ruleset document, schema 1 "
                                                                         "(2 with member-list references)"),
                  304: OpenApiResponse(description="Unchanged since the ETag given"), **ERROR_RESPONSES},
    "tags": ["sdk"],
}}, name="RulesetView")
async def ruleset(request: HttpRequest) -> HttpResponse:
    """The environment's current ruleset, or ``304`` for a matching ETag (``rollout/delivery/serving.py``).
    Async and lean: on the hot path the key is checked in the process and the one Redis round trip
    (throttle count and current version) is awaited on the event loop; nothing else is read."""
    guarded = await asdk_guard(request)
    if isinstance(guarded, HttpResponse):
        return guarded
    principal, version = guarded
    if_none_match = request.headers.get("If-None-Match", "")
    gzipped = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    refs = request.GET.get("members") == "1"  # the SDK reads member-list references (docs/sdk-protocol.md)
    entry = served_local(principal.environment_id, principal.environment, version, refs)
    matched = entry is not None and etag_matches(if_none_match, entry.etag, entry.gzip_etag)
    need: Need = "etag" if matched else "gzip" if gzipped else "plain"
    if entry is None or not entry.has(need):
        if entry is None and if_none_match:
            need = "etag"  # perhaps a 304: learn the ETag first, read bytes only if it does not match
        entry = await single_flight(("served", principal.environment_id, version, need, refs), lambda: run_detached(
            served, principal.environment_id, principal.environment, version, need, refs))
        if entry is None:
            return HttpResponse(status=404)
        matched = etag_matches(if_none_match, entry.etag, entry.gzip_etag)
        need = "etag" if matched else "gzip" if gzipped else "plain"
        if not entry.has(need):
            known = entry.version
            entry = await single_flight(("served", principal.environment_id, known, need, refs), lambda: run_detached(
                served, principal.environment_id, principal.environment, known, need, refs))
            if entry is None:
                return HttpResponse(status=404)
            matched = etag_matches(if_none_match, entry.etag, entry.gzip_etag)
    if matched:
        response = HttpResponse(status=304)
    elif gzipped and entry.gzipped is not None:
        response = HttpResponse(entry.gzipped, content_type="application/json")
        response["Content-Encoding"] = "gzip"
    else:
        response = HttpResponse(entry.body, content_type="application/json")
    response["ETag"] = entry.gzip_etag if gzipped else entry.etag
    response["Cache-Control"] = "no-cache"
    response["Vary"] = "Accept-Encoding"
    response["X-Turnout-Ruleset-Version"] = str(entry.version)
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
        "rule": serializers.CharField(
            allow_null=True, help_text="What decided: override, cohort:<key>, split, default, disabled, "
                                       "retired or error (the SDK Decision's receipt)"),
        "bucket": serializers.IntegerField(
            allow_null=True, help_text="The subject's bucket (0..999999) when the split was consulted"),
        "detail": serializers.CharField(
            required=False, help_text="Why, in words, when the decision needs it (the flag's bucket_by "
                                      "attribute missing from the attributes)"),
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
    "description": "The batch format is in docs/sdk-protocol.md (\"Metrics\"). `202` once accepted (counted "
                   "into the per-minute figures by the roll-up within moments); a retry of a batch with the "
                   "same `batch_id` is answered `202` with `duplicate: true` and not counted again. A bad "
                   "field answers `400` naming it (`flags[2].latency_ms`), a body over the limit `413`; "
                   "`503` (`redis_unavailable`, or `metrics_backlog` when the roll-up is far behind) with "
                   "`Retry-After`: send the batch again later, with its `batch_id` (after a Redis timeout it "
                   "may have been taken; the retry is then counted once).",
    "request": OpenApiTypes.OBJECT,
    "responses": {202: inline_serializer(name="SdkMetricsAccepted", fields={
                      "accepted": serializers.BooleanField(),
                      "duplicate": serializers.BooleanField(required=False,
                                                            help_text="Only when true: counted before")}),
                  413: ERROR_RESPONSES[400], **ERROR_RESPONSES},
    "tags": ["sdk"],
}})
async def metrics(request: HttpRequest) -> HttpResponse:
    """Check the batch, then one append to the metrics stream (rollout/telemetry/ingest.py). Async like
    the evaluation views: on the hot path the key is checked in the process and both Redis round trips
    (throttle, append) are awaited on the event loop; a thread only for embedded mode, a batch that may
    breach a guardrail, or queuing the roll-up."""
    guarded = await asdk_guard(request)
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
    client = get_async_redis() if isinstance(request, ASGIRequest) else None
    try:
        if client is not None:
            new, drain = await ametrics_accept(client, environment_id=principal.environment_id, body=request.body,
                                               batch=batch)
            if drain:
                await sync_to_async(queue_metrics_drain)()
        else:
            new, _ = await sync_to_async(metrics_accept)(environment_id=principal.environment_id, body=request.body,
                                                         batch=batch, migrations=migrations)
    except Backlog as exc:
        prometheus.record_sdk_report(environment=principal.environment, outcome="unavailable")
        return _unavailable("metrics_backlog", f"The metrics roll-up is behind ({exc.waiting:,} batches wait); "
                                               "nothing was counted. Send the batch again shortly.")
    except redis.RedisError:
        prometheus.record_sdk_report(environment=principal.environment, outcome="unavailable")
        return _unavailable("redis_unavailable", UNAVAILABLE_MESSAGES["redis_unavailable"])
    if new and any((row.path == "parallel" and row.counts["errors"]) or row.counts["mismatches"]
                   for row in batch.rows):  # what batch_breaches looks at before it reads anything
        await sync_to_async(trigger_checks)(principal.environment_id, batch, enqueue_check)  # never raises
    prometheus.record_sdk_report(environment=principal.environment, outcome="accepted" if new else "duplicate")
    return json_response({"accepted": True} if new else {"accepted": True, "duplicate": True}, status=202)


def _unavailable(code: str, message: str) -> HttpResponse:
    response = error_response(503, code, message)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
