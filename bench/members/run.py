"""Million-member cohorts: the member list inline in the ruleset against a member-list document.

    python bench/members/run.py                  # 1,000,000 members, SDK side (no database needed)
    python bench/members/run.py --members 200000
    python bench/members/run.py --server         # + the server's builds, with PostgreSQL (DATABASE_URL)

SDK side, each form loaded in a fresh process (``sdk_load.py``) from the gzip bytes an SDK downloads:
- **inline**: the ruleset (schema 1) with the cohort's 1M members in ``include``, what SDKs that do not ask
  for references get (and what every SDK got before);
- **members**: the ruleset with a reference (schema 2) plus the cohort's member-list document
  (``turnout.members``), built by the server's own builder (``MemberList.from_values``).
For each: download size (gzip), load time, RSS growth and tracemalloc peak / kept, and ``Ruleset.decide``
per call (median and p99 over 100,000 members and 100,000 non-members; a flag including the cohort at a
25% split, so a non-member pays the cohort check and the split). Then what one change costs on the wire:
the inline form downloads the whole ruleset again; the members form a delta (``?since=``) of the list.

``--server`` seeds 10 flags and the cohort in PostgreSQL (``bench/seed.py``) and times the ruleset builds
of both forms and the member-list build, and counts member-list builds across an unrelated flag change.
Results go to ``bench/members/results.json``; ``--markdown`` prints the tables recorded in bench/README.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "sdk"))

from bench.machine import machine  # noqa: E402


def documents(members: int) -> dict[str, Any]:
    from turnout.members import MemberList, diff, encode, encode_delta

    values = [f"user-{i:07d}" for i in range(members)]
    flags: dict[str, Any] = {f"filler-{i}": {"enabled": True, "percentage": 25.0} for i in range(9)}
    flags["pilot-flag"] = {"enabled": True, "percentage": 25.0, "include_cohorts": ["pilot"], "salt": "pilot-flag"}
    inline = {"schema": 1, "environment": "production", "version": 1, "flags": flags,
              "cohorts": {"pilot": {"match_on": None, "rules": None, "include": values, "exclude": []}}}
    referenced = {"schema": 2, "environment": "production", "version": 1, "flags": flags,
                  "cohorts": {"pilot": {"match_on": None, "rules": None,
                                        "members": {"version": 1, "count": members}}}}
    started = time.perf_counter()
    listed = MemberList.from_values("pilot", 1, values)
    build_s = time.perf_counter() - started
    body = encode(listed)
    inline_raw = json.dumps(inline, separators=(",", ":")).encode()
    ref_raw = json.dumps(referenced, separators=(",", ":")).encode()
    # One change: a member added and one removed (the list's next version), and 1,000 of each.
    changes = {}
    for n in (1, 1000):
        changed = MemberList.from_values("pilot", 2, values[n:] + [f"new-{i}" for i in range(n)])
        delta = diff(listed, changed)
        assert delta is not None
        changes[n] = len(gzip.compress(encode_delta(delta), 6, mtime=0))
    return {
        "inline_raw": inline_raw, "inline_gz": gzip.compress(inline_raw, 6, mtime=0),
        "ref_raw": ref_raw, "ref_gz": gzip.compress(ref_raw, 6, mtime=0),
        "list_raw": body, "list_gz": gzip.compress(body, 6, mtime=0), "list_build_s": build_s,
        "delta_gz": changes, "list_nbytes": listed.nbytes,
    }


def load(form: str, *paths: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(HERE / "sdk_load.py"), form, *paths], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "sdk")})
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def server_side(members: int) -> dict[str, Any]:
    """Builds on the server: both ruleset forms and the member list, and the builds an unrelated change causes."""
    from bench import seed

    seed.setup_django("turnout_bench_members")
    from rollout.delivery import members as members_module
    from rollout.delivery.ruleset import build_document
    from rollout.models import Environment, FlagState

    seed.reset()
    seeded = seed.seed(flags=10, members=members)
    env = Environment.objects.get(pk=seeded.environment_id)
    out: dict[str, Any] = {}
    for refs in (False, True):
        started = time.perf_counter()
        body = json.dumps(build_document(env, refs=refs), separators=(",", ":")).encode()
        out["ruleset_build_s_" + ("refs" if refs else "inline")] = time.perf_counter() - started
        out["ruleset_bytes_" + ("refs" if refs else "inline")] = len(body)
    members_module.clear_local()
    before = members_module.built_count()
    started = time.perf_counter()
    members_module.member_list("pilot", need="gz")
    out["list_build_s"] = time.perf_counter() - started
    # An unrelated flag change, then the new ruleset version with references and the list again (cached).
    FlagState.objects.filter(environment=env, flag__key=seeded.flags[0]).update(percentage=42)
    seed.bump_version(env.pk)
    env.refresh_from_db()
    started = time.perf_counter()
    build_document(env, refs=True)
    out["ruleset_rebuild_s_refs"] = time.perf_counter() - started
    members_module.clear_local()
    members_module.member_list("pilot", need="gz")
    out["list_builds_for_first_fetch"] = 1
    out["list_builds_after_unrelated_change"] = members_module.built_count() - before - 1
    return out


def mib(n: float) -> str:
    return f"{n / 1024 / 1024:.2f} MiB" if n >= 1024 * 1024 else f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def markdown(r: dict[str, Any]) -> str:
    i, m = r["inline"], r["members_form"]
    lines = [
        f"{r['members']:,} listed members · {r['machine']['at']} · {r['machine']['cpu']} × {r['machine']['nproc']} · Python {r['machine']['python']} · "
        f"load average {r['loadavg_before']} → {r['loadavg_after']} · `{r['command']}`",
        "",
        "| form | download (gzip) | load | RSS growth | tracemalloc peak / kept | decide member median (p99) "
        "| decide non-member median (p99) | one change on the wire |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| inline (schema 1) | {mib(r['sizes']['inline_gz'])} | {i['load_s'] * 1000:.0f} ms "
        f"| {mib(i['rss_delta_bytes'])} | {mib(i['traced_peak_bytes'])} / {mib(i['traced_kept_bytes'])} "
        f"| {i['decide_ns_member']} ns ({i['p99_ns_member']}) | {i['decide_ns_outsider']} ns ({i['p99_ns_outsider']}) "
        f"| {mib(r['sizes']['inline_gz'])} (the whole ruleset) |",
        f"| member list (schema 2 + list) | {mib(r['sizes']['ref_gz'])} + {mib(r['sizes']['list_gz'])} "
        f"| {m['load_s'] * 1000:.0f} ms | {mib(m['rss_delta_bytes'])} "
        f"| {mib(m['traced_peak_bytes'])} / {mib(m['traced_kept_bytes'])} "
        f"| {m['decide_ns_member']} ns ({m['p99_ns_member']}) | {m['decide_ns_outsider']} ns ({m['p99_ns_outsider']}) "
        f"| {mib(r['sizes']['delta_gz']['1'])} (1 in, 1 out); {mib(r['sizes']['delta_gz']['1000'])} (1,000 each) |",
        "",
        f"Ratios (member list / inline): memory kept {m['traced_kept_bytes'] / i['traced_kept_bytes']:.3f}, "
        f"load {m['load_s'] / i['load_s']:.3f}, first download "
        f"{(r['sizes']['ref_gz'] + r['sizes']['list_gz']) / r['sizes']['inline_gz']:.2f}, decide member "
        f"{m['decide_ns_member'] / i['decide_ns_member']:.2f}, decide non-member "
        f"{m['decide_ns_outsider'] / i['decide_ns_outsider']:.2f}. Every sampled member decided parallel in both "
        f"forms ({i['members_parallel']:,} / {m['members_parallel']:,} of {m['members_sampled']:,}); non-members "
        f"on the 25% split: {i['outsiders_parallel']:,} / {m['outsiders_parallel']:,} (identical by construction).",
    ]
    if "server" in r:
        s = r["server"]
        lines += ["", f"Server (PostgreSQL, {r['members']:,} members, 10 flags): ruleset build inline "
                      f"{s['ruleset_build_s_inline'] * 1000:.0f} ms ({mib(s['ruleset_bytes_inline'])}), with the "
                      f"reference {s['ruleset_build_s_refs'] * 1000:.0f} ms ({mib(s['ruleset_bytes_refs'])}); the "
                      f"member list {s['list_build_s'] * 1000:.0f} ms once per list version; after an unrelated "
                      f"flag change the ruleset rebuilds in {s['ruleset_rebuild_s_refs'] * 1000:.0f} ms and the "
                      f"list is built {s['list_builds_after_unrelated_change']} more times."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--server", action="store_true", help="also time the server's builds (PostgreSQL)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    docs = documents(args.members)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name in ("inline_gz", "ref_gz", "list_gz"):
            paths[name] = os.path.join(tmp, name)
            with open(paths[name], "wb") as f:
                f.write(docs[name])
        inline = load("inline", paths["inline_gz"])
        members = load("members", paths["ref_gz"], paths["list_gz"])
    result: dict[str, Any] = {
        "members": args.members, "machine": machine(), "command": "python bench/members/run.py " + " ".join(
            sys.argv[1:]),
        "inline": inline, "members_form": members, "sizes": {
            k: len(docs[k]) for k in ("inline_raw", "inline_gz", "ref_raw", "ref_gz", "list_raw", "list_gz")
        } | {"delta_gz": {str(k): v for k, v in docs["delta_gz"].items()}},
        "list_build_s_sdk_builder": docs["list_build_s"], "list_nbytes": docs["list_nbytes"],
    }
    if args.server:
        result["server"] = server_side(args.members)
    result["loadavg_before"] = load_before
    result["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result) if args.markdown else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
