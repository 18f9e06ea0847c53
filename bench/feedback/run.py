"""What ``client.feedback()`` costs its caller, as a ratio to ``client.decide()`` measured in the same run.

``feedback()`` decides the subject's path (without counting it), runs the host's redaction, scrubs and caps
the comment and attributes, hashes the key and appends the entry under a short lock; sending happens on the
``turnout-feedback`` thread. Measured on an online client whose server never answers (a listening socket
that accepts nothing), so any wait on the network would show; the queue is emptied between rounds so it
never fills. Each figure is the fastest of ``--rounds`` rounds of ``--calls`` calls (the least disturbed
by other processes on a shared machine), the median next to it.

Usage: ``python bench/feedback/run.py [--calls 500] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from turnout import Turnout

from bench.machine import machine

DOC = {"schema": 1, "environment": "bench", "version": 1,
       "flags": {"checkout": {"enabled": True, "percentage": 50.0, "bucket_by": "tenant_id"}}}
COMMENT = "The new checkout is quicker; the receipt went to ann@example.com, call +44 20 7946 0958 if needed."
ATTRIBUTES = {"tenant_id": "tenant-7", "plan": "pro", "country": "DE", "email": "ann@example.com"}


def per_call_us(fn, calls: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter_ns()
    for i in range(calls):
        fn(i)
    return (time.perf_counter_ns() - start) / calls / 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)  # accepts the connection in the kernel, never answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    client = Turnout(url, "sdk_bench", bootstrap=DOC, start_wait=0, stream=False, send_metrics=False, timeout=30)
    decide_us, feedback_us = [], []
    for _ in range(args.rounds):
        decide_us.append(per_call_us(lambda i: client.decide("checkout", f"user-{i}", ATTRIBUTES), args.calls))
        feedback_us.append(per_call_us(lambda i: client.feedback("checkout", f"user-{i}", score=4, comment=COMMENT,
                                                                 attributes=ATTRIBUTES), args.calls))
        with client._feedback._lock:  # the server never answers: keep the bounded queue from filling
            client._feedback._pending.clear()
    d, f = min(decide_us), min(feedback_us)
    print(json.dumps({"decide_us": round(d, 2), "feedback_us": round(f, 2), "ratio": round(f / d, 1),
                      "median_decide_us": round(statistics.median(decide_us), 2),
                      "median_feedback_us": round(statistics.median(feedback_us), 2),
                      "calls": args.calls, "rounds": args.rounds, "machine": machine()}, indent=2))
    client._feedback.transport = None  # nothing to send at close: the server never answers
    client.close()


if __name__ == "__main__":
    main()
