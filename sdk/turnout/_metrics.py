"""In-memory, bounded metrics: counted on the caller's thread, shipped by a background one.

Decision counts (``calls``) are the hot path. Each ruleset version has an "epoch", and within it
each thread counts into its own shard: a plain dict ``flag -> [legacy count, parallel count]``
that only that thread writes, so the increment needs no lock and cannot be lost to a race (the
read-modify-write of ``+=`` is never interleaved with another writer of the same list). A flush
sums the shards; the shards of threads that have ended are folded into the epoch's total and
dropped, so a pool that churns threads does not grow the recorder. Flushing never resets the
counts: it ships the difference from the last flush, so a flush cannot lose increments made
during it. Everything recorded by ``run()`` (latencies, errors, comparisons, samples) takes a
short lock.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .migration import MigrationRecorder
from .wire import (
    _BOUNDS_NS,
    LATENCY_BUCKETS_MS,
    SDK_NAME,
    BreakerEvent,
    FlagRow,
    MetricsBatch,
    MismatchSample,
)

__all__ = ["Epoch", "Recorder", "RowKey", "Sender"]

#: (flag, served path is parallel, ruleset version)
RowKey = tuple[str, bool, "int | None"]

# indexes of the per-row counters recorded by run()
ERRORS, FALLBACKS, COMPARISONS, MISMATCHES, SKIPPED, COMPARE_ERRORS, COMPARE_TIMEOUTS, RUNS = range(8)
_NCOUNTS = 8
_NBUCKETS = len(LATENCY_BUCKETS_MS) + 1
MAX_ROWS = 10_000
MAX_EVENTS = 100
MAX_NAME = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Row:
    __slots__ = ("codes", "counts", "latency")

    def __init__(self) -> None:
        self.counts = [0] * _NCOUNTS
        self.latency = [0] * _NBUCKETS
        self.codes: dict[str, int] = {}


class Epoch:
    """The decision counts of one ruleset version: one shard per thread, summed when flushed."""

    __slots__ = ("ended", "local", "shards", "version")

    def __init__(self, version: int | None) -> None:
        self.version = version
        #: ``local.counts`` is the calling thread's shard (AttributeError until it first counts)
        self.local = threading.local()
        self.shards: list[tuple[threading.Thread, dict[str, list[int]]]] = []
        #: the counts of threads that have ended (nothing writes them any more)
        self.ended: dict[str, list[int]] = {}

    def shard(self, lock: threading.Lock) -> dict[str, list[int]]:
        """The calling thread's shard, created on its first decision in this epoch."""
        counts: dict[str, list[int]] = {}
        with lock:
            self.shards.append((threading.current_thread(), counts))
        self.local.counts = counts
        return counts

    def totals(self, lock: threading.Lock) -> dict[str, list[int]]:
        """Cumulative ``flag -> [legacy, parallel]`` over every thread that counted in this epoch."""
        with lock:
            live = []
            for thread, counts in self.shards:
                if thread.is_alive():
                    live.append((thread, counts))
                else:  # it has ended: its last increment is in, nothing writes these again
                    for flag, pair in counts.items():
                        total = self.ended.setdefault(flag, [0, 0])
                        total[0] += pair[0]
                        total[1] += pair[1]
            self.shards = live
            out = {flag: list(pair) for flag, pair in self.ended.items()}
        for _, counts in live:
            for flag, pair in counts.copy().items():  # dict.copy() is atomic under the GIL
                total = out.setdefault(flag, [0, 0])
                total[0] += pair[0]
                total[1] += pair[1]
        return out


