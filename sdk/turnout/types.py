"""Public result types of the Turnout SDK (stdlib only)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Decision", "ErrorCode", "Path", "Reason", "Stage", "StageDecision"]


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


class Stage(StrEnum):
    """A data migration's stage (a flag of kind ``migration``), in order.

    ``off`` legacy only · ``dual_write`` write both (legacy authoritative), read legacy ·
    ``shadow`` write both, read both and compare, return legacy · ``live`` write both (parallel
    authoritative), read both and compare, return parallel · ``rampdown`` write both (parallel
    authoritative), read parallel · ``complete`` parallel only.
    """

    OFF = "off"
    DUAL_WRITE = "dual_write"
    SHADOW = "shadow"
    LIVE = "live"
    RAMPDOWN = "rampdown"
    COMPLETE = "complete"

    @property
    def position(self) -> int:
        return _STAGE_ORDER.index(self)

    @property
    def authoritative(self) -> Path:
        """The origin whose result a call returns and whose failure the caller sees."""
        return Path.PARALLEL if self in _PARALLEL_AUTHORITATIVE else Path.LEGACY

    @property
    def reads(self) -> tuple[Path, ...]:
        """The origins a read runs, the authoritative one first."""
        return _READS[self]

    @property
    def writes(self) -> tuple[Path, ...]:
        """The origins a write runs, the authoritative one first."""
        return _WRITES[self]


_STAGE_ORDER = tuple(Stage)
_PARALLEL_AUTHORITATIVE = frozenset({Stage.LIVE, Stage.RAMPDOWN, Stage.COMPLETE})
_L, _P = Path.LEGACY, Path.PARALLEL
_READS: dict[Stage, tuple[Path, ...]] = {
    Stage.OFF: (_L,), Stage.DUAL_WRITE: (_L,), Stage.SHADOW: (_L, _P), Stage.LIVE: (_P, _L),
    Stage.RAMPDOWN: (_P,), Stage.COMPLETE: (_P,),
}
_WRITES: dict[Stage, tuple[Path, ...]] = {
    Stage.OFF: (_L,), Stage.DUAL_WRITE: (_L, _P), Stage.SHADOW: (_L, _P), Stage.LIVE: (_P, _L),
    Stage.RAMPDOWN: (_P, _L), Stage.COMPLETE: (_P,),
}


@dataclass(frozen=True, slots=True)
class StageDecision:
    """Where a subject stands in a data migration, and why (``Ruleset.decide_stage``).

    ``rule`` names what decided: ``"cohort:<key>"``, ``"split:<stage>"``, ``"stage"`` (the
    migration's base stage), ``"path"`` (a flag without a migration: legacy is ``off``, parallel
    is ``complete``), ``"disabled"``, ``"retired"`` or ``"error"``.
    """

    flag: str
    stage: Stage
    reason: Reason
    error_code: ErrorCode | None = None
    rule: str | None = None
    bucket: int | None = None
    version: int | None = None

    @property
    def authoritative(self) -> Path:
        return self.stage.authoritative
