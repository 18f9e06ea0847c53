"""Run the decide() benchmark: every SDK in its own interpreter, one side-by-side table.

    python3.11 bench/decide/run.py                # creates bench/decide/.venv on first use
    python3.11 bench/decide/run.py --repeat 3 --markdown

The peer SDKs live only in bench/decide/.venv (bench/decide/requirements.txt); they are never
dependencies of the SDK or the server. Turnout itself is imported from sdk/ (stdlib only).
Nothing touches the network once the venv exists.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENV = HERE / ".venv"
ADAPTERS = ["floor", "turnout", "turnout_evaluate", "growthbook", "flagsmith", "unleash", "launchdarkly"]


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> None:
    if venv_python().exists():
        return
    print(f"creating {VENV.relative_to(ROOT)} with the peer SDKs ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(venv_python()), "-m", "pip", "install", "-q", "-r", str(HERE / "requirements.txt")], check=True)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    version = subprocess.run(
        [str(venv_python()), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return f"nproc={os.cpu_count()}, CPU: {cpu}, Python {version} ({platform.system()} {platform.machine()})"


def run_adapter(name: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "sdk"), PYTHONHASHSEED="0")
    proc = subprocess.run(
        [str(venv_python()), str(HERE / "adapters.py"), name], capture_output=True, text=True, env=env, timeout=1800
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        return {"adapter": name, "label": name, "error": lines[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per scenario, the repeat with the lowest median (the least disturbed by other load)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    best = dict(ok[0], scenarios={})
    for scenario in ok[0]["scenarios"]:
        best["scenarios"][scenario] = min((r["scenarios"][scenario] for r in ok), key=lambda s: s["median_us"])
    return best


def table(results: list[dict[str, Any]], markdown: bool) -> str:
    head = ["SDK", "A median", "A p99", "B median", "B p99", "C median", "C p99", "parallel A/B/C"]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["label"], *(["n/a"] * 6), f"failed: {r['error']}"])
            continue
        sc = r["scenarios"]
        cells = [r["label"]]
        for s in ("A", "B", "C"):
            cells += [f"{sc[s]['median_us']:.2f} µs", f"{sc[s]['p99_us']:.2f} µs"]
        if r["adapter"] == "floor":
            cells.append("(hash only)")
        else:
            cells.append("/".join(f"{sc[s]['parallel_share'] * 100:.1f}%" for s in ("A", "B", "C")))
        rows.append(cells)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * 6 + ["---:"]) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(out)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*row) for row in [head, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1, help="runs per SDK; the best median per scenario is kept")
    parser.add_argument("--only", nargs="*", choices=ADAPTERS, help="run only these adapters")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    ensure_venv()
    names = args.only or ADAPTERS
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for i in range(args.repeat):
        for name in names:  # interleaved, so that a burst of outside load hits every SDK alike
            print(f"[{i + 1}/{args.repeat}] {name} ...", file=sys.stderr, flush=True)
            runs[name].append(run_adapter(name))
    print(machine())
    print("100,000 distinct keys, 1,000 flags loaded; per-call times, timer overhead subtracted")
    print(table([best_of(runs[n]) for n in names], args.markdown))


if __name__ == "__main__":
    main()
