"""The SDK's install instructions are true (issue 18): ``pip install ./sdk`` from a checkout puts a
working, typed ``turnout`` into a fresh environment, and ``pip wheel --no-deps ./sdk -w dist`` builds
the wheel to ship — as sdk/README.md says (the package is not published on PyPI)."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import pathlib, sys, turnout
from turnout.testing import ruleset
here = pathlib.Path(turnout.__file__).resolve()
assert pathlib.Path(sys.prefix).resolve() in here.parents, here   # installed, not the checkout
assert (here.parent / "py.typed").is_file()
client = turnout.Turnout.offline(ruleset({"invoice-engine": "parallel"}))
print(client.decide("invoice-engine", "tenant-42").path)
"""


def _run(*args: str | Path, cwd: Path = ROOT) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_install__pip_install_sdk_path__a_fresh_environment_imports_a_typed_turnout(tmp_path: Path) -> None:
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    _run(python, "-m", "pip", "install", "--quiet", "./sdk")
    assert _run(python, "-c", CHECK, cwd=tmp_path).strip() == "parallel"


def test_install__pip_wheel_sdk__builds_the_wheel_to_ship(tmp_path: Path) -> None:
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "./sdk", "-w", tmp_path / "dist")
    wheels = sorted(p.name for p in (tmp_path / "dist").iterdir())
    assert wheels == ["turnout-0.1.0-py3-none-any.whl"]
