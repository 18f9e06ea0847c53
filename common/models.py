"""Small shared model pieces (no domain models live here)."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models

KEY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
key_validator = RegexValidator(
    KEY_PATTERN,
    "Use 1-63 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit.",
    code="invalid_key",
)


class KeyField(models.CharField):
    """A stable, URL-safe identifier (what SDKs, the API and the audit log name things by)."""

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("max_length", 63)
        kwargs.setdefault("validators", [key_validator])
        super().__init__(*args, **kwargs)

    def deconstruct(self):  # type: ignore[no-untyped-def]
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("validators", None)
        if kwargs.get("max_length") == 63:
            kwargs.pop("max_length")
        return name, path, args, kwargs


class TimestampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
