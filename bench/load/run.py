"""Load tests against Turnout's production process layout on this machine.

    bench/load/run.sh                               # everything, 20 s per HTTP scenario
    bench/load/run.sh --only ruleset evaluate       # some scenarios
    bench/load/run.sh --duration 30 --connections 50 --streams 1000

Starts, on loopback only: gunicorn with 2 uvicorn workers (``config/gunicorn.py``), a Celery worker
and the Celery beat, with ``TURNOUT_ENV=production`` (DEBUG off, a generated SECRET_KEY,
``ALLOWED_HOSTS=127.0.0.1``, JSON logs to a file), PostgreSQL (``DATABASE_URL``, default the local
database ``turnout_bench_load``) and Redis (``REDIS_URL``, default ``redis://127.0.0.1:6379/9``, flushed
first). Seeds 100 flags and a 1,000-member pilot cohort, then runs:

- ``ruleset``: ``GET /api/v1/sdk/ruleset`` full 200 responses, then 304 (``If-None-Match``), with wrk;
- ``evaluate`` / ``ofrep``: ``POST /api/v1/sdk/evaluate`` and ``POST /ofrep/v1/evaluate/flags`` with wrk;
- ``sse``: a separate single-process web server holding N idle streams (asyncio client), and the time
  for each of 5 changes to reach every stream (p50 / p95 / max);
- ``metrics``: ``POST /api/v1/sdk/metrics`` batches as fast as 50 clients can send them, then the
  roll-up, and the stored counts compared with what was sent.

The per-key SDK throttle is raised for the run (one key, 50 clients). Results: ``bench/load/results.json``
and a Markdown table on stdout, with the machine and the load average at each scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402

SCENARIOS = ["ruleset", "evaluate", "ofrep", "sse", "metrics"]


def production_env(*, database_url: str, redis_url: str, var_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "TURNOUT_ENV": "production",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",  # plain HTTP on loopback; TLS is the proxy's job
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TURNOUT_VAR_DIR": str(var_dir),
        "TURNOUT_THROTTLE_SDK": "100000000/min",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
    })
    env.pop("TURNOUT_REQUIRE_SERVICES", None)
    return env


class Layout:
    """The production process layout: gunicorn (uvicorn workers), a Celery worker, the beat."""

    def __init__(self, env: dict[str, str], var_dir: Path, *, port: int, workers: int, celery: bool,
                 root: Path = ROOT) -> None:
        self.root = root  # the source tree the processes run (another commit's, to compare in one run)
        self.env = {**env, "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": str(workers),
                    "PROMETHEUS_MULTIPROC_DIR": str(var_dir / f"prometheus-{port}")}
        self.port = port
        self.var_dir = var_dir
        self.celery = celery
        self.procs: list[subprocess.Popen[bytes]] = []
        self.web_pid = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.var_dir / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the process
        proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self) -> Layout:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                raise RuntimeError(f"port {self.port} is already in use (a server left from an earlier run?)")
        python = sys.executable
        web = self._spawn(f"web-{self.port}", [python, "-m", "gunicorn", "-c", "config/gunicorn.py",
                                               "config.asgi:application"], self.env)
        self.web_pid = web.pid
        if self.celery:
            celery_env = {k: v for k, v in self.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            self._spawn("worker", [python, "-m", "celery", "-A", "config", "worker", "--pool=threads",
                                   "--concurrency=4", "--loglevel=INFO", "-n", f"bench-{os.getpid()}@%h"], celery_env)
            self._spawn("beat", [python, "-m", "celery", "-A", "config", "beat", "--loglevel=INFO",
                                 f"--schedule={self.var_dir / 'celerybeat-schedule'}"], celery_env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if web.poll() is not None:
                raise RuntimeError(f"web exited with {web.returncode}; see {self.var_dir}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("web did not become ready in 60 s")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a process and its live children (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == root or ppid == root:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def http(url: str, *, method: str = "GET", body: bytes | None = None, **headers: str) -> tuple[int, dict[str, str],
                                                                                                 bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def wrk(url: str, *, mode: str, key: str, duration: int, connections: int, threads: int, web_pid: int,
        **env: str) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    cpu_before = _tree_cpu_seconds(web_pid)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s", "--latency",
           "-s", str(HERE / "sdk.lua"), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env={**os.environ, "BENCH_MODE": mode, "TURNOUT_SDK_KEY": key, **env})
    match = re.search(r"^BENCH_JSON (.*)$", out.stdout, re.M)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(match.group(1))
    cpu = _tree_cpu_seconds(web_pid) - cpu_before
    result.update({"mode": mode, "connections": connections, "threads": threads, "loadavg_before": load_before,
                   "loadavg_after": os.getloadavg()[0], "web_cpu_s": cpu,
                   # CPU the web processes spent per request: comparable across busy and quiet machines.
                   "web_cpu_ms_per_request": cpu / max(1, result["requests"]) * 1000})
    return result


def bench_ruleset(layout: Layout, key: str, args: argparse.Namespace) -> dict[str, Any]:
    status, headers, body = http(f"{layout.url}/api/v1/sdk/ruleset", Authorization=f"Bearer {key}")
    assert status == 200, status
    common = {"key": key, "duration": args.duration, "connections": args.connections, "threads": args.threads,
              "web_pid": layout.web_pid}
    full = wrk(layout.url, mode="get", **common)
    not_modified = wrk(layout.url, mode="etag", TURNOUT_ETAG=headers["etag"], **common)
    assert full["status_other"] == 0 and not_modified["status_other"] == 0, (full, not_modified)
    return {"body_bytes": len(body), "200": full, "304": not_modified}


def _available(layout: Layout, path: str, key: str, body: bytes) -> bool:
    status, _, _ = http(f"{layout.url}{path}", method="POST", body=body, Authorization=f"Bearer {key}",
                        **{"Content-Type": "application/json"})
    return status == 200


def bench_evaluate(layout: Layout, key: str, flags: list[str], args: argparse.Namespace) -> dict[str, Any]:
    probe = json.dumps({"flag": flags[0], "context": {"key": "user-1", "attributes": {}}}).encode()
    if not _available(layout, "/api/v1/sdk/evaluate", key, probe):
        return {"unavailable": "POST /api/v1/sdk/evaluate does not answer 200 on this build"}
    return wrk(layout.url, mode="evaluate", key=key, duration=args.duration, connections=args.connections,
               threads=args.threads, web_pid=layout.web_pid, BENCH_FLAGS=",".join(flags))


def bench_ofrep(layout: Layout, key: str, args: argparse.Namespace) -> dict[str, Any]:
    probe = json.dumps({"context": {"targetingKey": "user-1"}}).encode()
    if not _available(layout, "/ofrep/v1/evaluate/flags", key, probe):
        return {"unavailable": "POST /ofrep/v1/evaluate/flags does not answer 200 on this build"}
    return wrk(layout.url, mode="ofrep_bulk", key=key, duration=args.duration, connections=args.connections,
               threads=args.threads, web_pid=layout.web_pid)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def bench_sse(env: dict[str, str], var_dir: Path, key: str, seeded: Any, args: argparse.Namespace) -> dict[str, Any]:
    from bench.load.sse import fan_out

    root = Path(args.web_root) if args.web_root else ROOT
    # The web process's garbage-collector pauses, on the clients' clock (bench/load/gcprobe).
    gc_log = var_dir / f"gc-{args.port + 1}"
    for old in var_dir.glob(f"{gc_log.name}.*"):
        old.unlink()
    web_env = {**env, "TURNOUT_BENCH_GC_LOG": str(gc_log),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE / "gcprobe"), env.get("PYTHONPATH")]))}
    layout = Layout(web_env, var_dir, port=args.port + 1, workers=1, celery=False, root=root).start()
    try:
        clients = args.sse_clients or max(1, min(8, args.streams // 2500))
        result = asyncio.run(fan_out(port=layout.port, key=key, streams=args.streams, changes=5,
                                     change=lambda i: _change(seeded, i),
                                     server_pids=lambda: _children(layout.web_pid), clients=clients,
                                     sdk_query=not args.sse_bare))
        result["loadavg"] = os.getloadavg()[0]
        result["gc"] = _gc_pauses(gc_log, _children(layout.web_pid), result)
        return result
    finally:
        layout.stop()


def _gc_pauses(gc_log: Path, pids: list[int], result: dict[str, Any]) -> dict[str, Any]:
    """The web process's full collections while the streams connected, and every pause of 10 ms or
    more between a change and the last stream hearing of it."""
    pauses: list[tuple[float, int, float]] = []
    for pid in pids:
        path = gc_log.parent / f"{gc_log.name}.{pid}"
        if path.exists():
            for line in path.read_text().splitlines():
                start, generation, took = line.split()
                pauses.append((float(start), int(generation), float(took)))
    changes = result["changes"]
    first = min((c["t0"] for c in changes), default=float("inf"))
    during = [{"version": c["version"], "generation": g, "ms": took, "after_change_ms": round((t - c["t0"]) * 1000)}
              for c in changes for t, g, took in pauses if c["t0"] <= t <= c["t0"] + c["max_ms"] / 1000]
    connecting = [took for t, g, took in pauses if g == 2 and t < first]
    return {"full_collections_connecting": len(connecting), "full_max_ms_connecting": max(connecting, default=0.0),
            "pauses_during_changes": during}


def _children(pid: int) -> list[int]:
    """The worker processes of a gunicorn master."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def _change(seeded: Any, i: int) -> int:
    """One real change through the service layer (audited, announced after commit): the new version."""
    from common.actors import Actor
    from rollout.models import Environment
    from rollout.services.flags import flag_state_update

    flag_state_update(actor=Actor.system("bench"), flag=seeded.flags[0], environment="production", version=None,
                      percentage_value=(10 + i) % 100)
    return Environment.objects.values_list("ruleset_version", flat=True).get(pk=seeded.environment_id)


