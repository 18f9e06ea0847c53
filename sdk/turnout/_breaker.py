"""The local circuit breaker: per flag, over the parallel path's calls in this process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Breaker", "BreakerState", "FlagBreaker"]

_SLOTS = 10


@dataclass(frozen=True, slots=True)
class Breaker:
    """Budget of the local circuit breaker (pass ``breaker=None`` to ``Turnout`` to disable it).

    Over a rolling ``window`` (seconds) with at least ``min_calls`` calls of a flag's parallel
    path made through ``run()``/``arun()``, the breaker opens when the share of calls that
    raised is above ``error_rate``, or, when ``slow_ms`` is set, when the share of calls slower
    than ``slow_ms`` is above ``slow_rate``. While open, every decision for the flag is
    ``legacy`` with reason ``ERROR`` and error code ``CIRCUIT_OPEN``. After ``cooldown``
    seconds it half-opens: the next ``probes`` parallel decisions go through; if they all
    succeed within budget it closes, and any failure opens it again.
    """

    error_rate: float = 0.5
    slow_ms: float | None = None
    slow_rate: float = 0.5
    min_calls: int = 20
    window: float = 10.0
    cooldown: float = 30.0
    probes: int = 5

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0 or not 0.0 <= self.slow_rate <= 1.0:
            raise ValueError("Breaker rates are fractions between 0 and 1")
        if self.window <= 0 or self.cooldown < 0 or self.min_calls < 1 or self.probes < 1:
            raise ValueError("Breaker window > 0, cooldown >= 0, min_calls >= 1, probes >= 1")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class FlagBreaker:
    """State for one flag. Every method is thread-safe; none is on the decide() fast path
    unless the breaker has tripped."""

    def __init__(self, config: Breaker, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._slot_len = config.window / _SLOTS
        # each slot: [epoch, calls, errors, slow]
        self._slots = [[-1, 0, 0, 0] for _ in range(_SLOTS)]
        self._epoch = -1
        self._calls = self._errors = self._slows = 0
        self.state = BreakerState.CLOSED
        self.reason = ""
        self._since = 0.0
        self._probes_left = 0
        self._probe_ok = 0

    def reset_lock(self) -> None:
        self._lock = threading.Lock()

    def _reset_window(self) -> None:
        for s in self._slots:
            s[0], s[1], s[2], s[3] = -1, 0, 0, 0
        self._epoch = -1
        self._calls = self._errors = self._slows = 0

    def _advance(self, epoch: int) -> None:
        """Expire the slots that fell out of the window (running totals stay O(1))."""
        last = self._epoch
        if epoch - last >= _SLOTS:
            for s in self._slots:
                s[0], s[1], s[2], s[3] = -1, 0, 0, 0
            self._calls = self._errors = self._slows = 0
        else:
            for e in range(last + 1, epoch + 1):
                s = self._slots[e % _SLOTS]
                self._calls -= s[1]
                self._errors -= s[2]
                self._slows -= s[3]
                s[0], s[1], s[2], s[3] = e, 0, 0, 0
        self._epoch = epoch

    def record(self, ok: bool, elapsed_ms: float) -> BreakerState | None:
        """Record one parallel call; return the new state when this call changed it."""
        cfg = self.config
        slow = cfg.slow_ms is not None and elapsed_ms > cfg.slow_ms
        now = self._clock()
        with self._lock:
            if self.state is BreakerState.HALF_OPEN:
                if not ok or slow:
                    self._open(now, "probe failed" if not ok else "probe slow")
                    return BreakerState.OPEN
                self._probe_ok += 1
                if self._probe_ok >= cfg.probes:
                    self.state = BreakerState.CLOSED
                    self.reason = "probes succeeded"
                    self._reset_window()
                    return BreakerState.CLOSED
                return None
            if self.state is BreakerState.OPEN:
                return None  # a call that started before the breaker opened
            epoch = int(now / self._slot_len)
            if epoch != self._epoch:
                self._advance(epoch)
            slot = self._slots[epoch % _SLOTS]
            slot[1] += 1
            self._calls += 1
            if not ok:
                slot[2] += 1
                self._errors += 1
            if slow:
                slot[3] += 1
                self._slows += 1
            calls = self._calls
            if calls < cfg.min_calls:
                return None
            if self._errors / calls > cfg.error_rate:
                self._open(now, f"error rate {self._errors}/{calls} above {cfg.error_rate:g}")
                return BreakerState.OPEN
            if cfg.slow_ms is not None and self._slows / calls > cfg.slow_rate:
                self._open(now, f"{self._slows}/{calls} calls slower than {cfg.slow_ms:g} ms")
                return BreakerState.OPEN
            return None

    def _open(self, now: float, reason: str) -> None:
        self.state = BreakerState.OPEN
        self.reason = reason
        self._since = now
        self._reset_window()

    def allow(self) -> tuple[bool, BreakerState | None]:
        """For a tripped flag: may this parallel decision go through (as a half-open probe)?
        Also returns the new state when asking changed it (open -> half-open)."""
        now = self._clock()
        with self._lock:
            changed: BreakerState | None = None
            if self.state is BreakerState.OPEN:
                if now - self._since < self.config.cooldown:
                    return False, None
                changed = self._half_open(now)
            elif self.state is BreakerState.HALF_OPEN and self._probes_left == 0:
                # probes handed out but never reported (e.g. used through decide() only):
                # hand out a fresh set after another cool-down rather than stay stuck.
                if now - self._since >= self.config.cooldown:
                    self._half_open(now)
            elif self.state is BreakerState.CLOSED:
                return True, None
            if self._probes_left > 0:
                self._probes_left -= 1
                return True, changed
            return False, changed

    def _half_open(self, now: float) -> BreakerState:
        self.state = BreakerState.HALF_OPEN
        self.reason = "cool-down elapsed"
        self._since = now
        self._probes_left = self.config.probes
        self._probe_ok = 0
        return BreakerState.HALF_OPEN
