"""Worst cases of cohort `matches` patterns (turnout._regex): how slow can one search get?

Each case runs in a child process with a deadline (a backtracking search holds the GIL), so an
engine or a pattern that would hang shows as "> deadline" instead of stalling the run.

    python3.11 bench/regex/run.py              # the table recorded in bench/README.md
    python3.11 bench/regex/run.py --fuzz 2000  # also: random patterns the static check accepts,
                                               # each timed on adversarial values of 1,024 chars
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

SDK = Path(__file__).resolve().parents[2] / "sdk"
DEADLINE = 20.0
CAP = 1024

CHILD = r"""
import json, re, sys, time
engine, pattern, value, repeat = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if engine == "re2":
    import re2
    options = re2.Options(); options.log_errors = False
    search = re2.compile(pattern, options).search
elif engine == "re":
    search = re.compile(pattern).search
else:  # what the engine does: turnout._regex.compile_search (with RE2, or on a host without it)
    if engine == "turnout-no-re2":
        sys.modules["re2"] = None
    from turnout._regex import compile_search
    search = compile_search(pattern)
    if isinstance(search, str):
        print(json.dumps({"skipped": search})); sys.exit()
best = float("inf")
for _ in range(repeat):
    start = time.perf_counter(); search(value); best = min(best, time.perf_counter() - start)
print(json.dumps({"seconds": best}))
"""

CASES = [
    # (label, pattern, value)
    ("evil (a+)+$", r"(a+)+$", "a" * 64 + "!"),
    ("evil (a\\|aa)+$", r"(a|aa)+$", "a" * 64 + "!"),
    ("evil (.*a){20}", r"(.*a){20}", "b" * 500 + "a" * 19 + "b" * 100),
    ("evil (a+)+$, 1,024 chars", r"(a+)+$", "a" * (CAP - 1) + "!"),
    ("accepted a*b, 1,024 a's", r"a*b", "a" * CAP),
    ("accepted x.*Chrome/, 1,024 x's", r"x.*Chrome/", "x" * CAP),
    ("accepted ^\\d+(\\.\\d+)*$, 1,024 chars", r"^\d+(\.\d+)*$", "1." * (CAP // 2 - 1) + "x"),
    ("accepted [a-z]+@[a-z]+\\.com", r"[a-z]+@[a-z]+\.com", "a" * CAP),
    ("accepted (?i)chrome, a user agent", r"(?i)chrome",
     "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"),
]


def timed(engine: str, pattern: str, value: str, repeat: int = 5) -> str:
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, engine, pattern, value, str(repeat)], cwd=SDK,
                             capture_output=True, text=True, timeout=DEADLINE, check=True)
    except subprocess.TimeoutExpired:
        return f"> {DEADLINE:.0f} s"
    result = json.loads(out.stdout)
    if "skipped" in result:
        return "refused (condition false)"
    seconds = result["seconds"]
    return f"{seconds * 1e6:,.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"


ATOMS = ["a", "b", ".", r"\d", r"\w", "[ab]", "[^a]", "(?:ab)", "x"]
QUANTS = ["", "", "*", "+", "?", "{2}", "{1,3}"]


def random_pattern(rng: random.Random, depth: int = 0) -> str:
    parts = []
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if roll < 0.15 and depth < 2:
            atom = "(" + random_pattern(rng, depth + 1) + ")"
        elif roll < 0.25 and depth < 2:
            atom = "(" + random_pattern(rng, depth + 1) + "|" + random_pattern(rng, depth + 1) + ")"
        else:
            atom = rng.choice(ATOMS)
        parts.append(atom + rng.choice(QUANTS))
    return "".join(parts)


def fuzz(count: int) -> None:
    sys.path.insert(0, str(SDK))
    from turnout._regex import backtracking_problem

    rng = random.Random(13)
    values = ["a" * CAP, "ab" * (CAP // 2), "a" * (CAP - 1) + "!", "1" * CAP, "aab" * (CAP // 3)]
    accepted = worst = 0.0
    worst_case = ("", "")
    tried = 0
    while tried < count:
        pattern = random_pattern(rng)
        if backtracking_problem(pattern) is not None:
            continue
        tried += 1
        accepted += 1
        for value in values:
            out = subprocess.run([sys.executable, "-c", CHILD, "re", pattern, value, "1"], cwd=SDK,
                                 capture_output=True, text=True, timeout=DEADLINE)
            seconds = json.loads(out.stdout)["seconds"] if out.returncode == 0 else DEADLINE
            if seconds > worst:
                worst, worst_case = seconds, (pattern, value[:12] + "…")
    print(f"fuzz: {int(accepted)} accepted random patterns × {len(values)} adversarial values of {CAP} chars; "
          f"slowest search {worst * 1e3:.2f} ms ({worst_case[0]!r} on {worst_case[1]!r})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fuzz", type=int, default=0)
    args = parser.parse_args()
    print("| case | plain Python re | RE2 (google-re2) | turnout, RE2 installed | turnout without RE2 |")
    print("|---|---|---|---|---|")
    for label, pattern, value in CASES:
        print(f"| {label} | {timed('re', pattern, value, 1)} | {timed('re2', pattern, value)} "
              f"| {timed('turnout', pattern, value)} | {timed('turnout-no-re2', pattern, value)} |", flush=True)
    if args.fuzz:
        fuzz(args.fuzz)


if __name__ == "__main__":
    main()
