"""Time to rollback: from the first failing call on the parallel path to the SDK deciding legacy.

    .venv/bin/python bench/rollback/run.py                 # 10 runs
    .venv/bin/python bench/rollback/run.py --runs 20 --rate 400

The full stack on loopback: the production web layout (``gunicorn -c config/gunicorn.py``, 2 uvicorn
workers, ``TURNOUT_ENV=production``), a Celery worker and Celery beat (default settings: guardrail
checks every ``TURNOUT_GUARDRAIL_INTERVAL`` = 10 s, and at once when a metrics batch shows a breach),
PostgreSQL (``BENCH_DATABASE_URL``, default the local database ``turnout_bench_rollback``, recreated)
and Redis (``BENCH_REDIS_URL``, default ``redis://127.0.0.1:6379/11``, flushed).

Each run, through the service layer: a new flag with the standard plan, advanced to its 25% stage
(begun ``--stage-age`` seconds earlier: 600 by default; 0 makes the failures fall in the stage's first,
partial minute), a guardrail ``max_error_rate`` 5% over 300 s with at least 30 runs,
action ``rollback``. A real ``turnout.Turnout`` client with its default options (stream, 10 s flush
interval, adaptive flush) then drives traffic from one thread: ``--rate`` ``run()`` calls a second,
each beside four bare ``decide()`` calls (which ran nothing, and must not dilute the rate), over 500
subjects. For ``--warmup`` seconds the parallel path is healthy; then half of its calls raise (the
SDK falls back to legacy). The clock starts at the first failing call and stops when the SDK decides
legacy for the probes: subjects on the parallel path at 25% that leave it at 5% (the stage the
rollback returns to): the first moment at most 40% of them still decide parallel (at 5%, about 20%
do), asked every 10 ms of the client's current compiled ruleset (``client.ruleset``, what its
``decide()`` uses; asked directly so the watching is not counted as traffic). The local circuit breaker is off, so only the server's rollback can move them. A run that
takes over ``--timeout`` seconds counts as missed. Results: ``bench/rollback/results.json`` and a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
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


class Traffic(threading.Thread):
    """One host thread: run() with a parallel path that fails half the time once ``failing`` is set."""

    def __init__(self, client: Any, flag: str, rate: float) -> None:
        super().__init__(daemon=True, name="bench-traffic")
        self.client, self.flag, self.rate = client, flag, rate
        self.failing_since: float | None = None
        self.stop = threading.Event()
        self.calls = 0

    def parallel(self) -> int:
        if self.failing_since is not None and self.calls % 2:
            raise RuntimeError("the parallel path is failing")
        return 2

    def run(self) -> None:
        period = 1.0 / self.rate
        next_at = time.perf_counter()
        while not self.stop.is_set():
            subject = f"tenant-{self.calls % 500}"
            for _ in range(4):
                self.client.decide(self.flag, subject)
            self.client.run(self.flag, subject, legacy=lambda: 1, parallel=self.parallel)
            self.calls += 1
            next_at += period
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)


def prepare(n: int, *, min_sample: int, stage_age: float) -> str:
    """A flag at its 25% stage (begun ``stage_age`` seconds ago) with a rollback guardrail; returns its key."""
    from datetime import timedelta

    from common import clock
    from common.actors import Actor
    from rollout.plans.guardrails import guardrail_set
    from rollout.plans.stages import plan_set, plan_template, rollout_advance
    from rollout.services.flags import flag_create

    actor = Actor.system("bench")
    key = f"rollback-{n:02d}"
    flag_create(actor=actor, key=key, workload="bench")
    plan_set(actor=actor, flag=key, environment="production", version=None,
             stages=plan_template("standard", soak_seconds=3600))
    with clock.frozen(clock.now() - timedelta(seconds=stage_age)):
        for _ in range(5):  # off → internal → pilot → 1% → 5% → 25%
            rollout_advance(actor=actor, flag=key, environment="production")
    guardrail_set(actor=actor, flag=key, environment="production", version=None, max_error_rate=5,
                  min_sample_size=min_sample, window_seconds=300, action="rollback")
    return key


def stage_of(key: str) -> int:
    from rollout.models import FlagState

    return FlagState.objects.values_list("stage", flat=True).get(flag__key=key, environment__key="production")


def one_run(url: str, sdk_key: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    from turnout import Path as Route
    from turnout import Turnout

    flag = prepare(n, min_sample=args.min_sample, stage_age=args.stage_age)
    client = Turnout(url, sdk_key, breaker=None)
    traffic: Traffic | None = None
    try:
        if not client.wait_until_ready(30):
            raise SystemExit("the SDK did not load a ruleset in 30 s")
        deadline = time.monotonic() + 30
        while flag not in (client.ruleset.flag_keys if client.ruleset else ()) and time.monotonic() < deadline:
            time.sleep(0.05)
        subjects = [f"tenant-{i}" for i in range(500)]
        probes = [s for s in subjects if client.decide(flag, s).path is Route.PARALLEL]
        traffic = Traffic(client, flag, args.rate)
        traffic.start()
        time.sleep(args.warmup)
        start = time.perf_counter()
        traffic.failing_since = start
        seen: float | None = None
        while time.perf_counter() - start < args.timeout:
            # the client's current ruleset, asked directly: the watching is not counted as traffic
            ruleset = client.ruleset
            on_parallel = sum(ruleset.decide(flag, s, None).path is Route.PARALLEL for s in probes) if ruleset \
                else len(probes)
            if on_parallel <= 0.4 * len(probes):
                seen = time.perf_counter()
                break
            time.sleep(0.01)
        result = {"run": n, "flag": flag, "probes": len(probes),
                  "seconds": None if seen is None else round(seen - start, 3),
                  "stage_after": stage_of(flag), "runs_sent": traffic.calls}
        print(f"run {n + 1}/{args.runs}: "
              + ("missed" if seen is None else f"{seen - start:.2f} s") + f" (stage {result['stage_after']})",
              flush=True)
        return result
    finally:
        if traffic is not None:
            traffic.stop.set()
            traffic.join(5)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200.0, help="run() calls a second (each with 4 decide())")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of healthy traffic before failures")
    parser.add_argument("--timeout", type=float, default=90.0)
    parser.add_argument("--min-sample", type=int, default=30)
    parser.add_argument("--stage-age", type=float, default=600.0,
                        help="seconds the 25%% stage has run when the client starts (0: it begins with the run)")
    parser.add_argument("--port", type=int, default=8740)
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()

    database_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/turnout_bench_rollback")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
    var_dir = Path(tempfile.mkdtemp(prefix="turnout-bench-rollback-"))
    env = production_env(database_url=database_url, redis_url=redis_url, var_dir=var_dir)
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "TURNOUT_VAR_DIR", "SECRET_KEY",
                                           "ALLOWED_HOSTS", "TURNOUT_ENV", "SECURE_SSL_REDIRECT")})
    os.environ["LOG_LEVEL"] = "WARNING"
    import redis

    from bench import seed

    seed.setup_django(database_url.rsplit("/", 1)[1])
    redis.Redis.from_url(redis_url).flushdb()
    seed.seed(flags=1, members=10)
    key = seed.sdk_key()

    layout = Layout(env, var_dir, port=args.port, workers=2, celery=True).start()
    results: dict[str, Any] = {
        "machine": machine(), "args": {k: v for k, v in vars(args).items() if k != "out"},
        "layout": "gunicorn -c config/gunicorn.py (2 uvicorn workers); celery worker (threads, 4) and beat; "
                  "PostgreSQL; Redis; one turnout.Turnout client (default options, breaker off)",
        "command": " ".join(["python", "bench/rollback/run.py", *sys.argv[1:]]),
    }
    runs: list[dict[str, Any]] = []
    try:
        time.sleep(3)  # the worker and beat connect
        for n in range(args.runs):
            runs.append(one_run(layout.url, key, n, args))
    finally:
        layout.stop()
        seed.reset()

    seconds = [r["seconds"] for r in runs if r["seconds"] is not None]
    summary = {"runs": len(runs), "missed": len(runs) - len(seconds)}
    if seconds:
        summary.update(median_s=round(statistics.median(seconds), 2), worst_s=round(max(seconds), 2),
                       best_s=round(min(seconds), 2), mean_s=round(statistics.fmean(seconds), 2))
    results.update(runs=runs, summary=summary, machine_after=machine())
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(f"{summary['runs']} runs, {summary['missed']} missed; load average {results['machine']['loadavg']} → "
          f"{results['machine_after']['loadavg']}")
    print()
    print("| runs | median | worst | best | mean |")
    print("|---:|---:|---:|---:|---:|")
    if seconds:
        print(f"| {len(seconds)} | {summary['median_s']:.1f} s | {summary['worst_s']:.1f} s | "
              f"{summary['best_s']:.1f} s | {summary['mean_s']:.1f} s |")


if __name__ == "__main__":
    main()
