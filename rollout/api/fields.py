"""Serializer fields of the rollout API that know the rollout domain (the shared, domain-free ones are in
``common/fields.py``)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from common.errors import ValidationFailed
from rollout.services.flags import validate_overrides


@extend_schema_field({
    "type": "object",
    "additionalProperties": {"type": "string", "enum": ["legacy", "parallel"]},
    "description": "Subject key → path, ahead of cohorts and the percentage.",
})
class OverridesField(serializers.JSONField):
    def to_internal_value(self, data: Any) -> Any:
        try:
            return validate_overrides(data)
        except ValidationFailed as exc:
            raise serializers.ValidationError(exc.message) from None
