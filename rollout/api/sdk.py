"""The SDK API: what services (with an SDK key) read and report."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.views import APIView

from common.auth import SdkKeyAuthentication, SdkPrincipal
from common.schema import ERROR_RESPONSES
from common.throttling import ScopedThrottle
from rollout.ruleset import get_ruleset


class SdkKeyThrottle(ScopedThrottle):
    """Per SDK key, on the shared cache (Redis when configured)."""

    scope = "sdk"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        principal = request.auth
        if isinstance(principal, SdkPrincipal):
            return self.cache_format % {"scope": self.scope, "ident": principal.prefix}
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class SdkView(APIView):
    authentication_classes = [SdkKeyAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes = [SdkKeyThrottle]

    @property
    def principal(self) -> SdkPrincipal:
        return self.request.auth  # type: ignore[return-value]


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
