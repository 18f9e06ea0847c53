"""An in-process OpenFeature provider backed by a ``Turnout`` client (``turnout[openfeature]``).

    from openfeature import api
    from turnout import Turnout
    from turnout.openfeature import TurnoutProvider

    api.set_provider(TurnoutProvider(Turnout(url, sdk_key)))
    use_parallel = api.get_client().get_boolean_value("invoice-engine", False, ctx)

Mapping: one function, ``turnout.openfeature_mapping.resolve``, shared with the server's OFREP
endpoint, so a decision reads the same through both: the boolean value is true for
``parallel``; the variant is ``"parallel"`` or ``"legacy"``; the reason is OpenFeature's (the
engine's ``DEFAULT`` is ``SPLIT`` when a live split drew the subject, ``STATIC`` when nothing was
drawn — see that module); error codes map to OpenFeature's, and ``CIRCUIT_OPEN`` (not an
OpenFeature code) maps to ``GENERAL``. On an error OpenFeature returns the caller's default
value, so pass ``False`` (legacy) as the default. String evaluation returns the path name;
other types answer ``TYPE_MISMATCH``. ``turnoutReason``, ``version``, ``environment``, ``rule``,
``stage``, ``bucket`` and ``compare`` travel as flag metadata. The provider never raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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

from ._problems import label
from .client import Turnout
from .openfeature_mapping import resolve
from .types import Decision

__all__ = ["TurnoutProvider"]

V = TypeVar("V")


def _error_code(code: str) -> OFErrorCode:
    try:
        return OFErrorCode(code)
    except ValueError:  # pragma: no cover - every code of the mapping is OpenFeature's
        return OFErrorCode.GENERAL


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

    def _resolve(
        self, flag_key: str, ctx: EvaluationContext | None, default: V, value: Callable[[Decision], V]
    ) -> FlagResolutionDetails[V]:
        try:
            key = getattr(ctx, "targeting_key", None) if ctx is not None else None
            raw = getattr(ctx, "attributes", None) if ctx is not None else None
            attrs = dict(raw) if raw else None
            d = self.client.decide(flag_key, key, attrs)
            r = resolve(d, self.client.ruleset)
            return FlagResolutionDetails(
                value=value(d) if not r.failed else default,
                variant=r.variant,
                reason=OFReason(r.reason),
                error_code=_error_code(r.error_code) if r.error_code is not None else None,
                error_message=r.error_message,
                flag_metadata=r.metadata,
            )
        except Exception as exc:  # an evaluation context the provider cannot read, say
            return FlagResolutionDetails(
                value=default,
                reason=OFReason.ERROR,
                error_code=OFErrorCode.INVALID_CONTEXT,
                error_message=f"The evaluation context cannot be used ({type(exc).__name__})",
            )

    def _mismatch(self, flag_key: str, default: V, expected: str) -> FlagResolutionDetails[V]:
        return FlagResolutionDetails(
            value=default,
            reason=OFReason.ERROR,
            error_code=OFErrorCode.TYPE_MISMATCH,
            error_message=f"Turnout flag {label(flag_key)!r} is a {expected}; ask for a boolean",
        )

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, evaluation_context, default_value, _parallel)

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, evaluation_context, default_value, _path_name)

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


def _parallel(d: Decision) -> bool:
    return d.parallel


def _path_name(d: Decision) -> str:
    return str(d.path)
