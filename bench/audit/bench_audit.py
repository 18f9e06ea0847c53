"""Audit benchmarks: export 1,000,000 events as CSV and JSON Lines, and verify the chain.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/turnout_bench python bench/audit/bench_audit.py [--events N]

Needs PostgreSQL (a database of its own: the script fills it). It generates the events once with a
correct hash chain (bulk COPY: a benchmark fixture, not the product's write path), then runs each
measurement in a fresh process and reports events per second and that process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def _setup() -> None:
    import django

    django.setup()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def generate(n: int) -> None:
    """Fill the bench database with ``n`` chained events (skipped when it already holds them)."""
    from django.core.management import call_command
    from django.db import connection

    from audit.chain import GENESIS_HASH, event_hash
    from audit.models import AuditChainHead, AuditEvent

    call_command("migrate", verbosity=0)
    if connection.vendor != "postgresql":
        sys.exit("the audit benchmark needs PostgreSQL (DATABASE_URL=postgres://…)")
    have = AuditEvent.objects.count()
    if have >= n:
        print(f"bench database already holds {have} events", file=sys.stderr)
        return
    if have:
        sys.exit(f"bench database holds {have} events (< {n}): use an empty database")
    start, t0 = datetime(2026, 1, 1, tzinfo=UTC), time.perf_counter()
    prev = GENESIS_HASH
    columns = ("sequence", "occurred_at", "actor_type", "actor", "action", "object_type", "object_key",
               "environment", "before", "after", "reason", "request_id", "prev_hash", "hash")
    connection.ensure_connection()
    with connection.connection.cursor() as cur, cur.copy(
            f"COPY audit_auditevent ({', '.join(columns)}) FROM STDIN") as copy:
        for i in range(1, n + 1):
            pct = float(i % 100)
            snapshot = {"flag": f"flag-{i % 50}", "environment": "production", "enabled": True, "retired": False,
                        "percentage": pct, "compare_percentage": 10.0, "include_cohorts": ["pilot-eu"],
                        "exclude_cohorts": [], "overrides": {}, "stage": i % 5, "version": i}
            event = {"sequence": i, "occurred_at": start + timedelta(milliseconds=i), "actor_type": "user",
                     "actor": f"user-{i % 20} via tok_{i % 7:08d}", "action": "flag_state.updated",
                     "object_type": "flag_state", "object_key": f"flag-{i % 50}@production",
                     "environment": "production", "before": {**snapshot, "percentage": max(pct - 1, 0.0)},
                     "after": snapshot, "reason": "widen after a clean day" if i % 3 else "",
                     "request_id": f"{i:032x}"}
            digest = event_hash(prev, event)
            copy.write_row([event[c] if c not in ("before", "after") else json.dumps(event[c])
                            for c in columns[:-2]] + [prev, digest])
            prev = digest
    AuditChainHead.objects.filter(pk=1).update(sequence=n, hash=prev)
    print(f"generated {n} events in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def run_export(fmt: str, out: str) -> dict[str, object]:
    from audit.exports import write_export_file, write_manifest
    from audit.services import audit_export_create
    from common.actors import Actor

    baseline = current_rss_mb()
    export = audit_export_create(actor=Actor.system("bench"), format=fmt, filters={}, background=False)
    t0 = time.perf_counter()
    manifest = write_export_file(export, Path(out))
    seconds = time.perf_counter() - t0
    write_manifest(Path(out + ".manifest.json"), manifest)
    return {"what": f"export {fmt}", "events": manifest["count"], "seconds": round(seconds, 2),
            "events_per_s": round(manifest["count"] / seconds), "bytes": manifest["files"][0]["bytes"],
            "rss_before_mb": round(baseline, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}


def run_verify() -> dict[str, object]:
    from audit.verify import verify_chain

    baseline = current_rss_mb()
    t0 = time.perf_counter()
    report = verify_chain()
    seconds = time.perf_counter() - t0
    assert report.ok, report
    return {"what": "verify chain (database)", "events": report.checked, "seconds": round(seconds, 2),
            "events_per_s": round(report.checked / seconds), "rss_before_mb": round(baseline, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def run_offline(path: str) -> dict[str, object]:
    sys.path.insert(0, str(ROOT / "tools"))
    import verify_export

    t0 = time.perf_counter()
    manifest = verify_export.verify(path, path + ".manifest.json", report=lambda _: None)
    seconds = time.perf_counter() - t0
    return {"what": f"offline verify {Path(path).suffix[1:]} (tools/verify_export.py)", "events": manifest["count"],
            "seconds": round(seconds, 2), "events_per_s": round(manifest["count"] / seconds),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def _child(*args: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--out-dir", default="/tmp")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "offline":
            print(json.dumps(run_offline(rest[0])))
            return
        _setup()
        print(json.dumps(run_export(*rest) if kind == "export" else run_verify()))
        return
    _setup()
    generate(args.events)
    results = []
    for fmt in ("csv", "jsonl"):
        path = str(Path(args.out_dir) / f"bench-audit.{fmt}")
        results.append(_child("--child", "export", fmt, path))
        results.append(_child("--child", "offline", path))
    results.append(_child("--child", "verify"))
    print(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
