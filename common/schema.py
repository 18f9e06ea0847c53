"""Shared OpenAPI pieces: the one error body, described once."""

from __future__ import annotations

from typing import Any

from drf_spectacular.plumbing import force_instance, is_serializer
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.views import APIView

ErrorSerializer = inline_serializer(
    name="Error",
    fields={
        "error": inline_serializer(
            name="ErrorDetail",
            fields={
                "code": serializers.CharField(help_text="Stable machine-readable code, e.g. `invalid`, `conflict`."),
                "message": serializers.CharField(help_text="What is wrong, for people."),
                "fields": serializers.DictField(
                    child=serializers.ListField(child=serializers.CharField()),
                    help_text="Messages per input field (dotted paths for nested input); empty when not about input.",
                ),
                "current_version": serializers.IntegerField(
                    required=False, help_text="On 409: the version the object is at now."
                ),
                "retry_after": serializers.IntegerField(required=False, help_text="On 429: seconds to wait."),
            },
        )
    },
)

_DESCRIPTIONS = {
    400: "Invalid input; `fields` names each bad field",
    401: "Missing or invalid credentials",
    403: "Not allowed for this role (or this environment needs approval)",
    404: "No such object",
    409: "Stale `version` (the body carries `current_version`) or a clash with the current state",
    428: "The write must carry the `version` it read (body field or `If-Match`)",
    429: "Too many requests; see `Retry-After`",
}

ERROR_RESPONSES = {code: OpenApiResponse(ErrorSerializer, description=_DESCRIPTIONS[code])
                   for code in (400, 401, 403, 429)}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Error responses for an operation: always 401, 403 and 429, plus the codes given."""
    return {code: OpenApiResponse(ErrorSerializer, description=_DESCRIPTIONS[code])
            for code in sorted({401, 403, 429, *codes})}


IF_MATCH = OpenApiParameter(
    "If-Match", {"type": "string", "pattern": r'^(W/)?"?[0-9]{1,9}"?$'}, OpenApiParameter.HEADER,
    required=False,
    description="The version the write is based on (`\"3\"` or `3`); alternative to the body's `version`.",
)


_SCALARS = [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]


@extend_schema_field({"oneOf": _SCALARS})
class ScalarField(serializers.Field[Any, Any, Any, Any]):
    """A JSON string, number or boolean (OFREP metadata values)."""

    def to_representation(self, value: Any) -> Any:
        return value

    def to_internal_value(self, data: Any) -> Any:
        return data


@extend_schema_field({"oneOf": [*_SCALARS, {"type": "array", "items": {"oneOf": _SCALARS}}], "nullable": True})
class AttributeValueField(ScalarField):
    """A context attribute: a string, number, boolean, null, or a list of those (for ``contains``)."""


def documented_query_parameters(view: APIView, method: str) -> set[str]:
    """The query parameters ``@extend_schema(parameters=...)`` documents for ``method`` on ``view``.

    ``@extend_schema`` keeps its schema class on the handler (``handler.kwargs["schema"]``, as DRF's
    ``@action`` does) or, on a decorated class, as the class's ``schema``; asking it for its override
    parameters gives exactly the list the OpenAPI document shows. A serializer given as parameters
    contributes each of its fields.
    """
    handler = getattr(view, method.lower(), None)
    schema_class: Any = getattr(handler, "kwargs", {}).get("schema") or type(view.schema)
    schema = schema_class()
    schema.view = view
    schema.method = method.upper()
    names: set[str] = set()
    for parameter in schema.get_override_parameters():
        if isinstance(parameter, OpenApiParameter):
            if parameter.location == OpenApiParameter.QUERY and not parameter.exclude:
                names.add(parameter.name)
        elif is_serializer(parameter):
            names.update(force_instance(parameter).fields)
    return names
