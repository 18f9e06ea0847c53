"""Propagation latency: from a committed change to the SDK deciding with it, streaming and polling.

    .venv/bin/python bench/propagation/run.py                      # 40 changes, 4 streaming + 4 polling SDKs
    .venv/bin/python bench/propagation/run.py --changes 100 --poll-interval 5

Starts the production web layout on loopback (``gunicorn -c config/gunicorn.py``, 2 uvicorn workers,
``TURNOUT_ENV=production``) on PostgreSQL (``BENCH_DATABASE_URL``, default the local database
``turnout_bench_propagation``, recreated) and Redis (``BENCH_REDIS_URL``, default
``redis://127.0.0.1:6379/10``, flushed). Seeds 100 flags and a 1,000-member cohort (``bench/seed.py``),
then runs real ``turnout.Turnout`` clients in this process against it:

- ``stream``: the default client (server-sent events; each event triggers a conditional fetch);
- ``poll``: ``stream=False`` with ``--poll-interval`` seconds (ETag polling, the fallback mode).

Each change is a real ``flag_state_update`` through the service layer in this process (validated,
audited, committed, then announced through Redis pub/sub), spaced by a random 0.5–1.5 × the poll
interval so that the polling clients' phase is random. The clock starts when the service returns
(the transaction has committed) and stops, per client, when the client's ruleset version reaches
the version that change produced — the moment its ``decide()`` answers from the new ruleset. A
watcher thread samples every client's version every 0.2 ms. The 8 clients and the watcher share this
process's GIL (a service runs one client per process), which can only add to the figures, mostly to
the tail. Results: ``bench/propagation/results.json`` and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "sdk"))

from bench.load.run import Layout, production_env  # noqa: E402
from bench.machine import machine  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Watcher(threading.Thread):
    """Stamps, for each client, the first moment its version is at least the target."""

    def __init__(self, clients: dict[str, Any]) -> None:
        super().__init__(daemon=True, name="propagation-watcher")
        self.clients = clients
        self.target: int | None = None
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def arm(self, target: int) -> None:
        with self.lock:
            self.target, self.seen = target, {}

    def run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                target = self.target
                if target is not None:
                    now = time.perf_counter()
                    for name, client in self.clients.items():
                        if name not in self.seen and (client.version or 0) >= target:
                            self.seen[name] = now
            time.sleep(0.0002)

    def wait_all(self, timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.seen) == len(self.clients):
                    return dict(self.seen)
            time.sleep(0.001)
        with self.lock:
            return dict(self.seen)


def change(flag: str, i: int) -> tuple[float, int]:
    """One real change through the service layer: committed, audited and announced.
    Returns the moment the service returned (committed) and the version the change produced."""
    from common.actors import Actor
    from rollout.models import Environment
    from rollout.services.flags import flag_state_update

    state = flag_state_update(actor=Actor.system("bench"), flag=flag, environment="production", version=None,
                              percentage_value=(10 + i) % 100)
    committed = time.perf_counter()
    return committed, Environment.objects.values_list("ruleset_version", flat=True).get(pk=state.environment_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=40)
    parser.add_argument("--stream-clients", type=int, default=4)
    parser.add_argument("--poll-clients", type=int, default=4)
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds, for the polling clients")
    parser.add_argument("--port", type=int, default=8730)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()
    rng = random.Random(args.seed)

    database_url = os.environ.get("BENCH_DATABASE_URL",
                                  "postgres://postgres@127.0.0.1:5432/turnout_bench_propagation")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
    var_dir = Path(tempfile.mkdtemp(prefix="turnout-bench-propagation-"))
    env = production_env(database_url=database_url, redis_url=redis_url, var_dir=var_dir)
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "TURNOUT_VAR_DIR", "SECRET_KEY",
                                           "ALLOWED_HOSTS", "TURNOUT_ENV", "SECURE_SSL_REDIRECT")})
    os.environ["LOG_LEVEL"] = "WARNING"
    import redis

    from bench import seed

    seed.setup_django(database_url.rsplit("/", 1)[1])
    redis.Redis.from_url(redis_url).flushdb()
    seeded = seed.seed(flags=100, members=1000)
    key = seed.sdk_key()
    flag = seeded.flags[0]

    from turnout import Turnout

    layout = Layout(env, var_dir, port=args.port, workers=2, celery=False).start()
    clients: dict[str, Any] = {}
    results: dict[str, Any] = {"machine": machine(), "args": {k: v for k, v in vars(args).items() if k != "out"},
                               "layout": "gunicorn -c config/gunicorn.py (2 uvicorn workers); PostgreSQL; Redis"}
    try:
        for n in range(args.stream_clients):
            clients[f"stream-{n}"] = Turnout(layout.url, key, send_metrics=False, breaker=None)
        for n in range(args.poll_clients):
            clients[f"poll-{n}"] = Turnout(layout.url, key, stream=False, poll_interval=args.poll_interval,
                                           send_metrics=False, breaker=None)
        for name, client in clients.items():
            if not client.wait_until_ready(30):
                raise SystemExit(f"{name} did not load a ruleset in 30 s")
        time.sleep(2)  # let every stream connect before the first change
        watcher = Watcher(clients)
        watcher.start()
        latencies: dict[str, list[float]] = {"stream": [], "poll": []}
        missed = 0
        for i in range(args.changes):
            time.sleep(args.poll_interval * rng.uniform(0.5, 1.5))
            with watcher.lock:
                watcher.target = None
            committed, target = change(flag, i)
            watcher.arm(target)
            seen = watcher.wait_all(timeout=args.poll_interval * 3 + 10)
            for name in clients:
                if name in seen:
                    latencies[name.split("-")[0]].append((seen[name] - committed) * 1000)
                else:
                    missed += 1
            print(f"change {i + 1}/{args.changes}: version {target}, "
                  + ", ".join(f"{n} {(seen[n] - committed) * 1000:.0f} ms" for n in sorted(seen)), flush=True)
        watcher.stop.set()
    finally:
        for client in clients.values():
            client.close()
        layout.stop()
        seed.reset()

    summary = {}
    for mode, values in latencies.items():
        if values:
            summary[mode] = {"samples": len(values), "p50_ms": round(percentile(values, 0.50), 1),
                             "p95_ms": round(percentile(values, 0.95), 1), "max_ms": round(max(values), 1),
                             "mean_ms": round(statistics.fmean(values), 1)}
    results.update(summary=summary, missed=missed, machine_after=machine())
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(f"{args.changes} changes; {args.stream_clients} streaming and {args.poll_clients} polling SDK clients "
          f"(poll interval {args.poll_interval:g} s); load average {results['machine']['loadavg']} → "
          f"{results['machine_after']['loadavg']}; {missed} deliveries missed")
    print()
    print("| mode | deliveries | p50 | p95 | max |")
    print("|---|---:|---:|---:|---:|")
    for mode, s in summary.items():
        label = "stream (SSE)" if mode == "stream" else f"poll every {args.poll_interval:g} s (ETag)"
        print(f"| {label} | {s['samples']} | {s['p50_ms']:.0f} ms | {s['p95_ms']:.0f} ms | {s['max_ms']:.0f} ms |")


if __name__ == "__main__":
    main()
