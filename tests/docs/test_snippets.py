"""Every code block of README.md, sdk/README.md and docs/*.md runs, as written, against a live
server (issue 18): a Python or shell block that fails fails this test, so no snippet can rot.

The test starts a real web process on a free port and a Celery worker over the demo data set (on
the test database, which ``python manage.py …`` in a block uses too), and gives the blocks
the variables ``var/demo.env`` sets after ``make run`` (``TURNOUT_URL``, ``TURNOUT_SDK_KEY`` of
``staging``, ``TURNOUT_TOKEN`` of the demo editor, ``TURNOUT_APPROVER_TOKEN``,
``TURNOUT_COMPLIANCE_TOKEN``). Each document runs in a working directory of its own holding links to the
repository's top-level entries (so ``python tools/verify_export.py`` works and what a block writes
stays out of the checkout). A block that cannot run here is marked ``<!-- snippet: skip REASON -->``
on the line before it; the skips are listed with their reasons when the test runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rollout.devsetup import demo_env, dev_setup
from tests.conftest import subprocess_env
from tests.docs.snippets import MarkerError, Snippet, documents, snippets

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("run_snippets.py")
SNIPPET_TIMEOUT = 300  # seconds for one document's blocks: a hung block fails instead of hanging


def all_snippets() -> list[Snippet]:
    return [s for doc in documents(ROOT) for s in snippets(doc)]


@pytest.fixture
def live(server_process: Any, celery_worker_process: Any, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[dict[str, str]]:
    """A live server (web process and Celery worker) over the demo as ``make run`` sets it up (the story,
    one person per role, SDK keys and API tokens), and the environment the snippets run in: the variables
    ``var/demo.env`` sets, and the test database for ``manage.py``."""
    access = dev_setup(url=server_process.url, var=tmp_path_factory.mktemp("var"))
    server_process.env["TURNOUT_THROTTLE_SDK"] = "1000000/min"
    server_process.start()
    bin_dir = str(Path(sys.executable).parent)
    demo = dict(line.removeprefix("export ").split("=", 1) for line in demo_env(access).splitlines())
    assert all(demo.values()), demo
    yield {
        **subprocess_env(),
        **demo,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def workdir(base: Path, doc: Path) -> Path:
    """A directory with links to the repository's top-level entries, where ``doc``'s blocks run."""
    where = base / doc.relative_to(ROOT).as_posix().replace("/", "__")
    where.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".git", ".venv"):
            (where / entry.name).symlink_to(entry)
    return where


def run_document(doc: Path, blocks: list[Snippet], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    payload = [{"where": f"{doc.relative_to(ROOT)}:{b.line}", "language": b.language, "code": b.code,
                "file": b.file} for b in blocks]
    return subprocess.run([sys.executable, str(RUNNER)], input=json.dumps(payload), capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=SNIPPET_TIMEOUT, check=False)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_docs_snippets__every_python_and_shell_block__runs_against_a_live_server(
    live: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failures: list[str] = []
    ran = skipped = files = 0
    skips: list[str] = []
    for doc in documents(ROOT):
        blocks = [b for b in snippets(doc) if b.language and (b.runs or b.file)]
        for b in snippets(doc):
            if b.language and b.skip is not None:
                skipped += 1
                skips.append(f"  {doc.relative_to(ROOT)}:{b.line} — {b.skip}")
        if not blocks:
            continue
        done = run_document(doc, blocks, live, workdir(tmp_path, doc))
        ran += sum(b.runs for b in blocks)
        files += sum(b.file is not None for b in blocks)
        if done.returncode != 0:
            failures.append(f"{doc.relative_to(ROOT)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    with capsys.disabled():
        print(f"\ndocs snippets: {ran} blocks run, {files} written as files, {skipped} skipped:")
        print("\n".join(skips))
    assert not failures, "\n\n".join(failures)
    assert ran > 0


def test_docs_snippets__markers__each_skip_has_a_reason_and_blocks_are_found() -> None:
    found = all_snippets()  # raises MarkerError for a skip without a reason or an unknown marker
    assert {s.path.name for s in found} >= {"README.md", "sdk-protocol.md"}
    assert all(s.skip for s in found if s.skip is not None)


def test_docs_snippets__marker__without_reason_or_unknown__refused(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("text\n\n<!-- snippet: skip -->\n```sh\nfalse\n```\n", encoding="utf-8")
    with pytest.raises(MarkerError, match="needs a reason"):
        snippets(doc)
    doc.write_text("<!-- snippet: skipp because -->\n```sh\nfalse\n```\n", encoding="utf-8")
    with pytest.raises(MarkerError, match="unknown marker"):
        snippets(doc)


def test_docs_snippets__extractor__languages_markers_and_lines(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# t\n\n```python\nx = 1\n```\n\n<!-- snippet: skip needs docker -->\n```sh\ndocker ps\n```\n\n"
        "<!-- snippet: file check.py -->\n```python\nprint(1)\n```\n\n```json\n{}\n```\n\n"
        "- a list\n\n  ```bash\n  echo in a list\n  ```\n\n<!-- a plain comment -->\n```sh\ntrue\n```\n",
        encoding="utf-8",
    )
    found = snippets(doc)
    assert [(s.line, s.language, s.skip, s.file, s.runs) for s in found] == [
        (3, "python", None, None, True),
        (8, "shell", "needs docker", None, False),
        (13, "python", None, "check.py", False),
        (17, "", None, None, False),
        (23, "shell", None, None, True),
        (28, "shell", None, None, True),
    ]
    assert found[4].code == "echo in a list\n"


def test_readme_five_lines__first_call_of_a_short_script__decides_with_the_servers_ruleset(
    live: dict[str, str], tmp_path: Path
) -> None:
    """The SDK README's quick start (once "Five lines"), pasted into a file and run: its first
    decision comes from the server's ruleset (before ``start_wait``, a short script always decided
    legacy, not ready)."""
    five = next(s for s in snippets(ROOT / "sdk" / "README.md") if s.language == "python")
    script = tmp_path / "quick_start.py"
    script.write_text(five.code, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=live, cwd=tmp_path,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "PROVIDER_NOT_READY" not in done.stdout
    assert "path=<Path.PARALLEL: 'parallel'>" in done.stdout and "reason=<Reason.SPLIT: 'SPLIT'>" in done.stdout


def test_docs_snippets__runner__a_failing_block_fails_naming_it(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("```python\nx = 41\n```\n\n```python\nassert x + 1 == 43, 'off by one'\n```\n", encoding="utf-8")
    payload = [{"where": f"doc.md:{b.line}", "language": b.language, "code": b.code, "file": b.file}
               for b in snippets(doc)]
    done = subprocess.run([sys.executable, str(RUNNER)], input=json.dumps(payload), capture_output=True, text=True,
                          cwd=tmp_path, timeout=60, check=False)
    assert done.returncode == 1
    assert "FAILED: the Python block at doc.md:5" in done.stderr and "off by one" in done.stderr
    shell = [{"where": "doc.md:1", "language": "shell", "code": "false | true\nexit 3\n", "file": None}]
    done = subprocess.run([sys.executable, str(RUNNER)], input=json.dumps(shell), capture_output=True, text=True,
                          cwd=tmp_path, timeout=60, check=False)
    # pipefail: the failed first command of the pipe fails the block before ``exit 3``
    assert done.returncode == 1 and "the shell block at doc.md:1 exited with 1" in done.stderr
