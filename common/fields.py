"""Serializer fields the management API shares, each described precisely for OpenAPI."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from common.errors import ValidationFailed
from common.inputs import json_type
from common.models import KEY_PATTERN
from common.services import percentage


def key_field(**kwargs: Any) -> serializers.RegexField:
    """A stable, URL-safe identifier: 1-63 of a-z 0-9 - _ . starting with a letter or digit."""
    return serializers.RegexField(KEY_PATTERN, max_length=63, **kwargs)


@extend_schema_field({
    "oneOf": [
        {"type": "number", "minimum": 0, "maximum": 100},
        {"type": "string", "pattern": r"^\d{1,3}(\.\d{1,4})?$"},
    ],
    "description": "A share of subjects, 0-100, at most four decimals; a JSON number or a string.",
})
class PercentageField(serializers.Field[Any, Any, float, Any]):
    def to_internal_value(self, data: Any) -> Decimal:
        try:
            return percentage(data, field=self.field_name or "percentage")
        except ValidationFailed as exc:
            raise serializers.ValidationError(next(iter(exc.fields.values()))[0]) from None

    def to_representation(self, value: Any) -> float:
        return float(value)


@extend_schema_field({
    "type": "object",
    "nullable": True,
    "description": "Attribute rules: a condition `{attr, op, values}` or `{all|any: [rules]}` / `{not: rule}`; "
                   "null for none.",
    "additionalProperties": True,
})
class RulesField(serializers.JSONField):
    """Its shape is checked here (an object, or null); the rules themselves by ``validate_rules`` when saved."""

    def to_internal_value(self, data: Any) -> Any:
        if data is not None and not isinstance(data, dict):
            raise serializers.ValidationError(f"must be a JSON object or null, not {json_type(data)}")
        value: Any = data  # the stub's JSONField takes only an object or a list of objects; null is allowed here
        return super().to_internal_value(value)


class ReasonField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("max_length", 1000)
        kwargs.setdefault("default", "")
        kwargs.setdefault("help_text", "Why: kept in the audit log.")
        super().__init__(**kwargs)


def provided(data: dict[str, Any], *names: str) -> dict[str, Any]:
    """The named fields the caller actually sent (a PATCH changes only those)."""
    return {name: data[name] for name in names if name in data}
