"""Public result types of the Turnout SDK (stdlib only)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Decision", "ErrorCode", "Path", "Reason"]


class Path(StrEnum):
    LEGACY = "legacy"
    PARALLEL = "parallel"


class Reason(StrEnum):
    """OpenFeature's resolution reasons, passed through unchanged by OFREP."""

    TARGETING_MATCH = "TARGETING_MATCH"
    SPLIT = "SPLIT"
    DEFAULT = "DEFAULT"
    DISABLED = "DISABLED"
    STATIC = "STATIC"
    ERROR = "ERROR"


class ErrorCode(StrEnum):
    """OpenFeature's error codes plus Turnout's local circuit breaker."""

    PROVIDER_NOT_READY = "PROVIDER_NOT_READY"
    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    PARSE_ERROR = "PARSE_ERROR"
    TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
    INVALID_CONTEXT = "INVALID_CONTEXT"
    GENERAL = "GENERAL"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"


@dataclass(frozen=True, slots=True)
class Decision:
    """Which path a subject takes for a flag, and why (a "decision receipt").

    ``rule`` names what decided: ``"override"``, ``"cohort:<key>"`` (an include or
    exclude cohort), ``"split"``, ``"default"``, ``"disabled"``, ``"retired"`` or ``"error"``.
    ``bucket`` is the subject's bucket (0..999_999) when the split was consulted. ``detail``
    says why in words when a decision needs it: a context lacking the flag's ``bucket_by``
    attribute is not in the split (``"bucket_by attribute 'tenant_id' missing from the
    attributes: not in the split"``); otherwise None.
    """

    flag: str
    path: Path
    reason: Reason
    compare: bool = False
    error_code: ErrorCode | None = None
    rule: str | None = None
    bucket: int | None = None
    stage: int | None = None
    version: int | None = None
    detail: str | None = None

    @property
    def parallel(self) -> bool:
        return self.path is Path.PARALLEL
