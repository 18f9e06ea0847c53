"""The decide() benchmark workload, shared by every adapter (stdlib only).

Three scenarios, each over the same 100,000 distinct subjects, with 1,000 flags loaded:

- A: a plain 25% split over the subject key.
- B: the same 25% split, but only for subjects with ``country`` in a list of 10,
  ``plan == "pro"`` and ``age >= 18``; everyone else stays on legacy.
- C: a killed flag (off), so every subject gets legacy.

Subjects are ``user-<i>`` with attributes drawn from a fixed-seed RNG: ``country`` from 20
countries (10 of them in B's list), ``plan`` from free/pro, ``age`` from 10..70, so about
22% of subjects satisfy B's three conditions.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

N_KEYS = 100_000
N_FLAGS = 1_000
PERCENTAGE = 25.0
FLAG_A, FLAG_B, FLAG_C = "bench-a", "bench-b", "bench-c"
COUNTRIES_IN = ["DE", "FR", "IT", "ES", "NL", "BE", "AT", "PL", "SE", "DK"]
COUNTRIES_OUT = ["US", "CA", "MX", "BR", "AR", "JP", "KR", "IN", "AU", "ZA"]
FILLER = [f"filler-{i:04d}" for i in range(N_FLAGS - 3)]


def subjects(n: int = N_KEYS) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(20261126)
    countries = COUNTRIES_IN + COUNTRIES_OUT
    return [
        (
            f"user-{i}",
            {"country": rng.choice(countries), "plan": rng.choice(("free", "pro")), "age": rng.randint(10, 70)},
        )
        for i in range(n)
    ]


def _timer_overhead(pc: Callable[[], int] = time.perf_counter_ns) -> int:
    samples = []
    for _ in range(200_000):
        t0 = pc()
        t1 = pc()
        samples.append(t1 - t0)
    samples.sort()
    return samples[len(samples) // 2]


def measure(call: Callable[[str, Any], Any], contexts: Sequence[tuple[str, Any]], passes: int = 1) -> dict[str, float]:
    """Time every call on its own with perf_counter_ns, minus the median cost of an empty
    timer pair; return median and p99 in microseconds. One untimed warm-up pass first."""
    for key, ctx in contexts:
        call(key, ctx)
    overhead = _timer_overhead()
    pc = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    for _ in range(passes):
        for key, ctx in contexts:
            t0 = pc()
            call(key, ctx)
            t1 = pc()
            append(t1 - t0)
    samples.sort()
    n = len(samples)
    return {
        "median_us": max(samples[n // 2] - overhead, 0) / 1000,
        "p99_us": max(samples[min(n - 1, (n * 99) // 100)] - overhead, 0) / 1000,
        "calls": n,
        "timer_overhead_ns": overhead,
    }
