"""Loads one serialized ruleset the way the SDK does, in a fresh process, and reports cost as JSON.

    python bench/ruleset/sdk_load.py RULESET.json

Prints {"parse_s", "compile_s", "load_s", "rss_delta_bytes", "traced_peak_bytes", "traced_kept_bytes",
"decide_us_member", "decide_us_split"}. Stdlib and the ``turnout`` SDK only: no Django here.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import tracemalloc


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(path: str) -> None:
    from turnout.engine import compile_ruleset

    with open(path, "rb") as f:
        body = f.read()
    gc.collect()
    rss_before = rss_bytes()
    start = time.perf_counter()
    doc = json.loads(body)
    parsed = time.perf_counter()
    ruleset = compile_ruleset(doc)
    compiled = time.perf_counter()
    rss_after = rss_bytes()

    # The same load under tracemalloc (slower, so timed separately above): peak and what stays.
    del ruleset, doc
    gc.collect()
    tracemalloc.start()
    doc = json.loads(body)
    ruleset = compile_ruleset(doc)
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    flags = sorted(ruleset.flag_keys)
    members = doc["cohorts"].get("pilot", {}).get("include", []) or ["nobody"]
    n = 200_000
    outsiders = [f"outsider-{i}" for i in range(n)]
    contexts = [{"tenant_id": f"t-{i}", "country": "DE"} for i in range(5000)]
    t0 = time.perf_counter()
    for i in range(n):
        ruleset.decide(flags[i % len(flags)], members[i % len(members)], None)
    t1 = time.perf_counter()
    for i in range(n):
        ruleset.decide(flags[i % len(flags)], outsiders[i], contexts[i % 5000])
    t2 = time.perf_counter()
    print(json.dumps({
        "parse_s": parsed - start,
        "compile_s": compiled - parsed,
        "load_s": compiled - start,
        "rss_delta_bytes": rss_after - rss_before,
        "traced_peak_bytes": peak,
        "traced_kept_bytes": kept,
        "decide_us_member": (t1 - t0) / n * 1e6,
        "decide_us_split": (t2 - t1) / n * 1e6,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
