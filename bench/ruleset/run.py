"""Ruleset scale: build time, size (raw and gzip), SDK load time and memory, as flags and members grow.

    python bench/ruleset/run.py                 # headline (1,000 flags, 200,000 members) + growth table
    python bench/ruleset/run.py --quick         # a smaller grid, for checking the script
    python bench/ruleset/run.py --points 1000x200000 10x1000000

Needs PostgreSQL (``DATABASE_URL``, default the local database ``turnout_bench_ruleset``, created if
missing). Writes ``bench/ruleset/results.json`` and prints a Markdown table. For each point:
- build: ``rollout.delivery.ruleset.build_document`` plus JSON serialization (best of 3, 1 above 100k members),
  and the number of SQL queries it took;
- size: the serialized body, raw and gzip (level 6, as a proxy would compress it);
- SDK load: in a fresh process (``sdk_load.py``), ``json.loads`` + ``turnout.engine.compile_ruleset``
  time, the resident-memory growth and tracemalloc's peak / kept bytes, and the cost of a decision.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402

HEADLINE = (1000, 200_000)
GROWTH = [(10, 1000), (100, 1000), (1000, 1000), (10, 10_000), (10, 100_000), (10, 1_000_000)]
QUICK = [(10, 1000), (100, 10_000)]


def measure(flags: int, members: int) -> dict[str, Any]:
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    from bench import seed
    from rollout.delivery.ruleset import build_document
    from rollout.models import Environment

    seed.reset()
    t0 = time.perf_counter()
    seeded = seed.seed(flags=flags, members=members)
    seed_s = time.perf_counter() - t0
    env = Environment.objects.get(pk=seeded.environment_id)

    runs = 1 if members > 100_000 else 3
    best = float("inf")
    body = b""
    queries = 0
    for _ in range(runs):
        reset_queries()
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            doc = build_document(env)
            body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
            best = min(best, time.perf_counter() - start)
        queries = len(captured.captured_queries)
        del doc
    gz = gzip.compress(body, compresslevel=6)

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        f.write(body)
        path = f.name
    try:
        out = subprocess.run([sys.executable, str(HERE / "sdk_load.py"), path], check=True, capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "sdk")})
        sdk = json.loads(out.stdout)
    finally:
        os.unlink(path)
    return {
        "flags": flags, "members": members, "seed_s": round(seed_s, 2),
        "build_s": best, "build_queries": queries,
        "raw_bytes": len(body), "gzip_bytes": len(gz),
        **sdk,
        "loadavg_1m": os.getloadavg()[0],
    }


def mib(n: float) -> str:
    return f"{n / 1024 / 1024:.1f} MiB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KiB"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| flags | members | build (queries) | raw | gzip | SDK load | SDK RSS growth | tracemalloc peak / kept "
        "| decide (member / split) | load avg |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['flags']:,} | {r['members']:,} | {ms(r['build_s'])} ({r['build_queries']}) | {mib(r['raw_bytes'])} "
            f"| {mib(r['gzip_bytes'])} | {ms(r['load_s'])} | {mib(r['rss_delta_bytes'])} "
            f"| {mib(r['traced_peak_bytes'])} / {mib(r['traced_kept_bytes'])} "
            f"| {r['decide_us_member']:.2f} µs / {r['decide_us_split']:.2f} µs | {r['loadavg_1m']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small grid to check the script")
    parser.add_argument("--points", nargs="*", help="FLAGSxMEMBERS points instead of the default grid")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()

    from bench import seed

    seed.setup_django("turnout_bench_ruleset")
    if args.points:
        points = [(int(p.split("x")[0]), int(p.split("x")[1])) for p in args.points]
    elif args.quick:
        points = QUICK
    else:
        points = [HEADLINE, *GROWTH]
    rows = []
    for flags, members in points:
        row = measure(flags, members)
        rows.append(row)
        print(json.dumps(row), flush=True)
    seed.reset()
    result = {"machine": machine(), "python": platform.python_version(), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
