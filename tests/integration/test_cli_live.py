"""The `turnout` command against a live server process (uvicorn on loopback, the test database): the closing
note's walk — export the demo, change the files, plan (one change request, one direct change), apply, the
audit events carrying the commit id — and the levers, status and the audit export verified offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, ServerProcess

pytestmark = pytest.mark.services


def turnout(server: ServerProcess, token: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "TURNOUT_URL": server.url, "TURNOUT_TOKEN": token, "HOME": str(cwd or ROOT)}
    return subprocess.run([sys.executable, "-m", "turnout.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or ROOT, timeout=120, check=False)


@pytest.fixture
def live(server_process: ServerProcess) -> tuple[ServerProcess, str, str]:
    from rollout.demo import seed_demo
    from tests.api.conftest import make_user

    seed_demo()
    _, admin = make_user("ci-admin", ["admin"])
    _, editor = make_user("ci-editor", ["editor"])
    server_process.start()
    return server_process, admin, editor


def test_cli__export_change_plan_apply__change_request_and_direct_change_with_commit(
        live: tuple[ServerProcess, str, str], tmp_path: Path) -> None:
    from audit.models import AuditEvent
    from rollout.models import ChangeRequest, FlagState

    server, _, editor = live
    repo = tmp_path / "repo"
    config = repo / "turnout"
    exported = turnout(server, editor, "export", str(config))
    assert exported.returncode == 0, exported.stderr
    assert (config / "flags" / "customer-search.yaml").is_file()

    unchanged = turnout(server, editor, "plan", str(config))
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr
    assert "0 to create, 0 to change" in unchanged.stdout

    path = config / "flags" / "customer-search.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["flags"][0]["environments"]["staging"]["percentage"] = 80
    doc["flags"][0]["environments"]["production"]["percentage"] = 10
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    for git in (["init", "-q"], ["add", "."], ["-c", "user.name=ci", "-c", "user.email=ci@example.com", "commit", "-qm",
                                               "widen search"]):
        subprocess.run(["git", *git], cwd=repo, check=True, capture_output=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                            text=True).stdout.strip()

    planned = turnout(server, editor, "plan", str(config))
    assert planned.returncode == 2, planned.stderr
    assert "~ flag_state customer-search@staging: flag_state.updated" in planned.stdout
    assert "percentage: 50.0 -> 80" in planned.stdout
    assert "policy: applies directly" in planned.stdout
    assert "policy: needs approval: a change request — environment 'production' requires approval" in planned.stdout
    assert "1 direct, 1 change request(s), 0 refused" in planned.stdout

    as_json = turnout(server, editor, "plan", str(config), "--output", "json")
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["summary"]["request"] == 1

    applied = turnout(server, editor, "apply", str(config), "--reason", "search at 80% in staging")
    assert applied.returncode == 0, applied.stderr
    cr = ChangeRequest.objects.get(status="pending")
    assert f"change request #{cr.pk} {server.url}/changes/{cr.pk}/" in applied.stdout
    assert FlagState.objects.get(flag__key="customer-search", environment__key="staging").percentage == 80
    events = list(AuditEvent.objects.filter(reason__contains=f"at commit {commit}").order_by("sequence"))
    assert [e.action for e in events] == ["flag_state.updated", "change_request.created"]
    assert "turnout/flags/customer-search.yaml:" in events[0].reason

    again = turnout(server, editor, "plan", str(config))
    assert again.returncode == 2  # production waits for its approval
    assert "customer-search@production" in again.stdout and "customer-search@staging" not in again.stdout


def test_cli__bad_file__exit_1_naming_file_line_field(live: tuple[ServerProcess, str, str], tmp_path: Path) -> None:
    server, admin, _ = live
    (tmp_path / "flags.yaml").write_text("turnout: 1\nflags:\n  - key: x\n    workload: invoice-engine\n    colour: red\n")

    result = turnout(server, admin, "plan", str(tmp_path))

    assert result.returncode == 1
    assert "flags.yaml:5: flags[0].colour: unknown key" in result.stderr


def test_cli__stale_saved_plan__apply_refused(live: tuple[ServerProcess, str, str], tmp_path: Path) -> None:
    server, admin, _ = live
    config = tmp_path / "c"
    assert turnout(server, admin, "export", str(config)).returncode == 0
    path = config / "flags" / "notifications.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["flags"][0]["description"] = "changed in the files"
    path.write_text(yaml.safe_dump(doc))
    saved = tmp_path / "plan.json"
    assert turnout(server, admin, "plan", str(config), "--save", str(saved)).returncode == 2
    assert turnout(server, admin, "kill", "customer-search", "--env", "staging", "--reason", "meanwhile").returncode == 0

    result = turnout(server, admin, "apply", str(config), "--plan", str(saved))

    assert result.returncode == 1
    assert "HTTP 409" in result.stderr and "flag_state:customer-search@staging" in result.stderr


def test_cli__status_levers_and_audit_export_verified_offline(live: tuple[ServerProcess, str, str],
                                                              tmp_path: Path) -> None:
    server, admin, _ = live
    status = turnout(server, admin, "status", "--output", "json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["report-export"]["production"]["retired"] is True
    one = turnout(server, admin, "status", "customer-search")
    assert "readiness:" in one.stdout

    assert turnout(server, admin, "kill", "payment-routing", "--env", "staging", "--reason", "drill").returncode == 0
    promoted = turnout(server, admin, "promote", "customer-search", "--from", "staging", "--to", "production",
                       "--output", "json")
    assert promoted.returncode == 0, promoted.stderr
    assert json.loads(promoted.stdout)["applied"] is True
    again = turnout(server, admin, "kill", "payment-routing", "--env", "staging")
    assert again.returncode == 1 and "already off" in again.stderr

    out = tmp_path / "audit.jsonl"
    exported = turnout(server, admin, "audit", "export", str(out), "--filter", "action_prefix=flag_state.")
    assert exported.returncode == 0, exported.stderr
    verified = turnout(server, admin, "audit", "verify", str(out), str(out) + ".manifest.json", "--output", "json")
    assert verified.returncode == 0, verified.stdout
    assert json.loads(verified.stdout)["verified"] is True

    out.write_text(out.read_text().replace("drill", "DRILL"))
    tampered = turnout(server, admin, "audit", "verify", str(out), str(out) + ".manifest.json")
    assert tampered.returncode == 1 and "FAILED" in tampered.stdout


def test_cli__verifier_in_the_sdk__same_as_the_reviewers_tool() -> None:
    """`turnout audit verify` runs the verifier reviewers get as tools/verify_export.py, unchanged."""
    assert (ROOT / "sdk" / "turnout" / "_verify_export.py").read_bytes() == \
        (ROOT / "tools" / "verify_export.py").read_bytes()


