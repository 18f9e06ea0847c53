"""A small bounded worker pool for shadow comparisons.

``concurrent.futures.ThreadPoolExecutor`` queues without bound, which is exactly what a shadow
must never do: when the parallel system slows down, an unbounded queue turns into unbounded
memory and ever-staler comparisons. Here the queue has a fixed size and ``submit`` answers at
once whether the job was taken; the caller counts the ones that were not.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

__all__ = ["ShadowPool"]

Job = Callable[[], None]


class ShadowPool:
    def __init__(self, *, workers: int, queue_size: int, name: str = "turnout-shadow") -> None:
        if workers < 1 or queue_size < 1:
            raise ValueError("shadow_workers and shadow_queue must be at least 1")
        self._workers = workers
        self._max = queue_size + workers  # waiting + running
        # SimpleQueue is unbounded but cheap (C, no Condition); the bound is ``_taken``,
        # counted under a lock, so no race can let it drift.
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._taken = 0
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._name = name

    def submit(self, job: Job) -> bool:
        """Queue ``job`` if there is room; never blocks. ``job`` must not raise."""
        with self._lock:
            if self._closed or self._taken >= self._max:
                return False
            self._taken += 1
            if len(self._threads) < min(self._workers, self._taken):
                t = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(t)
                t.start()
        self._queue.put(job)
        return True

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None or self._closed:
                return
            try:
                job()
            except Exception:  # pragma: no cover - jobs catch their own errors
                pass
            finally:
                with self._lock:
                    self._taken -= 1

    def close(self, timeout: float = 0.0) -> None:
        """Let queued jobs finish for up to ``timeout`` seconds, then stop taking work.

        Worker threads are daemons: a shadow stuck in the host's code cannot keep the
        process alive."""
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._closed = True
