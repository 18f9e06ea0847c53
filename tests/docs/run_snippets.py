"""Runs one document's code blocks in order (the docs test starts it once per document).

Reads ``[{"where", "language", "code", "file"}]`` as JSON on stdin; the working directory is the
document's own. Python blocks share one namespace; shell blocks run in ``bash -euo pipefail``.
Stops at the first block that fails, naming it on stderr, and exits 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any


def main() -> int:
    blocks: list[dict[str, Any]] = json.load(sys.stdin)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for block in blocks:
        where, code = block["where"], block["code"]
        print(f"--- {where} ({block['file'] or block['language']})", flush=True)
        if block["file"]:
            Path(block["file"]).write_text(code, encoding="utf-8")
            continue
        if block["language"] == "python":
            try:
                exec(compile(code, where, "exec"), namespace)
            except BaseException:
                traceback.print_exc()
                print(f"FAILED: the Python block at {where}", file=sys.stderr)
                return 1
            sys.stdout.flush()
        else:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], check=False)
            if done.returncode != 0:
                print(f"FAILED: the shell block at {where} exited with {done.returncode}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
