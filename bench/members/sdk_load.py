"""Loads one cohort the way the SDK does, in a fresh process, and reports the cost as JSON.

    python bench/members/sdk_load.py inline RULESET.json.gz
    python bench/members/sdk_load.py members RULESET.json.gz LIST.tmbr.gz

``inline``: the ruleset with the member list in it (what an SDK that does not ask for references gets):
gunzip + ``json.loads`` + ``compile_ruleset``. ``members``: the small ruleset with a member-list reference
plus the member-list document: gunzip both, ``json.loads``, ``turnout.members.decode``,
``compile_ruleset(doc, {cohort: list})`` — what the sync thread does. Both from the gzip bytes an SDK
downloads. Prints {"load_s", "rss_delta_bytes", "traced_peak_bytes", "traced_kept_bytes",
"decide_ns_member", "decide_ns_outsider", "p99_ns_member", "p99_ns_outsider", "members_parallel",
"outsiders_parallel"}. Stdlib and the ``turnout`` SDK only.
"""

from __future__ import annotations

import gc
import gzip
import json
import os
import sys
import time
import tracemalloc
from typing import Any


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def load(form: str, ruleset_gz: bytes, list_gz: bytes | None) -> Any:
    from turnout.engine import compile_ruleset
    from turnout.members import decode

    doc = json.loads(gzip.decompress(ruleset_gz))
    if form == "inline":
        return compile_ruleset(doc)
    assert list_gz is not None
    listed = decode(gzip.decompress(list_gz))
    return compile_ruleset(doc, {listed.cohort: listed})


def timed(decide: Any, flag: str, keys: list[str]) -> tuple[list[int], int]:
    clock = time.perf_counter_ns
    samples = []
    parallel = 0
    for key in keys:
        t0 = clock()
        d = decide(flag, key)
        t1 = clock()
        samples.append(t1 - t0)
        parallel += d.path == "parallel"
    return samples, parallel


def main(form: str, ruleset_path: str, list_path: str | None = None) -> None:
    with open(ruleset_path, "rb") as f:
        ruleset_gz = f.read()
    list_gz = None
    if list_path:
        with open(list_path, "rb") as f:
            list_gz = f.read()
    gc.collect()
    rss_before = rss_bytes()
    start = time.perf_counter()
    ruleset = load(form, ruleset_gz, list_gz)
    load_s = time.perf_counter() - start
    gc.collect()
    rss_after = rss_bytes()

    del ruleset
    gc.collect()
    tracemalloc.start()
    ruleset = load(form, ruleset_gz, list_gz)
    gc.collect()
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    n = 100_000
    step = 1_000_000 // n
    members = [f"user-{i:07d}" for i in range(0, 1_000_000, step)]
    outsiders = [f"outsider-{i}" for i in range(n)]
    decide = ruleset.decide
    timed(decide, "pilot-flag", members[:10_000] + outsiders[:10_000])  # warm-up
    empty = []
    clock = time.perf_counter_ns
    for _ in range(10_000):
        t0 = clock()
        t1 = clock()
        empty.append(t1 - t0)
    floor = sorted(empty)[len(empty) // 2]
    m, m_parallel = timed(decide, "pilot-flag", members)
    o, o_parallel = timed(decide, "pilot-flag", outsiders)
    m.sort()
    o.sort()
    print(json.dumps({
        "load_s": load_s, "rss_delta_bytes": rss_after - rss_before, "traced_peak_bytes": peak,
        "traced_kept_bytes": kept,
        "decide_ns_member": m[len(m) // 2] - floor, "decide_ns_outsider": o[len(o) // 2] - floor,
        "p99_ns_member": m[len(m) * 99 // 100] - floor, "p99_ns_outsider": o[len(o) * 99 // 100] - floor,
        "members_parallel": m_parallel, "members_sampled": len(members), "outsiders_parallel": o_parallel,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
