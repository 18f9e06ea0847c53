"""Small shared model pieces (no domain models live here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.core.validators import RegexValidator
from django.db import models

KEY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
key_validator = RegexValidator(
    KEY_PATTERN,
    "Use 1-63 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit.",
    code="invalid_key",
)


if TYPE_CHECKING:  # Field classes are generic only in django-stubs, not at run time
    _CharField = models.CharField[str | int, str]
else:
    _CharField = models.CharField


class KeyField(_CharField):
    """A stable, URL-safe identifier (what SDKs, the API and the audit log name things by)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 63)
        kwargs.setdefault("validators", [key_validator])
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> tuple[str, str, Sequence[Any], dict[str, Any]]:
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


class Heartbeat(models.Model):
    """The last sign of life of one background process (a Celery worker or beat) or of beat's
    schedule reaching a worker: written to the database so it is readable with Redis down.
    ``/readyz``, ``/metrics`` and the UI banner report kinds whose newest beat is stale."""

    class Kind(models.TextChoices):
        WORKER = "worker", "Celery worker"
        BEAT = "beat", "Celery beat"
        SCHEDULE = "schedule", "beat's schedule run by a worker"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=200, help_text="The process (worker node name, host and pid).")
    seen_at = models.DateTimeField()

    class Meta:
        constraints = [
            # One row per process and kind: each beat overwrites the last.
            models.UniqueConstraint(fields=["kind", "name"], name="heartbeat_kind_name_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name} @ {self.seen_at:%H:%M:%S}"
