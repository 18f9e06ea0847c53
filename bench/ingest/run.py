"""Metrics ingestion at scale: requests/s against a bare Django POST view, and 5,000 SDKs flushing every 10 s.

    bench/ingest/run.sh                                   # ratio (3 rounds × 10 s), then 180 s at 500 batches/s
    bench/ingest/run.sh --before-ref main                 # also the code of a git ref, side by side
    bench/ingest/run.sh --rate 500 --minutes 3 --rounds 3 --duration 10

Servers (on loopback, all at once, each ``gunicorn -c config/gunicorn.py`` with the same number of
uvicorn workers, 2 by default):
- the **baseline**: ``bench/edge/bare`` (``startproject``'s middleware, a POST view that parses the JSON
  body and answers a small object), sent the same metrics batch as Turnout;
- **Turnout** in production settings (PostgreSQL, Redis, JSON request logs) with its Celery worker
  (threads, 4) and beat; with ``--before-ref`` a second Turnout from that git ref (``git archive``) on
  the same database and Redis, so before and after are measured in the same rounds.

1. **Ratio**: ``wrk`` (2 threads, 20 connections) posts one realistic batch (10 flags × 2 paths, full
   histograms, no ``batch_id``: every post counts) for ``--duration`` s to each server in turn, every
   round; each ratio divides Turnout's requests/s by the bare POST's **of the same round**. After the
   rounds the counts of every ``202`` are compared with what the roll-up stored.
2. **Sustained**: ``--rate`` batches/s (default 500: 5,000 SDK instances flushing every 10 s) from an
   asyncio client on ``--connections`` keep-alive connections for ``--minutes``, each batch with its own
   ``batch_id`` and one of 64 instance profiles (10 of 100 flags × 2 paths, random counts). Every 5 s:
   accepted/s, the stream's backlog (batches accepted, not yet rolled up) and the roll-up lag (age of
   the oldest waiting batch). At the end: seconds until the backlog is empty, then calls acknowledged
   (``202``) = calls stored (``MetricMinute``), per flag.

Output: Markdown tables on stdout and ``bench/ingest/results.json`` (machine, load average, command).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from bench.edge.run import Bare, ensure_wrk  # noqa: E402
from bench.load.run import _tree_cpu_seconds, production_env  # noqa: E402
from bench.machine import machine  # noqa: E402

HISTOGRAM = 16
FLAGS_PER_BATCH = 10
STREAM = "turnout:metrics:stream"


# -- batches --------------------------------------------------------------------------------------


def make_batch(rng: random.Random, flags: list[str], *, batch_id: str | None) -> tuple[dict[str, Any], Counter[str]]:
    """One SDK instance's 10 s window: 10 flags × 2 paths, full rows as the Python SDK sends them."""
    end = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    sent: Counter[str] = Counter()
    for flag in rng.sample(flags, min(FLAGS_PER_BATCH, len(flags))):
        for path in ("legacy", "parallel"):
            calls = rng.randint(1, 500)
            latency = [0] * HISTOGRAM
            for _ in range(3):
                latency[rng.randrange(2, 9)] += calls // 3
            latency[4] += calls - sum(latency)
            rows.append({"flag": flag, "path": path, "version": 41, "calls": calls, "runs": calls,
                         "errors": 0, "fallbacks": 0, "latency_ms": latency, "comparisons": calls // 10,
                         "mismatches": 0, "compare_skipped": 0, "compare_errors": 0, "compare_timeouts": 0,
                         "error_codes": {}})
            sent[flag] += calls
    batch: dict[str, Any] = {
        "sdk": {"name": "turnout-python", "version": "0.1.0", "code_version": "bench"},
        "window": {"start": (end - timedelta(seconds=10)).isoformat().replace("+00:00", "Z"),
                   "end": end.isoformat().replace("+00:00", "Z")},
        "flags": rows, "mismatch_samples": [], "breaker_events": [], "dropped": {},
    }
    if batch_id is not None:
        batch["batch_id"] = batch_id
    return batch, sent


