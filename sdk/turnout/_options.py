"""The client's options, grouped and checked in one place.

``Turnout(url, sdk_key, poll_interval=10)`` and ``Turnout(url, sdk_key,
options=Options(poll_interval=10))`` are the same client; keyword arguments given next to
``options=`` override its fields. A bad option is a configuration error: it raises
``ValueError`` naming the option when the client (or the ``Options``) is built — the only
time Turnout raises; calls on a built client never do.
"""

from __future__ import annotations

import dataclasses
import math
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypedDict

from ._breaker import Breaker

if TYPE_CHECKING:
    from ._problems import TurnoutError

__all__ = ["DEFAULT_BREAKER", "Bootstrap", "Options", "OptionsKwargs", "Redactor"]

#: ``redact(flag, result) -> JSON-safe value`` applied to both results of a mismatch sample.
Redactor = Callable[[str, Any], Any]

#: a ruleset document, or the path of a JSON file holding one
Bootstrap = str | os.PathLike[str] | Mapping[str, Any]

DEFAULT_BREAKER: Final = Breaker()


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """Every option of a ``Turnout`` client (the README describes each)."""

    # syncing the ruleset
    start_wait: float = 5.0
    stream: bool = True
    poll_interval: float = 30.0
    timeout: float = 5.0
    stream_read_timeout: float = 45.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    bootstrap: Bootstrap | None = None
    max_ruleset_bytes: int = 32 * 1024 * 1024
    ssl_context: ssl.SSLContext | None = None
    # problems
    on_error: Callable[[TurnoutError], object] | None = None
    # metrics
    send_metrics: bool = True
    flush_interval: float = 10.0
    flush_retries: int = 3
    max_pending_batches: int = 10
    code_version: str | None = None
    # run(): shadows, samples, breaker
    shadow_workers: int = 2
    shadow_queue: int = 32
    compare_timeout: float = 2.0
    async_shadow_limit: int = 64
    redact: Redactor | None = None
    max_samples: int = 20
    max_sample_bytes: int = 2048
    breaker: Breaker | None = DEFAULT_BREAKER

    def __post_init__(self) -> None:
        for name in ("poll_interval", "timeout", "stream_read_timeout", "backoff_base", "flush_interval",
                     "compare_timeout"):
            _positive(name, getattr(self, name))
        _positive("backoff_max", self.backoff_max)
        _not_negative("start_wait", self.start_wait)
        if self.backoff_max < self.backoff_base:
            raise ValueError("backoff_max must be >= backoff_base")
        for name in ("shadow_workers", "shadow_queue", "async_shadow_limit", "max_sample_bytes",
                     "max_ruleset_bytes"):
            _count(name, getattr(self, name), minimum=1)
        for name in ("flush_retries", "max_pending_batches", "max_samples"):
            _count(name, getattr(self, name), minimum=0)
        for name in ("stream", "send_metrics"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {_show(getattr(self, name))}")
        for name in ("on_error", "redact"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ValueError(f"{name} must be a function or None, got {_show(value)}")
        if self.breaker is not None and not isinstance(self.breaker, Breaker):
            raise ValueError(f"breaker must be a turnout.Breaker or None, got {_show(self.breaker)}")
        if self.ssl_context is not None and not isinstance(self.ssl_context, ssl.SSLContext):
            raise ValueError(f"ssl_context must be an ssl.SSLContext or None, got {_show(self.ssl_context)}")
        if self.code_version is not None and (
            not isinstance(self.code_version, str) or len(self.code_version) > 100
        ):
            raise ValueError("code_version must be a string of at most 100 characters, or None")
        # ``bootstrap`` is data, not configuration: an unusable document is reported, never raised

    def replace(self, **changes: Any) -> Options:
        """A copy with some options changed (checked again)."""
        unknown = sorted(set(changes) - _NAMES)
        if unknown:
            raise TypeError(f"unknown Turnout option {unknown[0]!r}")
        return dataclasses.replace(self, **changes)


class OptionsKwargs(TypedDict, total=False):
    """The options as keyword arguments of ``Turnout(...)`` (the fields of ``Options``)."""

    start_wait: float
    stream: bool
    poll_interval: float
    timeout: float
    stream_read_timeout: float
    backoff_base: float
    backoff_max: float
    bootstrap: Bootstrap | None
    max_ruleset_bytes: int
    ssl_context: ssl.SSLContext | None
    on_error: Callable[[TurnoutError], object] | None
    send_metrics: bool
    flush_interval: float
    flush_retries: int
    max_pending_batches: int
    code_version: str | None
    shadow_workers: int
    shadow_queue: int
    compare_timeout: float
    async_shadow_limit: int
    redact: Redactor | None
    max_samples: int
    max_sample_bytes: int
    breaker: Breaker | None


_NAMES: Final = frozenset(f.name for f in dataclasses.fields(Options))


def _show(value: object) -> str:
    """A short description of a value for an error message (never calls the value's methods)."""
    return f"a {type(value).__name__}"


def _positive(name: str, value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not value > 0
    ):
        shown = repr(value) if isinstance(value, int | float) else _show(value)
        raise ValueError(f"{name} must be a number > 0, got {shown}")


def _not_negative(name: str, value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        shown = repr(value) if isinstance(value, int | float) else _show(value)
        raise ValueError(f"{name} must be a number >= 0, got {shown}")


def _count(name: str, value: object, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        shown = repr(value) if isinstance(value, int | float) else _show(value)
        raise ValueError(f"{name} must be an integer >= {minimum}, got {shown}")