class Recorder:
    def __init__(self, *, max_samples: int = 20, max_sample_bytes: int = 2048) -> None:
        self.max_samples = max_samples
        self.max_sample_bytes = max_sample_bytes
        self._init()

    def _init(self) -> None:
        self.migration = MigrationRecorder(max_samples=self.max_samples, max_sample_bytes=self.max_sample_bytes)
        self._lock = threading.Lock()
        #: the current epoch; decide() counts into ``current.local.counts`` (its thread's shard)
        self.current = Epoch(None)
        self._epochs: list[Epoch] = [self.current]
        self._shipped: dict[RowKey, int] = {}
        self._rows: dict[RowKey, _Row] = {}
        self._samples: list[MismatchSample] = []
        self._events: list[BreakerEvent] = []
        self._dropped: dict[str, int] = {}
        self._start = time.time()
        #: set when a run of the parallel path raised: the shipper flushes soon (bounded) instead
        #: of at the end of its interval, so guardrails see failing traffic within seconds
        self.urgent = threading.Event()

    def after_fork_in_child(self) -> None:
        # The parent reports what it counted; the child starts from zero.
        self._init()

    def epoch(self, version: int | None) -> Epoch:
        """The epoch for decisions of ``version`` (a new one when the version changes)."""
        with self._lock:
            if self._epochs[-1].version != version:
                self.current = Epoch(version)
                self._epochs.append(self.current)
                del self._epochs[:-8]  # a flush normally ships old epochs long before this
            return self.current

    def shard(self, epoch: Epoch) -> dict[str, list[int]]:
        """The calling thread's counts in ``epoch`` (the slow path of decide(): first call only)."""
        return epoch.shard(self._lock)

    # -- recorded by run() -------------------------------------------------------------

    def _row(self, key: RowKey) -> _Row | None:
        row = self._rows.get(key)
        if row is None:
            if len(self._rows) >= MAX_ROWS:
                self._dropped["rows"] = self._dropped.get("rows", 0) + 1
                return None
            row = self._rows[key] = _Row()
        return row

    def count(self, key: RowKey, index: int, n: int = 1) -> None:
        with self._lock:
            row = self._row(key)
            if row is not None:
                row.counts[index] += n

    def latency(self, key: RowKey, elapsed_ns: int, *, error: bool = False) -> None:
        b = bisect_left(_BOUNDS_NS, elapsed_ns)  # == latency_bucket(), inlined: run()'s path
        with self._lock:
            row = self._rows.get(key) or self._row(key)
            if row is not None:
                row.latency[b] += 1
                row.counts[RUNS] += 1
                if error:
                    row.counts[ERRORS] += 1
        if error and key[1] and not self.urgent.is_set():
            self.urgent.set()

    def outcome(self, key: RowKey, *, error: bool) -> None:
        """A run whose outcome the host reported without a timing: counted, not timed."""
        with self._lock:
            row = self._row(key)
            if row is not None:
                row.counts[RUNS] += 1
                if error:
                    row.counts[ERRORS] += 1
        if error and key[1] and not self.urgent.is_set():
            self.urgent.set()

    def error_code(self, key: RowKey, code: str) -> None:
        with self._lock:
            row = self._row(key)
            if row is not None:
                row.codes[code] = row.codes.get(code, 0) + 1

    def wants_sample(self) -> bool:
        return len(self._samples) < self.max_samples

    def sample(
        self,
        *,
        flag: str,
        version: int | None,
        key_hash: str,
        served: str,
        legacy: Any,
        parallel: Any,
    ) -> None:
        truncated = False
        sides = []
        for value in (legacy, parallel):
            text = json.dumps(value, default=repr, ensure_ascii=False, sort_keys=True)
            if len(text) > self.max_sample_bytes:
                truncated = True
                sides.append(text[: self.max_sample_bytes])
            else:
                sides.append(json.loads(text))  # a detached, JSON-safe copy
        s: MismatchSample = {
            "flag": flag,
            "version": version,
            "key_hash": key_hash,
            "served": served,
            "legacy": sides[0],
            "parallel": sides[1],
            "truncated": truncated,
            "at": _iso(time.time()),
        }
        with self._lock:
            if len(self._samples) < self.max_samples:
                self._samples.append(s)
            else:
                self._dropped["samples"] = self._dropped.get("samples", 0) + 1

    def pending_samples(self) -> list[MismatchSample]:
        """The mismatch samples the next batch will carry (a copy)."""
        with self._lock:
            return list(self._samples)

    def drop(self, what: str, n: int = 1) -> None:
        with self._lock:
            self._dropped[what] = self._dropped.get(what, 0) + n

    def breaker_event(self, flag: str, state: str, reason: str) -> None:
        with self._lock:
            if len(self._events) < MAX_EVENTS:
                self._events.append(
                    {"flag": flag, "state": state, "reason": reason, "at": _iso(time.time())}
                )

    # -- shipping ------------------------------------------------------------------------

    def drain(self, *, sdk_version: str, code_version: str | None) -> MetricsBatch | None:
        """Take everything counted since the last drain as one batch (None when empty)."""
        now = time.time()
        with self._lock:
            rows, self._rows = self._rows, {}
            samples, self._samples = self._samples, []
            events, self._events = self._events, []
            dropped, self._dropped = self._dropped, {}
            start, self._start = self._start, now
        with self._lock:
            epochs = list(self._epochs)
        deltas: dict[RowKey, int] = {}
        for epoch in epochs:
            version = epoch.version
            moved = False
            totals = epoch.totals(self._lock)
            for flag, pair in totals.items():
                for parallel in (False, True):
                    key: RowKey = (flag, parallel, version)
                    total = pair[parallel]
                    delta = total - self._shipped.get(key, 0)
                    if delta:
                        deltas[key] = delta
                        self._shipped[key] = total
                        moved = True
            if not moved and epoch is not self.current:
                # a past version, idle for a whole window: forget it
                with self._lock:
                    self._epochs = [e for e in self._epochs if e is not epoch]
                for flag in totals:
                    self._shipped.pop((flag, False, version), None)
                    self._shipped.pop((flag, True, version), None)
        out: list[FlagRow] = []
        for key in sorted(set(rows) | set(deltas), key=_sort_key):
            if not _sendable(key[0]):  # a name the server refuses would make it refuse the batch
                dropped["flags"] = dropped.get("flags", 0) + 1
                continue
            row = rows.get(key) or _Row()
            c = row.counts
            flag, parallel, version = key
            out.append(
                {
                    "flag": flag,
                    "path": "parallel" if parallel else "legacy",
                    "version": version,
                    "calls": deltas.get(key, 0),
                    "runs": c[RUNS],
                    "errors": c[ERRORS],
                    "fallbacks": c[FALLBACKS],
                    "latency_ms": list(row.latency),
                    "comparisons": c[COMPARISONS],
                    "mismatches": c[MISMATCHES],
                    "compare_skipped": c[SKIPPED],
                    "compare_errors": c[COMPARE_ERRORS],
                    "compare_timeouts": c[COMPARE_TIMEOUTS],
                    "error_codes": dict(row.codes),
                }
            )
        migrations, consistency, divergences, migration_dropped = self.migration.drain()
        for what, n in migration_dropped.items():
            dropped[what] = dropped.get(what, 0) + n
        if not out and not samples and not events and not dropped and not migrations and not divergences \
                and not consistency:
            self._start = start  # nothing happened: keep the window open
            return None
        batch: MetricsBatch = {
            "sdk": {"name": SDK_NAME, "version": sdk_version, "code_version": code_version},
            "batch_id": uuid.uuid4().hex,
            "window": {"start": _iso(start), "end": _iso(now)},
            "flags": out,
            "mismatch_samples": samples,
            "breaker_events": events,
            "dropped": dropped,
        }
        if migrations or consistency or divergences:  # only when there are: older servers see the same batch
            batch["migrations"] = migrations
            batch["consistency_samples"] = consistency
            batch["divergences"] = divergences
        return batch


