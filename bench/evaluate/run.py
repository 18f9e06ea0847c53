"""Evaluate-endpoint throughput against a bare Django JSON view, on the same server setup.

    python bench/evaluate/run.py [--workers 2] [--connections 50] [--duration 15] [--rounds 2]

Uses DATABASE_URL / REDIS_URL from the environment like any Turnout process (PostgreSQL + Redis is
the production-like setup; without them a SQLite file under var/ and the local-memory cache).
Migrates, seeds the demo, creates an SDK key, starts uvicorn with the bench settings (Turnout's
settings plus the bench-only bare view), then runs wrk (50 connections by default) against each
target in turn, alternating rounds so that machine noise hits both alike. Prints a Markdown table
and writes bench/evaluate/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TARGETS = {
    "bare Django JSON view (sync)": "/bench/bare",
    "bare Django JSON view (async)": "/bench/bare-async",
    "POST /api/v1/sdk/evaluate": "/api/v1/sdk/evaluate",
    "POST /ofrep/v1/evaluate/flags/{key}": "/ofrep/v1/evaluate/flags/invoice-engine",
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "bench.evaluate.settings"
    env["TURNOUT_THROTTLE_SDK"] = "1000000000/min"  # measure evaluation, not the 429 path
    env.setdefault("DATABASE_URL", f"sqlite:///{ROOT / 'var' / 'bench-evaluate.sqlite3'}")
    env.setdefault("DATABASE_POOL_SIZE", "20")  # PostgreSQL: a pool per web process (see config/settings.py)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "sdk"), env.get("PYTHONPATH")]))
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server did not listen on {port}")


def _unit(value: str) -> float:
    """wrk's latency ("850.12us", "3.21ms", "1.02s") in milliseconds."""
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def _wrk(url: str, key: str, connections: int, duration: int) -> dict[str, float]:
    env = dict(os.environ, BENCH_KEY=key, BENCH_FORMAT="ofrep" if "/ofrep/" in url else "sdk")
    out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{duration}s", "--latency",
                          "-s", str(HERE / "post.lua"), url], env=env, check=True, capture_output=True,
                         text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _unit(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _unit(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        raise SystemExit(f"{url}: {non2xx.group(1)} non-2xx responses\n{out}")
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    env = _env()
    _manage(env, "migrate", "--noinput", "-v0")
    _manage(env, "seed_demo")
    key = _manage(env, "create_sdk_key", "production", "--name", f"bench-{int(time.time())}")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
                               "--port", str(port), "--workers", str(args.workers), "--no-access-log",
                               "--log-level", "warning"], cwd=ROOT, env=env)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in TARGETS}
    try:
        _wait(port)
        for path in TARGETS.values():  # warm up every worker: caches, compiled ruleset, connections
            _wrk(f"http://127.0.0.1:{port}{path}", key, args.connections, 2)
        for _ in range(args.rounds):
            for name, path in TARGETS.items():
                results[name].append(_wrk(f"http://127.0.0.1:{port}{path}", key, args.connections, args.duration))
    finally:
        server.terminate()
        server.wait(timeout=20)
    summary = {name: {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")}
               for name, runs in results.items()}
    # Ratios are paired: each target against the bare views of the same round (the machine's load moves
    # between rounds, and both sides of a ratio must see the same load), then the median over rounds.
    for name, s in summary.items():
        for base, label in (("bare Django JSON view (sync)", "ratio_sync"),
                            ("bare Django JSON view (async)", "ratio_async")):
            pairs = [run["rps"] / ref["rps"] for run, ref in zip(results[name], results[base], strict=True)]
            s[label] = statistics.median(pairs)
            s[label + "_rounds"] = [round(x, 2) for x in pairs]
    print("| target | req/s | p50 ms | p99 ms | ratio to bare sync (per round) | ratio to bare async |\n"
          "|---|---|---|---|---|---|")
    for name, s in summary.items():
        rounds = ", ".join(f"{x:.2f}" for x in s["ratio_sync_rounds"])
        print(f"| {name} | {s['rps']:.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s['ratio_sync']:.2f} "
              f"({rounds}) | {s['ratio_async']:.2f} |")
    setup = {"workers": args.workers, "connections": args.connections, "duration_s": args.duration,
             "rounds": args.rounds, "database": env["DATABASE_URL"].split(":", 1)[0],
             "cache": "redis" if env.get("REDIS_URL") else "locmem", "cpus": os.cpu_count()}
    (HERE / "results.json").write_text(json.dumps({"setup": setup, "runs": results, "median": summary}, indent=2))


if __name__ == "__main__":
    main()