def bench_metrics(layout: Layout, key: str, seeded: Any, args: argparse.Namespace) -> dict[str, Any]:
    from bench.load.ingest import ingest

    return ingest(url=layout.url, key=key, seeded=seeded, duration=args.duration, clients=args.connections)


GROWTH_POINTS = [(10, 1000), (1000, 1000), (10, 1_000_000)]


def run_point(env: dict[str, str], var_dir: Path, args: argparse.Namespace, *, flags: int, members: int,
              scenarios: list[str]) -> dict[str, Any]:
    """Fresh data and fresh servers (nothing cached from another point), then the scenarios."""
    import redis

    from bench import seed

    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    seed.reset()
    seeded = seed.seed(flags=flags, members=members)
    key = seed.sdk_key()
    print(f"seeded {flags:,} flags, {members:,} members; logs in {var_dir}", flush=True)
    results: dict[str, Any] = {"flags": flags, "members": members, "scenarios": {}}
    layout = Layout(env, var_dir, port=args.port, workers=2, celery=True).start()
    try:
        for name in scenarios:
            print(f"-- {name}", flush=True)
            if name == "ruleset":
                results["scenarios"][name] = bench_ruleset(layout, key, args)
            elif name == "evaluate":
                results["scenarios"][name] = bench_evaluate(layout, key, seeded.flags, args)
            elif name == "ofrep":
                results["scenarios"][name] = bench_ofrep(layout, key, args)
            elif name == "sse":
                results["scenarios"][name] = bench_sse(env, var_dir, key, seeded, args)
            elif name == "metrics":
                results["scenarios"][name] = bench_metrics(layout, key, seeded, args)
            print(json.dumps(results["scenarios"][name]), flush=True)
    finally:
        layout.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, default=SCENARIOS)
    parser.add_argument("--duration", type=int, default=20, help="seconds per HTTP scenario")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--web-root", default=None,
                        help="SSE: run the web process from this source tree (another commit's, e.g. from git archive)")
    parser.add_argument("--sse-clients", type=int, default=0,
                        help="client processes holding the streams (default: one per 2,500 streams, at most 8)")
    parser.add_argument("--sse-bare", action="store_true",
                        help="open streams without the SDK's ?patches=1&members=1 (changes announced, not patched)")
    parser.add_argument("--flags", type=int, default=100)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--growth", action="store_true",
                        help="instead: ruleset / evaluate / OFREP at 10 and 1,000 flags and at 1k and 1M members")
    parser.add_argument("--port", type=int, default=8710)
    parser.add_argument("--out", default=None, help="default bench/load/results.json (growth: results-growth.json)")
    args = parser.parse_args()

    if shutil.which("wrk") is None and {"ruleset", "evaluate", "ofrep"} & set(args.only):
        sys.exit("wrk is not installed (apt-get install wrk)")
    database_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/turnout_bench_load")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
    var_dir = Path(tempfile.mkdtemp(prefix="turnout-bench-load-"))
    env = production_env(database_url=database_url, redis_url=redis_url, var_dir=var_dir)
    # This process seeds and makes changes with the same settings as the servers.
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "TURNOUT_VAR_DIR", "SECRET_KEY",
                                           "ALLOWED_HOSTS", "TURNOUT_ENV", "SECURE_SSL_REDIRECT")})
    os.environ["LOG_LEVEL"] = "WARNING"
    from bench import seed

    seed.setup_django("turnout_bench_load")
    # (another tree's location is this machine's business: the record says only that one was used)
    recorded = {k: ("another source tree" if k == "web_root" and v else v) for k, v in vars(args).items() if k != "out"}
    results: dict[str, Any] = {"machine": machine(), "args": recorded,
                               "layout": "gunicorn -c config/gunicorn.py (2 uvicorn workers) + celery worker "
                                         "(threads, 4) + celery beat; PostgreSQL; Redis"}
    if args.growth:
        scenarios = [s for s in args.only if s in ("ruleset", "evaluate", "ofrep")]
        results["points"] = [run_point(env, var_dir, args, flags=f, members=m, scenarios=scenarios)
                             for f, m in GROWTH_POINTS]
        out = Path(args.out or HERE / "results-growth.json")
    else:
        point = run_point(env, var_dir, args, flags=args.flags, members=args.members, scenarios=args.only)
        results["scenarios"] = point["scenarios"]
        out = Path(args.out or HERE / "results.json")
    seed.reset()
    results["machine_after"] = machine()
    out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(growth_report(results) if args.growth else report(results))