# -- processes ------------------------------------------------------------------------------------


class Turnout:
    """gunicorn (uvicorn workers) + a Celery worker + beat, from ``code`` (a checkout of the project)."""

    def __init__(self, code: Path, env: dict[str, str], var_dir: Path, *, port: int, workers: int, name: str) -> None:
        self.code, self.port, self.var_dir, self.name = code, port, var_dir, name
        self.env = {**env, "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": str(workers), "PYTHONPATH": str(code),
                    "PROMETHEUS_MULTIPROC_DIR": str(var_dir / f"prometheus-{port}")}
        (var_dir / f"prometheus-{port}").mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.web_pid = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, what: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.var_dir / f"{self.name}-{what}.log", "ab")  # noqa: SIM115 - kept open for the process
        proc = subprocess.Popen(cmd, cwd=self.code, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self) -> Turnout:
        python = sys.executable
        web = self._spawn("web", [python, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.asgi:application"],
                          self.env)
        self.web_pid = web.pid
        celery_env = {k: v for k, v in self.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        self._spawn("worker", [python, "-m", "celery", "-A", "config", "worker", "--pool=threads", "--concurrency=4",
                               "--loglevel=INFO", "-n", f"bench-{self.name}-{os.getpid()}@%h"], celery_env)
        self._spawn("beat", [python, "-m", "celery", "-A", "config", "beat", "--loglevel=INFO",
                             f"--schedule={self.var_dir / f'{self.name}-celerybeat-schedule'}"], celery_env)
        import urllib.request

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if web.poll() is not None:
                raise RuntimeError(f"{self.name} web exited with {web.returncode}; see {self.var_dir}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"{self.name} did not become ready in 90 s")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def rollup(self) -> str:
        """Everything still waiting, rolled up with this code's own roll-up (as beat would)."""
        script = ("import django; django.setup(); from rollout.telemetry.ingest import metrics_rollup; "
                  "print(metrics_rollup(include_open=True))")
        env = {**self.env, "DJANGO_SETTINGS_MODULE": "config.settings", "LOG_LEVEL": "WARNING"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        out = subprocess.run([sys.executable, "-c", script], cwd=self.code, env=env, capture_output=True, text=True,
                             check=True, timeout=600)
        return out.stdout.strip()


    def drain(self) -> dict[str, Any]:
        """One roll-up run over everything waiting, timed inside the process (no Django start-up)."""
        script = ("import django, json, time; django.setup(); from rollout.telemetry.ingest import metrics_drain; "
                  "t = time.perf_counter(); c = time.process_time(); r = metrics_drain(budget_seconds=3600); "
                  "print(json.dumps({'seconds': time.perf_counter() - t, 'cpu_seconds': time.process_time() - c, "
                  "'batches': r.batches, 'rows': r.rows}))")
        env = {**self.env, "DJANGO_SETTINGS_MODULE": "config.settings", "LOG_LEVEL": "WARNING"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        out = subprocess.run([sys.executable, "-c", script], cwd=self.code, env=env, capture_output=True, text=True,
                             check=True, timeout=1800)
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result


def capacity(server: Turnout, redis_url: str, flags: list[str], environment_id: int, batches: int) -> dict[str, Any]:
    """How fast the roll-up takes a backlog: ``batches`` realistic batches appended straight to the stream
    (no web process running), then one roll-up run, timed; then sent = stored."""
    import redis

    from rollout.models import MetricMinute

    MetricMinute.objects.filter(environment_id=environment_id).delete()
    client = redis.Redis.from_url(redis_url)
    rng = random.Random(11)
    profiles = []
    for _ in range(64):
        batch, sent = make_batch(rng, flags, batch_id="@BATCH_ID@")
        profiles.append((json.dumps(batch, separators=(",", ":")).encode(), sent))
    total: Counter[str] = Counter()
    pipe = client.pipeline(transaction=False)
    for i in range(batches):
        template, sent = profiles[i % len(profiles)]
        pipe.xadd(STREAM, {"e": environment_id, "t": repr(time.time()),
                           "b": template.replace(b"@BATCH_ID@", uuid.uuid4().hex.encode())})
        total.update(sent)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    load_before = os.getloadavg()[0]
    run = server.drain()
    stored = stored_calls(environment_id)
    return {"batches": batches, **run, "batches_per_s": run["batches"] / run["seconds"],
            "cpu_ms_per_batch": run["cpu_seconds"] / max(1, run["batches"]) * 1000,
            "calls_sent": sum(total.values()), "calls_stored": sum(stored[f] for f in total),
            "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0]}


def stored_calls(environment_id: int) -> Counter[str]:
    from django.db.models import Sum

    from rollout.models import MetricMinute

    return Counter(dict(MetricMinute.objects.filter(environment_id=environment_id).values_list("flag_key")
                        .annotate(n=Sum("calls"))))


# -- 1. ratio ---------------------------------------------------------------------------------------


def run_wrk(url: str, *, path: str, key: str, body_file: Path, duration: int, connections: int, threads: int,
            pid: int) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    cpu_before = _tree_cpu_seconds(pid)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s", "--latency",
           "-s", str(HERE / "ingest.lua"), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env={**os.environ, "BENCH_PATH": path, "TURNOUT_SDK_KEY": key,
                              "BENCH_BODY_FILE": str(body_file)})
    match = re.search(r"^BENCH_JSON (.*)$", out.stdout, re.M)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(match.group(1))
    cpu = _tree_cpu_seconds(pid) - cpu_before
    result["errors"] = sum(result[k] for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout",
                                               "status_other"))
    result.update({"loadavg_before": load_before, "loadavg_after": os.getloadavg()[0],
                   "web_cpu_ms_per_request": cpu / max(1, result["requests"]) * 1000})
    return result


# -- 2. sustained -----------------------------------------------------------------------------------


class Load:
    def __init__(self) -> None:
        self.accepted = 0
        self.duplicates = 0
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.sent: Counter[str] = Counter()
        self.lateness: list[float] = []
        self.not_sent = 0
        self.retries = 0
        self.given_up = 0


async def _connection(host: str, port: int, head: bytes, profiles: list[tuple[bytes, Counter[str]]],
                      slots: list[float], load: Load, deadline: float) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    for index, at in enumerate(slots):
        if time.monotonic() >= deadline:  # the server fell behind the asked rate: what is left is not sent
            load.not_sent += len(slots) - index
            break
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            load.lateness.append(-delay)
        template, sent = random.choice(profiles)
        body = template.replace(b"@BATCH_ID@", uuid.uuid4().hex.encode())
        request = head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        for attempt in range(4):  # as the SDK: a failed batch is sent again (same batch_id) up to 3 times
            if attempt:
                load.retries += 1
                await asyncio.sleep(1.0)
            t0 = time.monotonic()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                writer.write(request)
                await writer.drain()
                status_line = await reader.readuntil(b"\r\n")
                headers = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", headers).group(1))  # type: ignore[union-attr]
                answer = await reader.readexactly(length)
                if re.search(rb"(?i)connection: *close", headers):
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, AttributeError) as exc:
                load.errors[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                writer = None
                continue
            load.latencies.append(time.monotonic() - t0)
            status = status_line.split()[1].decode()
            load.statuses[status] += 1
            if status == "202":
                if b"duplicate" in answer:
                    load.duplicates += 1  # taken by an earlier try whose answer was a 503 (a timeout)
                else:
                    load.accepted += 1
                load.sent.update(sent)
                break
            if not status.startswith("5"):
                break  # refused for good: not counted
        else:
            load.given_up += 1
    if writer is not None:
        writer.close()


def _stream_state(client: Any) -> tuple[int, float | None]:
    """Batches waiting in the stream, and the age in seconds of the oldest."""
    backlog = int(client.xlen(STREAM))
    first = client.xrange(STREAM, count=1)
    if not first:
        return backlog, None
    ms = int(first[0][0].decode().split("-")[0])
    return backlog, max(0.0, time.time() - ms / 1000)


async def sustained(url: str, key: str, flags: list[str], *, rate: float, seconds: float, connections: int,
                    redis_url: str, environment_id: int) -> dict[str, Any]:
    import redis

    rng = random.Random(7)
    profiles = []
    for _ in range(64):
        batch, sent = make_batch(rng, flags, batch_id="@BATCH_ID@")
        profiles.append((json.dumps(batch, separators=(",", ":")).encode(), sent))
    host, port = url.removeprefix("http://").split(":")
    head = (f"POST /api/v1/sdk/metrics HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\n").encode()
    total = int(rate * seconds)
    start = time.monotonic() + 1.0
    slots = [[start + k / rate for k in range(i, total, connections)] for i in range(connections)]
    load = Load()
    client = redis.Redis.from_url(redis_url)
    samples: list[dict[str, Any]] = []
    cpu_pid_load = os.getloadavg()[0]

    async def sampler() -> None:
        last_accepted, last_t = 0, time.monotonic()
        while True:
            await asyncio.sleep(5)
            now = time.monotonic()
            backlog, lag = await asyncio.to_thread(_stream_state, client)
            samples.append({"t": round(now - start, 1), "accepted_per_s": (load.accepted - last_accepted) / (now - last_t),
                            "backlog": backlog, "rollup_lag_s": lag, "loadavg": os.getloadavg()[0]})
            print(f"  t={now - start:6.1f}s accepted/s {samples[-1]['accepted_per_s']:7.1f} backlog {backlog:6d} "
                  f"lag {lag if lag is None else round(lag, 2)} s load {samples[-1]['loadavg']:.1f}", flush=True)
            last_accepted, last_t = load.accepted, now

    sampling = asyncio.create_task(sampler())
    t0 = time.monotonic()
    await asyncio.gather(*(_connection(host, int(port), head, profiles, s, load, start + seconds) for s in slots))
    elapsed = time.monotonic() - max(t0, start)
    sampling.cancel()
    # Drain: how long until the roll-up has taken everything that was accepted.
    drain_started = time.monotonic()
    backlog = _stream_state(client)[0]
    while backlog and time.monotonic() - drain_started < 300:
        await asyncio.sleep(1)
        backlog = _stream_state(client)[0]
    drained_after = time.monotonic() - drain_started
    stored = await asyncio.to_thread(stored_calls, environment_id)
    lats = sorted(load.latencies)
    steady = [s for s in samples if s["t"] > 10]
    return {
        "rate_asked": rate, "seconds": seconds, "connections": connections, "batches_asked": total,
        "accepted": load.accepted, "not_sent": load.not_sent, "duplicates": load.duplicates,
        "retries": load.retries, "given_up": load.given_up, "statuses": dict(load.statuses),
        "errors": dict(load.errors), "accepted_per_s": (load.accepted + load.duplicates) / elapsed,
        "p50_ms": lats[len(lats) // 2] * 1000 if lats else None,
        "p99_ms": lats[int(len(lats) * 0.99)] * 1000 if lats else None,
        "late_sends": len(load.lateness), "late_p99_s": sorted(load.lateness)[int(len(load.lateness) * 0.99)]
        if load.lateness else 0.0,
        "backlog_max": max((s["backlog"] for s in samples), default=0),
        "rollup_lag_p50_s": statistics.median([s["rollup_lag_s"] or 0 for s in steady]) if steady else None,
        "rollup_lag_max_s": max((s["rollup_lag_s"] or 0 for s in samples), default=0),
        "drained_after_end_s": drained_after, "backlog_left": backlog,
        "calls_sent": sum(load.sent.values()), "calls_stored": sum(stored[f] for f in load.sent),
        "per_flag_difference": {f: load.sent[f] - stored[f] for f in load.sent if load.sent[f] != stored[f]},
        "samples": samples, "loadavg_before": cpu_pid_load, "loadavg_after": os.getloadavg()[0],
    }


# -- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk scenario per round")
    parser.add_argument("--connections", type=int, default=20, help="wrk connections")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of each server")
    parser.add_argument("--rate", type=float, default=500.0, help="sustained batches/s (0: skip)")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--load-connections", type=int, default=50, help="connections of the sustained client")
    parser.add_argument("--capacity", type=int, default=20_000, help="batches for the roll-up capacity run (0: skip)")
    parser.add_argument("--before-ref", default="", help="also measure this git ref's code (ratio only)")
    parser.add_argument("--port", type=int, default=8750)
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()
    ensure_wrk()

    database_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/turnout_bench_ingest")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
    var_dir = Path(tempfile.mkdtemp(prefix="turnout-bench-ingest-"))
    env = production_env(database_url=database_url, redis_url=redis_url, var_dir=var_dir)
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "TURNOUT_VAR_DIR", "SECRET_KEY",
                                           "ALLOWED_HOSTS", "TURNOUT_ENV", "SECURE_SSL_REDIRECT")})
    os.environ["LOG_LEVEL"] = "WARNING"
    import redis

    from bench import seed

    seed.setup_django("turnout_bench_ingest")
    redis.Redis.from_url(redis_url).flushdb()
    seeded = seed.seed(flags=100, members=1000)
    key = seed.sdk_key()
    body, body_sent = make_batch(random.Random(1), seeded.flags, batch_id=None)
    body_file = var_dir / "batch.json"
    body_file.write_text(json.dumps(body, separators=(",", ":")))
    started = machine()
    servers: dict[str, Turnout] = {"after": Turnout(ROOT, env, var_dir, port=args.port, workers=args.workers,
                                                    name="after")}
    if args.before_ref:
        before = var_dir / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before_ref], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        servers["before"] = Turnout(before, env, var_dir, port=args.port + 2, workers=args.workers, name="before")
    bare = Bare(args.port + 1, args.workers, var_dir)
    results: dict[str, Any] = {"command": " ".join(["bench/ingest/run.sh", *sys.argv[1:]]), "machine": started,
                               "args": {k: v for k, v in vars(args).items() if k != "out"},
                               "batch_bytes": body_file.stat().st_size, "rows_per_batch": len(body["flags"])}
    try:
        for server in servers.values():
            server.start()
        bare.start()
        # 1. ratio
        if args.rounds > 0:
            scenarios = {"bare POST (baseline)": (bare.url, "/bare/post", bare.proc.pid if bare.proc else 0)}
            for name, server in servers.items():
                scenarios[f"metrics batch ({name})"] = (server.url, "/api/v1/sdk/metrics", server.web_pid)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in scenarios}
            common = {"key": key, "body_file": body_file, "connections": args.connections, "threads": 2}
            warmed = 0
            for name, (url, path, pid) in scenarios.items():
                warm = run_wrk(url, path=path, duration=2, pid=pid, **common)  # warm-up (its 202s count too)
                warmed += warm["status_2xx"] if name.startswith("metrics") else 0
            for round_no in range(args.rounds):
                for name, (url, path, pid) in scenarios.items():
                    result = run_wrk(url, path=path, duration=args.duration, pid=pid, **common)
                    runs[name].append(result)
                    print(f"round {round_no + 1} {name}: {result['rps']:,.0f} req/s, errors {result['errors']}, "
                          f"load {result['loadavg_before']:.1f}", flush=True)
            baseline = runs["bare POST (baseline)"]
            summary = {}
            for name, rs in runs.items():
                pairs = [r["rps"] / b["rps"] for r, b in zip(rs, baseline, strict=True)]
                summary[name] = {"rps": statistics.median(r["rps"] for r in rs), "ratio": statistics.median(pairs),
                                 "ratio_rounds": [round(p, 2) for p in pairs],
                                 "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                                 "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                                 "web_cpu_ms_per_request": statistics.median(r["web_cpu_ms_per_request"] for r in rs),
                                 "errors": sum(r["errors"] for r in rs), "accepted": sum(r["status_2xx"] for r in rs)}
            results["ratio"] = {"runs": runs, "summary": summary}
            # sent = stored after the wrk rounds (every 202 of every round and the warm-up counted the same body)
            expected_posts = warmed + sum(r["status_2xx"] for name, rs in runs.items() if name.startswith("metrics")
                                          for r in rs)
            for name in [n for n in servers if n != "after"]:  # no request of theirs may land after the roll-up
                servers[name].stop()
            time.sleep(2)
            rollups = {name: server.rollup() for name, server in servers.items()}
            stored = stored_calls(seeded.environment_id)
            results["ratio"]["rollups"] = rollups
            results["ratio"]["stored_calls"] = sum(stored.values())
            results["ratio"]["acknowledged_calls"] = expected_posts * sum(body_sent.values())
            print(f"after the rounds: acknowledged {expected_posts * sum(body_sent.values()):,} calls (every 202, "
                  f"warm-ups included), stored {sum(stored.values()):,}", flush=True)
        # 2. sustained
        if args.rate > 0:
            from rollout.models import MetricMinute

            MetricMinute.objects.filter(environment_id=seeded.environment_id).delete()
            print(f"sustained: {args.rate:.0f} batches/s for {args.minutes} min", flush=True)
            results["sustained"] = asyncio.run(sustained(
                servers["after"].url, key, seeded.flags, rate=args.rate, seconds=args.minutes * 60,
                connections=args.load_connections, redis_url=redis_url, environment_id=seeded.environment_id))
        # 3. roll-up capacity
        if args.capacity > 0:
            servers["after"].stop()
            print(f"roll-up capacity: {args.capacity:,} batches", flush=True)
            results["capacity"] = capacity(servers["after"], redis_url, seeded.flags, seeded.environment_id,
                                           args.capacity)
    finally:
        bare.stop()
        for server in servers.values():
            server.stop()
    results["machine_after"] = machine()
    seed.reset()
    Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print()
    print(report(results))


