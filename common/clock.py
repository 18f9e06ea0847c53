"""The one clock every time-dependent rule reads (soak times, schedules, guardrail windows).

Tests move time with ``frozen()`` instead of sleeping; services and tasks also take ``now=``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.utils import timezone

_frozen: list[datetime] = []


def now() -> datetime:
    """The current time (aware, UTC), or the frozen time inside ``frozen()``."""
    return _frozen[-1] if _frozen else timezone.now()


class FrozenClock:
    def __init__(self, at: datetime) -> None:
        self._index = len(_frozen)
        self._at = at
        _frozen.append(at)

    def now(self) -> datetime:
        """The frozen time (still readable after the block ends)."""
        return self._at

    def tick(self, seconds: float = 0, **delta: float) -> datetime:
        """Move the frozen time forward."""
        self._at += timedelta(seconds=seconds, **delta)
        _frozen[self._index] = self._at
        return self._at


@contextmanager
def frozen(at: datetime | None = None) -> Iterator[FrozenClock]:
    """Freeze ``now()`` at ``at`` (default: the real current time) until the block ends."""
    clock = FrozenClock(at or timezone.now())
    try:
        yield clock
    finally:
        _frozen.pop()
