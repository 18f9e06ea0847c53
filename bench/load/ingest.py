"""Metrics ingestion: SDK metrics batches as fast as N clients can post them, then a count check.

Each client posts batches in the SDK's wire format (docs/sdk-protocol.md) with rows for 10 flags ×
2 paths and random call counts, and adds up what the server acknowledged with ``202``. At the end the
roll-up runs (as the beat would, including the open minute) and the stored per-minute rows are summed
and compared with what was acknowledged: any difference is a lost count.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

FLAGS_PER_BATCH = 10


def _batch(rng: random.Random, flags: list[str], histogram: int) -> tuple[dict[str, Any], Counter[str]]:
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    sent: Counter[str] = Counter()
    for flag in rng.sample(flags, min(FLAGS_PER_BATCH, len(flags))):
        for path in ("legacy", "parallel"):
            calls = rng.randint(1, 500)
            latency = [0] * histogram
            latency[rng.randrange(histogram)] = calls
            rows.append({"flag": flag, "path": path, "version": 1, "calls": calls, "errors": 0, "fallbacks": 0,
                         "latency_ms": latency, "comparisons": calls // 10, "mismatches": 0, "compare_skipped": 0,
                         "compare_errors": 0, "compare_timeouts": 0, "error_codes": {}})
            sent[flag] += calls
    start = now - timedelta(seconds=10)
    return {
        "sdk": {"name": "turnout-python", "version": "0.1.0", "code_version": "bench"},
        "window": {"start": start.isoformat().replace("+00:00", "Z"), "end": now.isoformat().replace("+00:00", "Z")},
        "flags": rows, "mismatch_samples": [], "breaker_events": [], "dropped": {},
    }, sent


async def _client(url: str, key: str, flags: list[str], deadline: float, seed: int, histogram: int,
                  acked: Counter[str], stats: dict[str, Any]) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as http:
        while time.monotonic() < deadline:
            body, sent = _batch(rng, flags, histogram)
            t0 = time.perf_counter()
            try:
                response = await http.post("/api/v1/sdk/metrics", content=json.dumps(body))
            except httpx.HTTPError as exc:
                stats["errors"].append(type(exc).__name__)
                continue
            stats["latencies"].append(time.perf_counter() - t0)
            if response.status_code == 202:
                acked.update(sent)
                stats["accepted"] += 1
            else:
                stats["errors"].append(str(response.status_code))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def ingest(*, url: str, key: str, seeded: Any, duration: int, clients: int) -> dict[str, Any]:
    import os

    from django.db.models import Sum
    from turnout.wire import LATENCY_BUCKETS_MS

    from rollout.models import MetricMinute
    from rollout.telemetry import ingest as metric_services

    histogram = len(LATENCY_BUCKETS_MS) + 1
    acked: Counter[str] = Counter()
    stats: dict[str, Any] = {"accepted": 0, "errors": [], "latencies": []}
    load_before = os.getloadavg()[0]
    started = time.monotonic()

    async def main() -> None:
        deadline = time.monotonic() + duration
        await asyncio.gather(*(_client(url, key, seeded.flags, deadline, i, histogram, acked, stats)
                               for i in range(clients)))

    asyncio.run(main())
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()[0]
    time.sleep(1)
    rollup = metric_services.metrics_rollup(include_open=True)
    stored = dict(MetricMinute.objects.filter(environment_id=seeded.environment_id)
                  .values_list("flag_key").annotate(n=Sum("calls")))
    calls_sent = sum(acked.values())
    calls_stored = sum(stored.get(flag, 0) for flag in acked)
    per_flag_diff = {flag: acked[flag] - stored.get(flag, 0) for flag in acked if acked[flag] != stored.get(flag, 0)}
    return {
        "clients": clients, "duration_s": elapsed, "reports": stats["accepted"],
        "reports_per_s": stats["accepted"] / elapsed, "rows_per_report": FLAGS_PER_BATCH * 2,
        "p50_ms": _pct(stats["latencies"], 50) * 1000, "p99_ms": _pct(stats["latencies"], 99) * 1000,
        "errors": len(stats["errors"]), "error_kinds": dict(Counter(stats["errors"])),
        "calls_sent": calls_sent, "calls_stored": calls_stored, "lost": calls_sent - calls_stored,
        "per_flag_difference": per_flag_diff, "rollup": str(rollup),
        "loadavg_before": load_before, "loadavg_after": load_after,
    }
