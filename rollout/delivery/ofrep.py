"""OFREP, the OpenFeature Remote Evaluation Protocol (v0.3.0; the OpenAPI document is kept in the
project's shared specs): any OpenFeature SDK with the OFREP provider evaluates Turnout flags.

A Turnout flag is a boolean in OpenFeature: ``value`` true means the parallel path, ``variant`` is
``parallel`` or ``legacy``. The decision is ``turnout.engine``'s over the cached ruleset — the same
as ``/api/v1/sdk/evaluate`` and the SDK's local ``decide`` for the context
``{key: targetingKey, attributes: every other context field}``.

Mapping of the engine's answers onto the protocol: ``turnout.openfeature_mapping.resolve``, the one
mapping the SDK's in-process OpenFeature provider uses too, so a decision reads the same through both:
- reasons pass through (TARGETING_MATCH, SPLIT, DISABLED, STATIC), except DEFAULT, which OFREP's
  reason enum lacks: SPLIT when a live split (0 % < percentage < 100 %) drew the subject onto legacy,
  STATIC when nothing was drawn (0 %, or no ``bucket_by`` attribute in the context).
  ``metadata.turnoutReason`` keeps the engine's own reason, ``metadata.rule`` what decided.
- ERROR decisions are evaluation failures: FLAG_NOT_FOUND → 404; TARGETING_KEY_MISSING,
  INVALID_CONTEXT, PARSE_ERROR, GENERAL → 400 (single), or failure items in the bulk ``flags``.
  A context without ``targetingKey`` is accepted: the engine answers TARGETING_KEY_MISSING.
- A body that is not JSON → 400 PARSE_ERROR; a context that is not an object, or a
  ``targetingKey`` that is not a string → 400 INVALID_CONTEXT. Every 400 carries ``errorDetails``.
- 401 for a missing or bad key (``Authorization: Bearer`` or ``X-API-Key``), 429 with
  ``Retry-After`` in whole seconds (the SDK API's per-key budget), 500 ``{errorDetails}``.
- Bulk: every flag of the key's environment; ``ETag`` covers the ruleset version and the
  context, so ``If-None-Match`` answers 304 only when the answers cannot have changed (done here:
  Django's conditional helpers would answer 412 to a POST). CORS is open for browser providers
  (they send ``Authorization`` / ``If-None-Match`` and read ``ETag``); no cookie is ever used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from django.http import HttpRequest, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, inline_serializer
from rest_framework import serializers
from turnout.openfeature_mapping import OFREP_REASONS, resolve
from turnout.types import Decision, ErrorCode

from common import metrics
from common.schema import ScalarField
from rollout.access.auth import SdkPrincipal
from rollout.delivery.evaluation import CompiledRuleset, acompiled_ruleset, compiled_ruleset
from rollout.delivery.lean import (
    BadRequest,
    aauthenticate_for_evaluation,
    authenticate_for_evaluation,
    described,
    json_response,
    read_json,
    retry_after_seconds,
)
from rollout.delivery.sdk_api import _etag_matches

logger = logging.getLogger("turnout.ofrep")

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "ETag, Retry-After",
}
PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-None-Match, X-API-Key",
    "Access-Control-Max-Age": "86400",
}


class OfrepError(Exception):
    def __init__(self, status: int, error_code: str | None, details: str, key: str | None = None) -> None:
        super().__init__(details)
        self.status = status
        self.error_code = error_code
        self.details = details
        self.key = key


# -- mapping -------------------------------------------------------------------------------------


def evaluation(decision: Decision, compiled: CompiledRuleset) -> dict[str, Any]:
    """A decision as an OFREP ``evaluationSuccess`` or ``evaluationFailure`` item."""
    res = resolve(decision, compiled.ruleset)
    if res.failed:
        return {"key": decision.flag, "errorCode": res.error_code, "errorDetails": res.error_message,
                "metadata": res.metadata}
    return {"key": decision.flag, "value": res.value, "reason": res.reason, "variant": res.variant,
            "metadata": res.metadata}


def _context(data: Any) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """(targetingKey, attributes, the context as sent) from an OFREP request body."""
    if not isinstance(data, dict):
        raise OfrepError(400, "PARSE_ERROR", "The request body must be a JSON object with a 'context'")
    context = data.get("context", {})
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise OfrepError(400, "INVALID_CONTEXT", "'context' must be an object")
    key = context.get("targetingKey")
    if key is not None and not isinstance(key, str):
        raise OfrepError(400, "INVALID_CONTEXT", "'targetingKey' must be a string")
    attributes = {k: v for k, v in context.items() if k != "targetingKey"}
    return key, attributes, context


# -- responses -----------------------------------------------------------------------------------


def _respond(data: Any, status: int = 200) -> HttpResponse:
    response = json_response(data, status=status)
    for name, value in CORS_HEADERS.items():
        response[name] = value
    return response


def _failure(exc: OfrepError) -> HttpResponse:
    body: dict[str, Any] = {"errorDetails": exc.details}
    if exc.error_code is not None:
        body = {"errorCode": exc.error_code, **body}
    if exc.key is not None:
        body = {"key": exc.key, **body}
    return _respond(body, status=exc.status)


def _guard(request: HttpRequest) -> tuple[SdkPrincipal, int | None] | HttpResponse:
    return _guarded(authenticate_for_evaluation(request))


async def _aguard(request: HttpRequest) -> tuple[SdkPrincipal, int | None] | HttpResponse:
    return _guarded(await aauthenticate_for_evaluation(request))


def _guarded(result: tuple[SdkPrincipal, int | None] | float | None) -> tuple[SdkPrincipal, int | None] | HttpResponse:
    if result is None:
        response = _respond({"errorDetails": "Missing, invalid or revoked SDK key"}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="sdk"'
        return response
    if isinstance(result, float):
        seconds = retry_after_seconds(result)
        response = _respond({"errorDetails": f"Rate limit exceeded; retry after {seconds} seconds"}, status=429)
        response["Retry-After"] = seconds
        return response
    return result


def _read(request: HttpRequest) -> Any:
    try:
        return read_json(request)
    except BadRequest as exc:
        status = 413 if exc.code == "too_large" else 400
        raise OfrepError(status, "PARSE_ERROR", f"The request body {exc.message}") from None


def _ruleset(principal: SdkPrincipal, version: int | None) -> CompiledRuleset:
    return _existing(compiled_ruleset(principal.environment_id, environment=principal.environment, version=version))


async def _aruleset(principal: SdkPrincipal, version: int | None) -> CompiledRuleset:
    return _existing(await acompiled_ruleset(principal.environment_id, environment=principal.environment,
                                             version=version))


def _existing(compiled: CompiledRuleset | None) -> CompiledRuleset:
    if compiled is None:
        raise OfrepError(500, None, "The SDK key's environment no longer exists")
    return compiled


def _preflight(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(status=204)
    for name, value in PREFLIGHT_HEADERS.items():
        response[name] = value
    return response


# -- schema --------------------------------------------------------------------------------------

_CONTEXT = inline_serializer(name="OfrepContext", fields={
    "targetingKey": serializers.CharField(required=False, help_text="The subject; other fields are attributes"),
})
_REQUEST = inline_serializer(name="OfrepEvaluationRequest", fields={"context": _CONTEXT})
_META = serializers.DictField(child=ScalarField(), required=False,
                              help_text="environment, version, compare, stage, rule, bucket, detail, turnoutReason")
_SUCCESS = inline_serializer(name="OfrepEvaluationSuccess", fields={
    "key": serializers.CharField(),
    "value": serializers.BooleanField(help_text="true: the parallel path"),
    "reason": serializers.ChoiceField(choices=list(OFREP_REASONS)),
    "variant": serializers.ChoiceField(choices=["parallel", "legacy"]),
    "metadata": _META,
})
_FAILURE = inline_serializer(name="OfrepEvaluationFailure", fields={
    "key": serializers.CharField(),
    "errorCode": serializers.ChoiceField(choices=["PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT",
                                                  "GENERAL"]),
    "errorDetails": serializers.CharField(),
    "metadata": _META,
})
_NOT_FOUND = inline_serializer(name="OfrepFlagNotFound", fields={
    "key": serializers.CharField(), "errorCode": serializers.ChoiceField(choices=["FLAG_NOT_FOUND"]),
    "errorDetails": serializers.CharField(),
})
_BULK_FAILURE = inline_serializer(name="OfrepBulkEvaluationFailure", fields={
    "errorCode": serializers.CharField(), "errorDetails": serializers.CharField(),
})
_GENERAL = inline_serializer(name="OfrepGeneralError", fields={"errorDetails": serializers.CharField()})
_RETRY = OpenApiParameter("Retry-After", OpenApiTypes.STR, OpenApiParameter.HEADER, response=[429])
_COMMON = {401: OpenApiResponse(_GENERAL, description="Missing, invalid or revoked SDK key"),
           403: OpenApiResponse(description="Forbidden"),
           429: OpenApiResponse(_GENERAL, description="Rate limited; see Retry-After (seconds)"),
           500: OpenApiResponse(_GENERAL, description="Unexpected server error")}


# -- views ---------------------------------------------------------------------------------------


@described({"POST": {
    "operation_id": "ofrep_evaluate_flag",
    "summary": "OFREP: evaluate one flag (value true = parallel)",
    "request": _REQUEST,
    "responses": {200: _SUCCESS, 400: _FAILURE, 404: _NOT_FOUND, **_COMMON},
    "tags": ["ofrep"],
}}, name="OfrepEvaluateFlagView", options=_preflight)
async def evaluate_flag(request: HttpRequest, key: str) -> HttpResponse:
    guarded = await _aguard(request)
    if isinstance(guarded, HttpResponse):
        return guarded
    principal, version = guarded
    try:
        targeting_key, attributes, _ = _context(_read(request))
        compiled = await _aruleset(principal, version)
        decision = compiled.ruleset.decide(key, targeting_key, attributes)
        metrics.record_evaluation(api="ofrep", environment=compiled.environment, reason=str(decision.reason))
        item = evaluation(decision, compiled)
    except OfrepError as exc:
        if exc.key is None and exc.status == 400:
            exc.key = key
        return _failure(exc)
    except Exception:
        logger.exception("ofrep.failed", extra={"flag": key})
        return _respond({"errorDetails": "An internal server error occurred while evaluating the flag"}, 500)
    if "errorCode" in item:
        status = 404 if item["errorCode"] == ErrorCode.FLAG_NOT_FOUND else 400
        if status == 404:
            item.pop("metadata", None)
        return _respond(item, status=status)
    return _respond(item)


def bulk_etag(compiled: CompiledRuleset, context: dict[str, Any]) -> str:
    """Strong ETag of a bulk answer: the ruleset's ETag and the context it was evaluated for."""
    canonical = json.dumps(context, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    digest = hashlib.sha256(f"{compiled.etag}\n{canonical}".encode()).hexdigest()[:32]
    return f'"{digest}"'


@described({"POST": {
    "operation_id": "ofrep_evaluate_flags_bulk",
    "summary": "OFREP: evaluate every flag of the key's environment for one context",
    "parameters": [
        OpenApiParameter("If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False),
        OpenApiParameter("flagConfigEtag", OpenApiTypes.STR, OpenApiParameter.QUERY, required=False),
        OpenApiParameter("flagConfigLastModified", OpenApiTypes.STR, OpenApiParameter.QUERY, required=False),
    ],
    "request": _REQUEST,
    "responses": {200: inline_serializer(name="OfrepBulkEvaluationSuccess", fields={
        "flags": PolymorphicProxySerializer(component_name="OfrepBulkItem", serializers=[_SUCCESS, _FAILURE],
                                            resource_type_field_name=None, many=True),
        "metadata": serializers.DictField(child=ScalarField(), required=False),
    }), 304: OpenApiResponse(description="Not modified (ETag matches)"), 400: _BULK_FAILURE, **_COMMON},
    "tags": ["ofrep"],
}}, name="OfrepEvaluateFlagsView", options=_preflight)
def evaluate_flags(request: HttpRequest) -> HttpResponse:
    guarded = _guard(request)
    if isinstance(guarded, HttpResponse):
        return guarded
    principal, version = guarded
    try:
        targeting_key, attributes, context = _context(_read(request))
        compiled = _ruleset(principal, version)
        etag = bulk_etag(compiled, context)
        if _etag_matches(request.headers.get("If-None-Match", ""), etag):
            response = HttpResponse(status=304)
            for name, value in CORS_HEADERS.items():
                response[name] = value
            response["ETag"] = etag
            return response
        decide = compiled.ruleset.decide
        decisions = [decide(flag, targeting_key, attributes) for flag in sorted(compiled.ruleset.flag_keys)]
        metrics.record_decisions(api="ofrep_bulk", environment=compiled.environment, decisions=decisions)
        flags = [evaluation(decision, compiled) for decision in decisions]
    except OfrepError as exc:
        return _failure(exc)
    except Exception:
        logger.exception("ofrep.bulk_failed")
        return _respond({"errorDetails": "An internal server error occurred while evaluating the flags"}, 500)
    response = _respond({"flags": flags, "metadata": {"environment": compiled.environment,
                                                      "version": compiled.version}})
    response["ETag"] = etag
    response["Cache-Control"] = "private, no-cache"
    return response
