"""How the client reports trouble without raising: a log warning once per distinct problem
(until it is resolved), and an ``on_error`` callback each time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

__all__ = ["MAX_PROBLEMS", "Problems", "TurnoutError", "label"]

log = logging.getLogger("turnout")

MAX_PROBLEMS: Final = 1000
_MAX_LABEL: Final = 200


class TurnoutError(Exception):
    """What ``on_error`` receives. Never raised into the host by Turnout itself.

    ``kind`` is one of ``"fetch"``, ``"ruleset"``, ``"stream"``, ``"metrics"``,
    ``"decision"``, ``"breaker"``, ``"bootstrap"``, ``"redact"``, ``"switch"``, ``"call"``,
    ``"internal"``; ``problem`` is the stable key used to log a problem once.
    """

    def __init__(self, kind: str, problem: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.problem = problem


def label(value: object) -> str:
    """``value`` as a short string for messages and metrics, without calling any method of the
    value itself (its ``__str__``/``__repr__`` may raise): strings (and str subclasses) as
    they are, anything else as ``<typename>``."""
    if value.__class__ is str:
        text: str = value  # type: ignore[assignment]  # checked just above
    elif isinstance(value, str):
        text = str.__str__(value)  # the plain string, bypassing an overridden __str__
    else:
        return f"<{type(value).__name__}>"
    return text if len(text) <= _MAX_LABEL else text[:_MAX_LABEL] + "…"


class Problems:
    def __init__(self, on_error: Callable[[TurnoutError], object] | None) -> None:
        self.on_error = on_error
        self.open: dict[str, str] = {}
        self._lock = threading.Lock()

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self.open = {}

    def report(
        self,
        key: str,
        message: str,
        kind: str,
        exc: BaseException | None = None,
        *,
        notify: bool = True,
        event: str | None = None,
    ) -> None:
        """Log ``message`` once per ``key`` until resolved; tell ``on_error`` each time."""
        try:
            first = False
            if key not in self.open:
                with self._lock:
                    if key not in self.open and len(self.open) < MAX_PROBLEMS:
                        self.open[key] = message
                        first = True
            if first:
                name = event or f"{kind}.problem"
                log.warning(
                    "turnout.%s: %s",
                    name,
                    message,
                    extra={"turnout_event": name, "turnout_problem": key},
                )
            if notify and self.on_error is not None:
                err = TurnoutError(kind, key, message)
                err.__cause__ = exc
                self.on_error(err)
        except Exception:
            pass  # on_error raised, or logging is broken: never the host's problem

    def resolved(self, prefix: str) -> None:
        if not self.open:
            return
        try:
            with self._lock:
                keys = [k for k in self.open if k.startswith(prefix)]
                for k in keys:
                    del self.open[k]
            for k in keys:
                log.info("turnout.resolved: %s", k, extra={"turnout_event": "resolved", "turnout_problem": k})
        except Exception:  # pragma: no cover - logging is broken
            pass
