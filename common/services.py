"""Helpers every service uses: the unset marker, model validation, version checks."""

from __future__ import annotations

import enum
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models

from common.errors import Conflict, ValidationFailed


class _Unset(enum.Enum):
    """A one-member enum, so ``value is UNSET`` / ``is not UNSET`` narrows ``str | Unset`` for the type checker."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = _Unset.UNSET
# The type of an argument that may be left out: ``name: str | Unset = UNSET``.
Unset = Literal[_Unset.UNSET]


def full_clean(instance: models.Model, *, exclude: list[str] | None = None, validate_unique: bool = True) -> None:
    """Model validation with our error type (names the field)."""
    try:
        instance.full_clean(exclude=exclude, validate_unique=validate_unique)
    except DjangoValidationError as exc:
        raise ValidationFailed.from_django(exc) from None


def check_version(instance: Any, expected: int | None, *, what: str) -> None:
    """Optimistic concurrency: the write must name the version it read."""
    if expected is None:
        return
    if instance.version != expected:
        raise Conflict(
            f"{what} changed since version {expected}; it is now at version {instance.version}. "
            "Reload and try again.",
            current_version=instance.version,
        )


def percentage(value: Any, *, field: str) -> Decimal:
    """A share of subjects, 0-100, at most four decimals."""
    if isinstance(value, bool):
        raise ValidationFailed.field(field, "must be a number between 0 and 100")
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValidationFailed.field(field, "must be a number between 0 and 100") from None
    if not number.is_finite() or number < 0 or number > 100:
        raise ValidationFailed.field(field, "must be a number between 0 and 100")
    if number != number.quantize(Decimal("0.0001")):
        raise ValidationFailed.field(field, "has at most four decimal places")
    return number.quantize(Decimal("0.0001"))


def changes(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the fields that differ, as (before, after) for the audit log."""
    keys = [k for k in after if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in keys}, {k: after[k] for k in keys}


def reject_control_characters(value: Any, *, field: str) -> None:
    """JSON stored as-is (rules, overrides) may hold no NUL: PostgreSQL's jsonb cannot store it."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValidationFailed.field(field, "contains a NUL character")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
