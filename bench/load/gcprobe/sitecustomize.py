"""Garbage-collector pauses of a benchmark's web process (``bench/load/run.py --only sse``).

Put on the web process's ``PYTHONPATH`` with ``TURNOUT_BENCH_GC_LOG`` set: every collection that
takes 10 ms or more, or is a full one (generation 2), is appended to ``$TURNOUT_BENCH_GC_LOG.<pid>``
as ``<monotonic start> <generation> <milliseconds>``. The clock is ``time.monotonic()``, the one the
SSE client processes stamp events with, so a pause can be set against a change's timeline.
"""

import gc
import os
import time

_path = os.environ.get("TURNOUT_BENCH_GC_LOG")
if _path:
    _started = [0.0]
    _logs: dict = {}

    def _record(phase: str, info: dict) -> None:
        if phase == "start":
            _started[0] = time.monotonic()
            return
        took = time.monotonic() - _started[0]
        if took >= 0.01 or info["generation"] == 2:
            pid = os.getpid()  # (a gunicorn worker is forked from its master: a file of its own)
            log = _logs.get(pid)
            if log is None:
                log = _logs[pid] = open(f"{_path}.{pid}", "a", buffering=1)  # noqa: SIM115 - kept open
            log.write(f"{_started[0]:.4f} {info['generation']} {took * 1000:.1f}\n")

    gc.callbacks.append(_record)
