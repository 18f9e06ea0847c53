"""What a web process knows without asking Redis: each environment's current ruleset version, and
each SDK key's request count in the current throttle window.

Before, every SDK request (ruleset poll, evaluation, OFREP call, stream connect) awaited one Redis
round trip for the two. Now a process answers most requests from these two tables and goes to Redis
only when one of them is due, in ONE pipelined round trip (``rollout/delivery/lean.py``):

**Versions** (``versions``). A process's copy of an environment's current version is valid for
``SDK_VERSION_LOCAL_SECONDS`` (1 s) after Redis last confirmed it. Every change reaches the copy at
once when it is announced: in the committing process directly, in every other web process through
its ruleset listener (``rollout/delivery/broadcast.py``, one pub/sub subscription per process,
started with the process). So a change is normally seen within the pub/sub delay; if a message is
lost (Redis restarted, the listener reconnecting) the copy is at most ``SDK_VERSION_LOCAL_SECONDS``
behind Redis, which is itself never behind the database for longer than ``VERSION_CACHE_SECONDS``.
Versions only grow, so the copy keeps the highest version it has heard of.

**Throttle counts** (``throttle``). The per-key budget is the same fixed window as before (one
counter per key and window in Redis, ``TURNOUT_THROTTLE_SDK``), but a process adds its requests to
the shared counter in batches: at the latest on the first request after ``SDK_THROTTLE_SYNC_SECONDS``
(1 s) since its last sync, and always before it would let a request take the key over its limit (its
own count plus the shared counter as last read). Within one process the limit is therefore exact:
the request that crosses it is refused with the shared count in hand. Across processes a key can get
more than its limit by at most what the *other* processes served it in their last two sync
intervals, counts they had not yet added (by default: two seconds of the key's traffic in the other
processes). Once the shared counter is known to be over the limit, every later request of the window
is refused without a round trip, as the shared counter would refuse it.

Without Redis (embedded mode) neither table is used: the local-memory cache already answers there.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from common.conf import get_setting


def version_cache_key(environment: str) -> str:
    """The Redis key holding an environment's current ruleset version (beside this process's copy)."""
    return f"turnout:ruleset-version:{environment}"


class LocalVersions:
    """environment key -> (highest version heard of, monotonic time until which it is valid)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, tuple[int, float]] = {}

    def get(self, environment: str, now: float) -> int | None:
        """The current version if the process's copy is still valid (no I/O), else None."""
        found = self._known.get(environment)
        if found is None or found[1] <= now:
            return None
        return found[0]

    def peek(self, environment: str) -> int | None:
        """The highest version heard of, valid or not (a floor: the current one is never lower)."""
        found = self._known.get(environment)
        return None if found is None else found[0]

    def offer(self, environment: str, version: int, now: float) -> int:
        """Redis or an announcement says ``version`` is current at ``now``; the version now held."""
        valid_until = now + float(get_setting("SDK_VERSION_LOCAL_SECONDS"))
        with self._lock:
            found = self._known.get(environment)
            held = version if found is None else max(found[0], version)
            if len(self._known) > 10_000 and found is None:
                self._known.clear()
            self._known[environment] = (held, valid_until)
        return held

    def clear(self) -> None:
        with self._lock:
            self._known.clear()


ALLOW = -1  # LocalThrottle.count: allowed from the local count, no round trip
REFUSE = -2  # over the limit: the shared counter already says so


@dataclass(slots=True)
class _Count:
    window: int
    known: int = 0  # the shared counter as the last sync returned it
    pending: int = 0  # requests counted here since then, not yet added to it
    synced_at: float = -math.inf  # monotonic
    syncing: bool = False


class LocalThrottle:
    """Per-key request counts of the current fixed window, added to Redis in batches."""

    def __init__(self) -> None:
        self._counts: dict[str, _Count] = {}

    def _entry(self, ident: str, window: int) -> _Count:
        entry = self._counts.get(ident)
        if entry is None or entry.window != window:
            if len(self._counts) > 10_000:
                self._counts = {k: v for k, v in self._counts.items() if v.window == window}
            entry = self._counts[ident] = _Count(window)
        return entry

    def count(self, ident: str, num: int, window: int, now: float) -> int:
        """Count one request: ``ALLOW``, ``REFUSE``, or the number of requests (≥ 1) the caller must
        add to the shared counter now (then ``synced`` or ``failed``)."""
        entry = self._entry(ident, window)
        entry.pending += 1
        if entry.known > num:
            return REFUSE
        due = not entry.syncing and now - entry.synced_at >= float(get_setting("SDK_THROTTLE_SYNC_SECONDS"))
        if due or entry.known + entry.pending > num:
            send, entry.pending, entry.syncing = entry.pending, 0, True
            return send
        return ALLOW

    def synced(self, ident: str, window: int, total: int, now: float) -> None:
        """The shared counter read ``total`` after the caller's addition."""
        entry = self._entry(ident, window)
        entry.known = max(entry.known, total)
        entry.synced_at = now
        entry.syncing = False

    def failed(self, ident: str, window: int, send: int, now: float) -> None:
        """Redis did not take the addition: keep it for the next sync (not before the next interval)."""
        entry = self._entry(ident, window)
        entry.pending += send
        entry.synced_at = now
        entry.syncing = False

    def clear(self) -> None:
        self._counts = {}


versions = LocalVersions()
throttle = LocalThrottle()


def clear_local() -> None:
    versions.clear()
    throttle.clear()