def report(results: dict[str, Any]) -> str:
    m, after = results["machine"], results["machine_after"]
    lines = [f"`{results['command']}` — {m['nproc']} × {m['cpu']}, load average {m['loadavg'][0]} → "
             f"{after['loadavg'][0]}, {m['at']}; batch {results['batch_bytes']:,} B, {results['rows_per_batch']} rows",
             "", "| scenario | requests/s | ratio to bare POST (per round) | p50 | p99 | web CPU / request | errors |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in results.get("ratio", {}).get("summary", {}).items():
        rounds = ", ".join(f"{x:.2f}" for x in s["ratio_rounds"])
        lines.append(f"| {name} | {s['rps']:,.0f} | **{s['ratio']:.2f}×** ({rounds}) | {s['p50_ms']:.1f} ms "
                     f"| {s['p99_ms']:.1f} ms | {s['web_cpu_ms_per_request']:.2f} ms | {s['errors']} |")
    s = results.get("sustained")
    if s:
        lines += ["", "| asked | accepted/s | p50 / p99 | backlog max | roll-up lag p50 / max | drained after end "
                  "| calls acknowledged / stored | errors |", "|---|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {s['rate_asked']:.0f}/s × {s['seconds']:.0f} s | {s['accepted_per_s']:.0f} "
                  f"| {s['p50_ms']:.0f} / {s['p99_ms']:.0f} ms | {s['backlog_max']:,} "
                  f"| {s['rollup_lag_p50_s']:.1f} / {s['rollup_lag_max_s']:.1f} s | {s['drained_after_end_s']:.0f} s "
                  f"| {s['calls_sent']:,} / {s['calls_stored']:,} | {sum(s['errors'].values())} |"]
    c = results.get("capacity")
    if c:
        lines += ["", "| roll-up of a backlog | seconds | batches/s | worker CPU / batch | calls sent / stored |",
                  "|---|---:|---:|---:|---:|",
                  f"| {c['batches']:,} batches | {c['seconds']:.1f} | {c['batches_per_s']:.0f} "
                  f"| {c['cpu_ms_per_batch']:.2f} ms | {c['calls_sent']:,} / {c['calls_stored']:,} |"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