def growth_report(results: dict[str, Any]) -> str:
    lines = ["| flags | members | ruleset body | ruleset 200 req/s (p99) | ruleset 304 req/s (p99) "
             "| evaluate req/s (p99) | OFREP bulk req/s (p99) | web CPU per request (200 / 304 / eval / bulk) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in results["points"]:
        s = p["scenarios"]

        def cell(r: dict[str, Any] | None) -> str:
            return "—" if not r or "unavailable" in r else f"{r['rps']:,.0f} ({r['p99_ms']:,.0f} ms)"

        def cpu(r: dict[str, Any] | None) -> str:
            return "—" if not r or "unavailable" in r else f"{r['web_cpu_ms_per_request']:.1f}"

        rs = s.get("ruleset", {})
        lines.append(f"| {p['flags']:,} | {p['members']:,} | {rs.get('body_bytes', 0):,} B | {cell(rs.get('200'))} "
                     f"| {cell(rs.get('304'))} | {cell(s.get('evaluate'))} | {cell(s.get('ofrep'))} "
                     f"| {cpu(rs.get('200'))} / {cpu(rs.get('304'))} / {cpu(s.get('evaluate'))} / "
                     f"{cpu(s.get('ofrep'))} ms |")
    return "\n".join(lines)


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"Machine: {m['nproc']} × {m['cpu']}, {m['memory_gib']} GiB; load average at start {m['loadavg']}",
             "", "| scenario | requests/s | p50 | p99 | errors | web CPU per request | load avg (before → after) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    s = results["scenarios"]

    def row(label: str, r: dict[str, Any]) -> None:
        if "unavailable" in r:
            lines.append(f"| {label} | — | — | — | {r['unavailable']} | | |")
            return
        errors = r["errors_connect"] + r["errors_read"] + r["errors_write"] + r["errors_timeout"] + r["status_other"]
        lines.append(f"| {label} | {r['rps']:,.0f} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {errors} "
                     f"| {r['web_cpu_ms_per_request']:.1f} ms | {r['loadavg_before']:.1f} → {r['loadavg_after']:.1f} |")

    if "ruleset" in s:
        row(f"ruleset 200 ({s['ruleset']['body_bytes']:,} B body)", s["ruleset"]["200"])
        row("ruleset 304 (If-None-Match)", s["ruleset"]["304"])
    if "evaluate" in s:
        row("evaluate (one flag)", s["evaluate"])
    if "ofrep" in s:
        row("OFREP bulk (all flags)", s["ofrep"])
    if "sse" in s:
        r = s["sse"]
        lines += ["", f"SSE: {r['streams']:,} idle streams asked, {r['streams'] - r['connect_errors']:,} held, on one "
                      f"web process ({r.get('client_processes', 1)} client processes; connected in {r['connect_s']:.1f} s; "
                      f"errors: {r['error_samples']}); "
                      f"change → every stream, over {len(r['changes'])} changes:",
                  "", "| p50 | p95 | max | streams that saw every change |", "|---:|---:|---:|---:|",
                  f"| {r['p50_ms']:.0f} ms | {r['p95_ms']:.0f} ms | {r['max_ms']:.0f} ms | {r['complete']:,} |",
                  "", f"Web process memory: {r.get('rss_before_bytes', 0) / 2**20:,.1f} MiB before, "
                      f"{r.get('rss_held_bytes', 0) / 2**20:,.1f} MiB holding the streams: "
                      f"{(r.get('bytes_per_stream') or 0) / 1024:,.1f} KiB per idle stream",
                  "", "Per change: " + "; ".join(f"v{c['version']} p95 {c['p95_ms']:.0f} ms (first {c['first_ms']:.0f} ms)"
                                                 for c in r["changes"])]
        if "gc" in r:
            g = r["gc"]
            lines += ["", f"Web process garbage collector: {g['full_collections_connecting']} full collections while "
                          f"connecting (longest {g['full_max_ms_connecting']:.0f} ms); pauses of 10 ms or more during "
                          f"the changes: {g['pauses_during_changes'] or 'none'}"]
    if "metrics" in s:
        r = s["metrics"]
        if "unavailable" in r:
            lines += ["", f"Metrics ingestion: {r['unavailable']}"]
        else:
            lines += ["", f"Metrics ingestion: {r['reports_per_s']:,.0f} reports/s for {r['duration_s']:.0f} s "
                          f"({r['reports']:,} reports, {r['calls_sent']:,} calls); stored after roll-up: "
                          f"{r['calls_stored']:,} calls — {'no loss' if r['lost'] == 0 else str(r['lost']) + ' lost'}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
