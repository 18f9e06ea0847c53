"""Edge-speed serving: Turnout's SDK endpoints side by side with a bare Django JSON view, in ONE run.

    bench/edge/run.sh                                  # 3 interleaved rounds, 10 s per scenario
    bench/edge/run.sh --rounds 5 --duration 15 --connections 20
    bench/edge/run.sh --members 1000000               # the same with a 1M-member cohort (304 stays flat)
    bench/edge/run.sh --before main                    # also the SDK scenarios of another commit, in the same run

Two servers run at the same time on loopback, each ``gunicorn -c config/gunicorn.py`` with the same
number of uvicorn workers (2 by default):

- the **baseline**: a minimal Django project (``bench/edge/bare``: ``startproject``'s default
  middleware and apps, one GET and one POST JSON view, nothing of Turnout);
- **Turnout** in its production configuration (``TURNOUT_ENV=production``, DEBUG off, JSON request
  logs, PostgreSQL, Redis) with 100 flags and a 1,000-member pilot cohort (``bench/seed.py``).

``wrk`` (installed from Debian when missing) runs each scenario in turn, and the whole list again
for every round, so machine noise (the machine is shared) hits the baseline and Turnout alike. Each
scenario's requests/s is divided by its baseline's requests/s **of the same round** (GETs by the bare
GET, POSTs by the bare POST); the recorded ratio is the median over rounds. Output: a Markdown table
on stdout and ``bench/edge/results.json`` (machine, load average before and after every run,
command line).

With ``--before REF`` a third server runs the Turnout of that commit (``git archive`` into a
temporary directory, the same virtualenv, database and Redis), and its SDK scenarios join every
round as ``before: …`` rows: before and after measured side by side against the same baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
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

from bench.load.run import Layout, _tree_cpu_seconds, http, production_env  # noqa: E402
from bench.machine import machine  # noqa: E402

# scenario -> (wrk mode, which baseline it is divided by)
SCENARIOS: dict[str, tuple[str, str]] = {
    "bare GET (baseline)": ("bare_get", "bare_get"),
    "bare POST (baseline)": ("bare_post", "bare_post"),
    "ruleset 304": ("etag", "bare_get"),
    "evaluate (one flag)": ("evaluate", "bare_post"),
    "OFREP single flag": ("ofrep_flag", "bare_post"),
}
FULL_SCENARIOS: dict[str, tuple[str, str]] = {
    "ruleset 200": ("full", "bare_get"),
    "ruleset 200 gzip": ("full_gzip", "bare_get"),
}


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    print("wrk is missing: installing it from Debian (apt-get install wrk)", flush=True)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)


class Bare:
    """The baseline project under the same gunicorn configuration and worker count."""

    def __init__(self, port: int, workers: int, var_dir: Path) -> None:
        self.port = port
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.edge.bare.settings", "BIND": f"127.0.0.1:{port}",
                    "WEB_CONCURRENCY": str(workers), "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
        for name in ("PROMETHEUS_MULTIPROC_DIR", "DATABASE_URL", "REDIS_URL"):
            self.env.pop(name, None)
        self.var_dir = var_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Bare:
        log = open(self.var_dir / f"bare-{self.port}.log", "ab")  # noqa: SIM115 - kept open for the process
        self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py",
                                      "bench.edge.bare.asgi:application"], cwd=ROOT, env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bare server exited with {self.proc.returncode}; see {self.var_dir}")
            try:
                with urllib.request.urlopen(f"{self.url}/bare/get", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("bare server did not answer in 60 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_wrk(url: str, *, mode: str, key: str, etag: str, flags: list[str], duration: int, connections: int,
            threads: int, pid: int) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    cpu_before = _tree_cpu_seconds(pid)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s", "--latency",
           "-s", str(HERE / "edge.lua"), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env={**os.environ, "BENCH_MODE": mode, "TURNOUT_SDK_KEY": key, "TURNOUT_ETAG": etag,
                              "BENCH_FLAGS": ",".join(flags)})
    match = re.search(r"^BENCH_JSON (.*)$", out.stdout, re.M)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(match.group(1))
    cpu = _tree_cpu_seconds(pid) - cpu_before
    errors = sum(result[k] for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout",
                                     "status_other"))
    result.update({"mode": mode, "errors": errors, "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0],
                   "web_cpu_ms_per_request": cpu / max(1, result["requests"]) * 1000})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario per round")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of each server")
    parser.add_argument("--flags", type=int, default=100)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--full", action="store_true", help="also full ruleset downloads (200, plain and gzip)")
    parser.add_argument("--port", type=int, default=8730)
    parser.add_argument("--before", default=None, metavar="REF",
                        help="also run the SDK scenarios against the Turnout of this commit, in the same rounds")
    parser.add_argument("--label", default="", help="a name for this run in the results (e.g. before / after)")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()
    ensure_wrk()

    database_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/turnout_bench_edge")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
    var_dir = Path(tempfile.mkdtemp(prefix="turnout-bench-edge-"))
    env = production_env(database_url=database_url, redis_url=redis_url, var_dir=var_dir)
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "TURNOUT_VAR_DIR", "SECRET_KEY",
                                           "ALLOWED_HOSTS", "TURNOUT_ENV", "SECURE_SSL_REDIRECT")})
    os.environ["LOG_LEVEL"] = "WARNING"
    import redis

    from bench import seed

    seed.setup_django("turnout_bench_edge")
    redis.Redis.from_url(redis_url).flushdb()
    seeded = seed.seed(flags=args.flags, members=args.members)
    key = seed.sdk_key()
    scenarios = {**SCENARIOS, **(FULL_SCENARIOS if args.full else {})}
    before_root: Path | None = None
    if args.before:
        before_root = Path(tempfile.mkdtemp(prefix="turnout-bench-before-"))
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(before_root)], input=archive.stdout, check=True)
        for name, (mode, base) in list(scenarios.items()):
            if not mode.startswith("bare"):
                scenarios[f"before: {name}"] = (f"before:{mode}", base)
    started = machine()
    turnout = Layout(env, var_dir, port=args.port, workers=args.workers, celery=False).start()
    bare = Bare(args.port + 1, args.workers, var_dir).start()
    before = (Layout(env, var_dir, port=args.port + 2, workers=args.workers, celery=False, root=before_root).start()
              if before_root is not None else None)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in scenarios}
    try:
        status, headers, body = http(f"{turnout.url}/api/v1/sdk/ruleset", Authorization=f"Bearer {key}")
        assert status == 200, (status, body[:200])
        etag = headers["etag"]
        common = {"key": key, "etag": etag, "flags": seeded.flags[:20], "connections": args.connections,
                  "threads": args.threads}
        def target_of(mode: str) -> tuple[Any, str]:
            if mode.startswith("before:"):
                return before, mode.removeprefix("before:")
            return (bare if mode.startswith("bare") else turnout), mode

        for mode, _ in scenarios.values():  # warm up every server's workers (caches, compiled ruleset, pools)
            target, wrk_mode = target_of(mode)
            run_wrk(target.url, mode=wrk_mode, duration=2, pid=_pid(target), **common)
        for round_no in range(args.rounds):
            for name, (mode, _) in scenarios.items():
                target, wrk_mode = target_of(mode)
                result = run_wrk(target.url, mode=wrk_mode, duration=args.duration, pid=_pid(target), **common)
                runs[name].append(result)
                print(f"round {round_no + 1} {name}: {result['rps']:,.0f} req/s, errors {result['errors']}, "
                      f"load {result['loadavg_before']:.1f}", flush=True)
    finally:
        if before is not None:
            before.stop()
        bare.stop()
        turnout.stop()
        if before_root is not None:
            shutil.rmtree(before_root, ignore_errors=True)
    summary: dict[str, dict[str, Any]] = {}
    for name, (_, base) in scenarios.items():
        base_name = next(n for n, (m, _) in scenarios.items() if m == base)
        pairs = [r["rps"] / b["rps"] for r, b in zip(runs[name], runs[base_name], strict=True)]
        summary[name] = {
            "rps": statistics.median(r["rps"] for r in runs[name]),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs[name]),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs[name]),
            "web_cpu_ms_per_request": statistics.median(r["web_cpu_ms_per_request"] for r in runs[name]),
            "errors": sum(r["errors"] for r in runs[name]),
            "baseline": base_name, "ratio": statistics.median(pairs), "ratio_rounds": [round(p, 2) for p in pairs],
        }
    results = {"label": args.label, "before_ref": args.before, "after_commit": _head(),
               "command": " ".join(["bench/edge/run.sh", *sys.argv[1:]]),
               "machine": started, "machine_after": machine(),
               "args": {k: v for k, v in vars(args).items() if k != "out"}, "ruleset_bytes": len(body),
               "layout": f"gunicorn -c config/gunicorn.py, {args.workers} uvicorn workers each; Turnout: "
                         "production settings, PostgreSQL, Redis", "runs": runs, "summary": summary}
    seed.reset()
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(report(results))


def _head() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def _pid(target: Any) -> int:
    return int(target.web_pid if isinstance(target, Layout) else target.proc.pid)


def report(results: dict[str, Any]) -> str:
    m, after = results["machine"], results["machine_after"]
    lines = [f"{results['label'] or 'run'}: `{results['command']}` — {m['nproc']} × {m['cpu']}, "
             f"load average {m['loadavg'][0]} → {after['loadavg'][0]}, {m['at']}; ruleset {results['ruleset_bytes']:,} B",
             "", "| scenario | requests/s | ratio to bare (per round) | p50 | p99 | web CPU / request | errors |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in results["summary"].items():
        rounds = ", ".join(f"{x:.2f}" for x in s["ratio_rounds"])
        lines.append(f"| {name} | {s['rps']:,.0f} | **{s['ratio']:.2f}×** ({rounds}) | {s['p50_ms']:.1f} ms "
                     f"| {s['p99_ms']:.1f} ms | {s['web_cpu_ms_per_request']:.2f} ms | {s['errors']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
