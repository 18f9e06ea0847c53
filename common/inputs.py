"""The base of every input serializer: a body's shape is checked before anything reads it.

``Input`` refuses what DRF's ``Serializer`` quietly lets through: a field the serializer does not
declare (a misspelled ``usr`` would otherwise be dropped, and the request carried out without it)
is a 400 naming that field, with the fields it does know. A body that is not a JSON object is a 400
saying what it was. Nested serializers (``StageInput(many=True)``, a ``ListField`` of inputs)
inherit the same rules, and errors are reported by dotted path (``stages.0.percantage``).

The OpenAPI document says the same: every ``Input`` is described with ``additionalProperties: false``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.settings import api_settings

if TYPE_CHECKING:
    from drf_spectacular.openapi import AutoSchema

# Sent by HTML forms (and by a session client posting multipart) for Django's CSRF check: transport, not input.
TRANSPORT_FIELDS = frozenset({"csrfmiddlewaretoken"})
UNKNOWN_FIELD = "unknown field"


def json_type(value: Any) -> str:
    """What a parsed JSON (or form) value is, in JSON's words, for messages like "not an array"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


class Input(serializers.Serializer[Any]):
    """An input serializer that refuses a non-object body and any field it does not declare."""

    def accepted_fields(self) -> set[str]:
        return {name for name, field in self.fields.items() if not field.read_only}

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, Mapping):
            # The object's own error: reported as the body's (``__all__``), or nested under the item's path.
            message = f"must be a JSON object, not {json_type(data)}"
            raise serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [message]}, code="invalid")
        accepted = self.accepted_fields()
        unknown = [name for name in data if name not in accepted and name not in TRANSPORT_FIELDS]
        errors: dict[str, Any] = {}
        if unknown:
            message = f"{UNKNOWN_FIELD}; this input takes {', '.join(sorted(accepted)) or 'no fields'}"
            errors = {str(name): [serializers.ErrorDetail(message, code="unknown_field")] for name in unknown}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            # The unknown names first: a misspelling usually explains the "required" error that follows.
            detail = exc.detail if isinstance(exc.detail, dict) else {api_settings.NON_FIELD_ERRORS_KEY: exc.detail}
            raise serializers.ValidationError({**errors, **detail}) from None
        if errors:
            raise serializers.ValidationError(errors)
        return value


class InputSchema(OpenApiSerializerExtension):
    """Every ``Input`` (subclasses included) is documented as closed: no properties beyond those listed."""

    target_class = Input
    match_subclasses = True

    def map_serializer(self, auto_schema: AutoSchema, direction: Any) -> Any:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if direction == "request":
            schema["additionalProperties"] = False
        return schema


@extend_schema_field({"type": "object", "additionalProperties": True,
                      "description": "A JSON object; its keys depend on the action."})
class ObjectField(serializers.DictField):
    """A JSON object whose keys are checked later (by the action that takes it); anything else is a 400."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fail("not_a_dict", input_type=json_type(data))
        return super().to_internal_value(data)

    default_error_messages = {"not_a_dict": "must be a JSON object, not {input_type}"}
