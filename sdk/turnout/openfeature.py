"""An in-process OpenFeature provider backed by a ``Turnout`` client (``turnout[openfeature]``).

    from openfeature import api
    from turnout import Turnout
    from turnout.openfeature import TurnoutProvider

    api.set_provider(TurnoutProvider(Turnout(url, sdk_key)))
    use_parallel = api.get_client().get_boolean_value("invoice-engine", False, ctx)

Mapping: the boolean value is true for ``parallel``; the variant is ``"parallel"`` or
``"legacy"``; the reason is passed through (Turnout's reasons are OpenFeature's names); error
codes map to OpenFeature's, and ``CIRCUIT_OPEN`` (not an OpenFeature code) maps to ``GENERAL``.
On an error OpenFeature returns the caller's default value, so pass ``False`` (legacy) as the
default. String evaluation returns the path name; other types answer ``TYPE_MISMATCH``.
The decision's ``version``, ``rule``, ``stage``, ``bucket`` and ``compare`` travel as flag
metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

try:
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.exception import ErrorCode as OFErrorCode
    from openfeature.flag_evaluation import FlagResolutionDetails
    from openfeature.flag_evaluation import Reason as OFReason
    from openfeature.provider import AbstractProvider, Metadata
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "turnout.openfeature needs the OpenFeature SDK: pip install 'turnout[openfeature]'"
    ) from exc

from .client import Turnout
from .types import Decision, ErrorCode

__all__ = ["TurnoutProvider"]

V = TypeVar("V")

_ERRORS: dict[ErrorCode, OFErrorCode] = {
    ErrorCode.PROVIDER_NOT_READY: OFErrorCode.PROVIDER_NOT_READY,
    ErrorCode.FLAG_NOT_FOUND: OFErrorCode.FLAG_NOT_FOUND,
    ErrorCode.PARSE_ERROR: OFErrorCode.PARSE_ERROR,
    ErrorCode.TARGETING_KEY_MISSING: OFErrorCode.TARGETING_KEY_MISSING,
    ErrorCode.INVALID_CONTEXT: OFErrorCode.INVALID_CONTEXT,
    ErrorCode.GENERAL: OFErrorCode.GENERAL,
    ErrorCode.CIRCUIT_OPEN: OFErrorCode.GENERAL,
}

_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.PROVIDER_NOT_READY: "no ruleset loaded yet",
    ErrorCode.FLAG_NOT_FOUND: "flag not in the ruleset",
    ErrorCode.PARSE_ERROR: "the ruleset could not be used",
    ErrorCode.TARGETING_KEY_MISSING: "the evaluation context has no targeting key",
    ErrorCode.INVALID_CONTEXT: "invalid evaluation context",
    ErrorCode.GENERAL: "evaluation failed",
    ErrorCode.CIRCUIT_OPEN: "CIRCUIT_OPEN: the local circuit breaker sends this flag to legacy",
}


class TurnoutProvider(AbstractProvider):
    """OpenFeature provider evaluating locally with ``client`` (which it does not own unless
    ``close_client=True``: then ``shutdown()`` closes it)."""

    def __init__(
        self, client: Turnout, *, ready_timeout: float = 5.0, close_client: bool = False
    ) -> None:
        super().__init__()
        self.client = client
        self.ready_timeout = ready_timeout
        self.close_client = close_client

    def get_metadata(self) -> Metadata:
        return Metadata(name="turnout")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        # Wait a little for the first ruleset; never fail: until it arrives, evaluations answer
        # PROVIDER_NOT_READY and OpenFeature returns the caller's default.
        self.client.wait_until_ready(self.ready_timeout)

    def shutdown(self) -> None:
        if self.close_client:
            self.client.close()

    def _decide(self, flag_key: str, ctx: EvaluationContext | None) -> Decision:
        key = ctx.targeting_key if ctx is not None else None
        attrs = dict(ctx.attributes) if ctx is not None and ctx.attributes else None
        return self.client.decide(flag_key, key, attrs)

    @staticmethod
    def _details(d: Decision, value: V) -> FlagResolutionDetails[V]:
        meta: dict[str, bool | int | float | str] = {"compare": d.compare}
        for name in ("version", "rule", "stage", "bucket"):
            v = getattr(d, name)
            if v is not None:
                meta[name] = v
        code = d.error_code
        return FlagResolutionDetails(
            value=value,
            variant=str(d.path),
            reason=OFReason(str(d.reason)),
            error_code=_ERRORS.get(code, OFErrorCode.GENERAL) if code is not None else None,
            error_message=_MESSAGES.get(code, str(code)) if code is not None else None,
            flag_metadata=meta,
        )

    def _mismatch(self, flag_key: str, default: V, expected: str) -> FlagResolutionDetails[V]:
        return FlagResolutionDetails(
            value=default,
            reason=OFReason.ERROR,
            error_code=OFErrorCode.TYPE_MISMATCH,
            error_message=f"Turnout flag {flag_key!r} is a {expected}; ask for a boolean",
        )

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        d = self._decide(flag_key, evaluation_context)
        return self._details(d, d.parallel)

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        d = self._decide(flag_key, evaluation_context)
        return self._details(d, str(d.path))

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        return self._mismatch(flag_key, default_value, "boolean (true = parallel)")

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._mismatch(flag_key, default_value, "boolean (true = parallel)")

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[Any] | Mapping[str, Any],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[Any] | Mapping[str, Any]]:
        return self._mismatch(flag_key, default_value, "boolean (true = parallel)")
