"""What ``Turnout.run()`` costs the caller over calling the chosen function directly.

Each sample times one call with ``time.perf_counter_ns()``; the same timing wraps the direct
call, so the timer's own cost cancels out. The workload function does nothing (it returns a
constant), so the figures are pure Turnout overhead. Scenarios:

- ``legacy``        decision legacy, no comparison
- ``parallel``      decision parallel (split), no comparison
- ``compare``       decision legacy + shadow of parallel scheduled on the bounded pool
                    (the caller pays the scheduling only; the shadow runs elsewhere)
- ``decide``        ``client.decide()`` against ``Ruleset.decide()`` (the hot path's overhead)

Usage: ``python bench/run_overhead/run_overhead.py [--calls N] [--append bench/README.md]``
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

from turnout import Turnout, __version__
from turnout.engine import compile_ruleset

DOC = {
    "schema": 1,
    "environment": "bench",
    "version": 1,
    "cohorts": {},
    "flags": {
        "legacy": {"enabled": True, "salt": "legacy", "percentage": 0.0},
        "parallel": {"enabled": True, "salt": "parallel", "percentage": 100.0},
        "compare": {"enabled": True, "salt": "compare", "percentage": 0.0, "compare_percentage": 100.0},
    },
}


def work() -> int:
    return 42


def sample(fn: Callable[[int], object], calls: int) -> list[int]:
    out = [0] * calls
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        fn(i)
        out[i] = clock() - t0
    return out


def pct(values: list[int], q: float) -> float:
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * len(s)))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--append", type=Path, help="append the results to this markdown file")
    args = parser.parse_args()

    # a big queue so that the compare scenario measures scheduling, not "pool full" skips
    client = Turnout.offline(DOC, shadow_queue=args.calls, shadow_workers=2, breaker=None)
    ruleset = compile_ruleset(DOC)
    keys = [f"user-{i}" for i in range(args.calls)]

    scenarios: dict[str, tuple[Callable[[int], object], Callable[[int], object]]] = {}
    for flag in ("legacy", "parallel", "compare"):
        scenarios[f"run() {flag}"] = (
            lambda i: work(),
            lambda i, flag=flag: client.run(flag, keys[i], legacy=work, parallel=work),  # type: ignore[misc]
        )
    scenarios["decide() vs Ruleset.decide()"] = (
        lambda i: ruleset.decide("parallel", keys[i]),
        lambda i: client.decide("parallel", keys[i]),
    )

    rows = []
    gc.disable()
    try:
        for name, (direct, wrapped) in scenarios.items():
            sample(direct, 5_000)  # warm up
            sample(wrapped, 5_000)
            base = sample(direct, args.calls)
            through = sample(wrapped, args.calls)
            if name == "run() compare":
                client._pool.close(timeout=30.0) if client._pool else None  # type: ignore[func-returns-value]
                client._pool = None
            rows.append(
                (
                    name,
                    statistics.median(base),
                    statistics.median(through),
                    pct(base, 0.99),
                    pct(through, 0.99),
                )
            )
    finally:
        gc.enable()
        client.close()

    header = (
        "| scenario | direct median | via Turnout median | overhead median "
        "| direct p99 | via Turnout p99 | overhead p99 |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {n} | {b / 1000:.2f} µs | {t / 1000:.2f} µs | **{(t - b) / 1000:.2f} µs** | "
        f"{b99 / 1000:.2f} µs | {t99 / 1000:.2f} µs | **{(t99 - b99) / 1000:.2f} µs** |"
        for n, b, t, b99, t99 in rows
    ]
    env = (
        f"{date.today().isoformat()} · turnout {__version__} · Python {platform.python_version()} "
        f"({platform.python_implementation()}) · {platform.machine()} · {args.calls} calls per scenario"
    )
    table = header + "\n".join(lines) + "\n"
    print(env)
    print(table)
    if args.append:
        with args.append.open("a", encoding="utf-8") as fh:
            fh.write(f"\n{env}\n\n{table}")


if __name__ == "__main__":
    sys.exit(main())
