"""Shared OpenAPI pieces: the one error body, described once."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

ErrorSerializer = inline_serializer(
    name="Error",
    fields={
        "error": inline_serializer(
            name="ErrorDetail",
            fields={
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "fields": serializers.DictField(child=serializers.ListField(child=serializers.CharField())),
            },
        )
    },
)

ERROR_RESPONSES = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid input"),
    401: OpenApiResponse(ErrorSerializer, description="Missing or invalid credentials"),
    403: OpenApiResponse(ErrorSerializer, description="Not allowed"),
    429: OpenApiResponse(ErrorSerializer, description="Too many requests; see Retry-After"),
}


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "common.auth.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return {"type": "http", "scheme": "bearer", "bearerFormat": "tok_…",
                "description": "An API token (`tok_…`), acting as its user."}


class SdkKeyScheme(OpenApiAuthenticationExtension):
    target_class = "common.auth.SdkKeyAuthentication"
    name = "sdkKey"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return {"type": "http", "scheme": "bearer", "bearerFormat": "sdk_…",
                "description": "An SDK key (`sdk_…`), scoped to one environment; also accepted as `X-API-Key`."}