def _sendable(flag: str) -> bool:
    """A flag name the server accepts in a batch: 1..100 characters, no control characters."""
    return 0 < len(flag) <= MAX_NAME and not _CONTROL.search(flag)


def _sort_key(key: RowKey) -> tuple[str, bool, int]:
    return key[0], key[1], -1 if key[2] is None else key[2]


class Sender:
    """Bounded retry of metrics batches: at most ``max_pending`` batches wait, each is tried
    at most ``1 + retries`` times (one try per flush), then dropped."""

    def __init__(self, *, retries: int = 3, max_pending: int = 10) -> None:
        self.retries = retries
        self.pending: deque[list[Any]] = deque()
        self.max_pending = max_pending
        self.dropped_batches = 0

    def add(self, batch: MetricsBatch) -> None:
        self.pending.append([batch, 0])
        while len(self.pending) > self.max_pending:
            self.pending.popleft()
            self.dropped_batches += 1

    def send(self, post: Callable[[bytes], None], *, give_up: bool = False) -> Exception | None:
        """Send pending batches oldest first; stop at the first failure and return it.

        ``post`` raises on failure; a ``ValueError`` means the server refused the batch for
        good (a 4xx): it is dropped at once rather than retried.
        """
        while self.pending:
            item = self.pending[0]
            body = json.dumps(item[0], default=repr, separators=(",", ":")).encode("utf-8")
            try:
                post(body)
            except Exception as exc:
                item[1] += 1
                if isinstance(exc, ValueError) or item[1] > self.retries or give_up:
                    self.pending.popleft()
                    self.dropped_batches += 1
                return exc
            self.pending.popleft()
        return None
