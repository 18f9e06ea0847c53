"""One mapping of a Turnout ``Decision`` onto OpenFeature's resolution details (stdlib only).

Both OpenFeature entrances use it, so the same decision reads the same through either: the
in-process provider (``turnout.openfeature``) and the server's OFREP endpoint.

- **value** ``True`` for the parallel path; **variant** ``"parallel"`` or ``"legacy"``.
- **reason**: the engine's reasons are OpenFeature's names, and pass through — except
  ``DEFAULT``, which the OFREP protocol (v0.3.0) does not allow: its success reasons are
  ``STATIC TARGETING_MATCH SPLIT DISABLED UNKNOWN``. The engine answers ``DEFAULT`` when no
  targeting matched and the subject is not in the percentage split, which is one of two things:

  * the subject was **drawn** by a live split (0 % < percentage < 100 %, a bucket was computed)
    and landed outside it: pseudorandom assignment put it on legacy → ``SPLIT``;
  * **nothing was drawn**: the percentage is 0 % (nobody can be in the split), or the context
    lacks the flag's ``bucket_by`` attribute → the flag's fixed default, legacy → ``STATIC``.

  Without the ruleset the decision came from, the percentage is unknown and a computed bucket
  counts as a draw. The engine's own reason always travels as ``metadata.turnoutReason``.
- An ``ERROR`` decision is reason ``ERROR`` with an OpenFeature error code (``CIRCUIT_OPEN``, not
  an OpenFeature code, is ``GENERAL`` with a message naming it) and a message naming the flag.
- **metadata**: ``turnoutReason``, ``compare``, and when known ``version``, ``environment``,
  ``rule``, ``stage``, ``bucket``, ``detail`` — scalars only, as both protocols require.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ._problems import label
from .engine import Ruleset
from .types import Decision, ErrorCode, Path, Reason

__all__ = ["OFREP_REASONS", "Resolution", "resolve"]

#: the success reasons OFREP v0.3.0 allows (``evaluationSuccess.reason``)
OFREP_REASONS: Final = ("STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "UNKNOWN")

_BUCKETS: Final = 1_000_000

_ERROR_CODES: Final[Mapping[ErrorCode, str]] = {
    ErrorCode.PROVIDER_NOT_READY: "PROVIDER_NOT_READY",
    ErrorCode.FLAG_NOT_FOUND: "FLAG_NOT_FOUND",
    ErrorCode.PARSE_ERROR: "PARSE_ERROR",
    ErrorCode.TARGETING_KEY_MISSING: "TARGETING_KEY_MISSING",
    ErrorCode.INVALID_CONTEXT: "INVALID_CONTEXT",
    ErrorCode.GENERAL: "GENERAL",
    ErrorCode.CIRCUIT_OPEN: "GENERAL",
}

_MESSAGES: Final[Mapping[ErrorCode, str]] = {
    ErrorCode.PROVIDER_NOT_READY: "No ruleset is loaded yet to evaluate flag '{flag}'",
    ErrorCode.FLAG_NOT_FOUND: "Flag '{flag}' was not found",
    ErrorCode.PARSE_ERROR: "The ruleset for flag '{flag}' could not be parsed",
    ErrorCode.TARGETING_KEY_MISSING: "Flag '{flag}' needs a targetingKey in the context",
    ErrorCode.INVALID_CONTEXT: "The context cannot be used to evaluate flag '{flag}'",
    ErrorCode.GENERAL: "Flag '{flag}' could not be evaluated",
    ErrorCode.CIRCUIT_OPEN: "CIRCUIT_OPEN: the local circuit breaker sends flag '{flag}' to legacy",
}

Metadata = dict[str, bool | int | float | str]


@dataclass(frozen=True, slots=True)
class Resolution:
    """A decision in OpenFeature's terms."""

    flag: str
    value: bool
    variant: str
    reason: str
    error_code: str | None
    error_message: str | None
    metadata: Metadata

    @property
    def failed(self) -> bool:
        return self.error_code is not None


def resolve(decision: Decision, ruleset: Ruleset | None = None) -> Resolution:
    """``decision`` in OpenFeature's terms; ``ruleset`` is the one it was decided with (for
    the flag's percentage and the environment). Never raises."""
    flag = label(decision.flag)
    meta: Metadata = {"turnoutReason": str(decision.reason), "compare": bool(decision.compare)}
    known = ruleset if ruleset is not None and _is_ruleset(ruleset) else None
    version = decision.version if decision.version is not None else (known.version if known else None)
    if version is not None:
        meta["version"] = version
    if known is not None:
        meta["environment"] = known.environment
    for name in ("rule", "stage", "bucket", "detail"):
        v = getattr(decision, name)
        if isinstance(v, bool | int | float | str):
            meta[name] = v
    parallel = decision.path is Path.PARALLEL
    variant = "parallel" if parallel else "legacy"
    if decision.reason is Reason.ERROR or decision.error_code is not None:
        code = decision.error_code if isinstance(decision.error_code, ErrorCode) else ErrorCode.GENERAL
        return Resolution(flag, False, "legacy", "ERROR", _ERROR_CODES[code],
                          _MESSAGES[code].format(flag=flag), meta)
    return Resolution(flag, parallel, variant, _reason(decision, known), None, None, meta)


def _reason(decision: Decision, ruleset: Ruleset | None) -> str:
    reason = decision.reason
    if reason is not Reason.DEFAULT:
        return str(reason)
    if decision.bucket is None:
        return "STATIC"  # not bucketed (no bucket_by attribute): nothing was drawn
    if ruleset is None or ruleset.version != decision.version:
        return "SPLIT"  # the percentage is unknown: a computed bucket counts as a draw
    return "SPLIT" if _split_is_live(ruleset, decision.flag) else "STATIC"


def _split_is_live(ruleset: Ruleset, flag: str) -> bool:
    """True when the flag's split can put a subject either way (0 % < percentage < 100 %)."""
    try:
        percentage: float = ruleset.doc["flags"][flag]["percentage"]
        threshold = round(percentage * 10_000)
    except Exception:
        return True
    return bool(0 < threshold < _BUCKETS)


def _is_ruleset(value: object) -> bool:
    return isinstance(value, Ruleset)
