"""Overhead of ``client.migration(flag).read()/write()`` over calling the origin(s) directly.

    python bench/migration/bench_migration.py [--calls 20000] [--append bench/README.md]

Origins return a constant, so the figures are Turnout's own cost: the stage decision (the engine's
``decide_stage`` with its SHA-256 bucketing), timing and counting per origin, and — where the stage runs a
second origin — handing it to the bounded pool and waiting for it (within the budget), plus the
consistency check for reads. "direct" calls what the stage runs, in the same thread, with ``==`` for reads
that compare. Per-call ``time.perf_counter_ns()`` on both sides, GC disabled while sampling; the ratio is
via / direct medians in the same run.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "sdk"), str(ROOT)]

from turnout import Stage, Turnout  # noqa: E402

from bench.machine import machine  # noqa: E402  (after the path above)

DOC = {"schema": 1, "environment": "bench", "version": 1,
       "flags": {f"m-{s.value}": {"enabled": True, "percentage": 0.0, "migration": {"stage": s.value}}
                 for s in Stage}}


def legacy() -> int:
    return 1


def parallel() -> int:
    return 1


def _times(fn: Callable[[], object], n: int) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--append", type=Path, default=None)
    args = parser.parse_args()
    client = Turnout.offline(DOC, breaker=None, shadow_queue=256)
    scenarios: list[tuple[str, Callable[[], object], Callable[[], object]]] = []
    for stage, op in [(Stage.OFF, "read"), (Stage.OFF, "write"), (Stage.DUAL_WRITE, "write"),
                      (Stage.SHADOW, "read"), (Stage.LIVE, "read"), (Stage.RAMPDOWN, "write"),
                      (Stage.COMPLETE, "read")]:
        m = client.migration(f"m-{stage.value}", budget=1.0)
        origins = stage.reads if op == "read" else stage.writes
        if op == "read":
            def via(m=m) -> object:
                return m.read("tenant-7", legacy=legacy, parallel=parallel)
        else:
            def via(m=m) -> object:
                return m.write("tenant-7", legacy=legacy, parallel=parallel)
        if len(origins) == 1:
            direct: Callable[[], object] = legacy if origins[0].value == "legacy" else parallel
        elif op == "read":
            def direct() -> object:
                return legacy() == parallel()
        else:
            def direct() -> object:
                legacy()
                return parallel()
        scenarios.append((f"{op}() {stage.value} ({' + '.join(o.value for o in origins)})", direct, via))
    rows = []
    for name, direct, via in scenarios:
        for fn in (direct, via):  # warm up
            _times(fn, 1000)
        client._recorder.drain(sdk_version="bench", code_version=None)
        gc.disable()
        try:
            d, v = _times(direct, args.calls), _times(via, args.calls)
        finally:
            gc.enable()
        dm, vm = statistics.median(d), statistics.median(v)
        dp, vp = statistics.quantiles(d, n=100)[98], statistics.quantiles(v, n=100)[98]
        rows.append(f"| {name} | {dm / 1000:.2f} µs | {vm / 1000:.2f} µs | **{(vm - dm) / 1000:.2f} µs** | "
                    f"{dp / 1000:.2f} µs | {vp / 1000:.2f} µs | {vm / dm:.0f}× |")
    client.close()
    info = machine()
    head = (f"{info['at'][:10]} · Python {platform.python_version()} · {info['cpu']} × {info['nproc']} · "
            f"load average {' '.join(map(str, info['loadavg']))} · {args.calls} calls per scenario · "
            f"`python bench/migration/bench_migration.py --calls {args.calls}`")
    table = "\n".join([head, "", "| scenario | direct median | via migration() median | overhead median | "
                       "direct p99 | via p99 | ratio of medians |", "|---|---:|---:|---:|---:|---:|---:|", *rows])
    print(table)
    if args.append:
        with args.append.open("a", encoding="utf-8") as f:
            f.write("\n" + table + "\n")


if __name__ == "__main__":
    main()
