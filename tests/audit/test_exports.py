"""Exports: streamed CSV / JSON Lines, signed manifests, offline verification, background jobs."""

from __future__ import annotations

import ast
import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.chain import CHAINED_FIELDS, GENESIS_HASH, canonical_json, event_hash, format_time
from audit.exports import iter_events
from audit.models import AuditEvent, AuditExport
from audit.verify import verify_chain

ROOT = Path(__file__).resolve().parents[2]


def _download(client: Any, url: str) -> tuple[Any, bytes]:
    response = client.get(url)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body


def _export(client: Any, query: str, tmp_path: Path) -> tuple[Path, Path, dict[str, Any], Any]:
    response, body = _download(client, f"/api/v1/audit/export?{query}")
    assert response.status_code == 200, body[:300]
    manifest_url = response["Link"].split(";")[0].strip("<>")
    manifest = client.get(manifest_url).json()
    name = response["Content-Disposition"].split('filename="')[1].rstrip('"')
    data, man = tmp_path / name, tmp_path / f"{name}.manifest.json"
    data.write_bytes(body)
    man.write_text(json.dumps(manifest))
    return data, man, manifest, response


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export__whole_log__rows_match_the_chain_and_verify_offline(history, api_as, verifier, tmp_path, fmt):
    client = api_as("compliance")
    before = AuditEvent.objects.count()
    data, man, manifest, response = _export(client, f"format={fmt}", tmp_path)
    assert response["Content-Type"].startswith("text/csv" if fmt == "csv" else "application/x-ndjson")
    # The export's own event comes right after the range, so the range is exactly the events before it.
    export_event = AuditEvent.objects.get(action="audit.exported")
    assert export_event.sequence == before + 1 == manifest["audit_sequence"]
    assert manifest["chain_head"]["sequence"] == before == manifest["count"] == manifest["last_sequence"]
    assert manifest["complete_prefix"] is True and manifest["first_prev_hash"] == GENESIS_HASH
    assert manifest["last_hash"] == AuditEvent.objects.get(sequence=before).hash
    assert export_event.after == {"kind": "events", "format": fmt, "filters": {}, "subject": None,
                                  "count": before, "until_sequence": before, "background": False}
    # Every row carries its chain fields; the JSONL line is the canonical JSON plus prev_hash and hash.
    if fmt == "jsonl":
        lines = data.read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        first = AuditEvent.objects.get(sequence=1)
        expected = {name: getattr(first, name) for name in CHAINED_FIELDS} | {
            "occurred_at": format_time(first.occurred_at), "prev_hash": first.prev_hash, "hash": first.hash}
        assert lines[0] == json.dumps(expected, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    else:
        rows = list(csv.DictReader(io.StringIO(data.read_text())))
    assert [int(r["sequence"]) for r in rows] == list(range(1, before + 1))
    assert [r["hash"] for r in rows] == list(AuditEvent.objects.filter(sequence__lte=before).values_list(
        "hash", flat=True))
    said: list[str] = []
    assert verifier.verify(str(data), str(man), report=said.append)["count"] == before
    assert any("signature" in line for line in said)
    # Exporting did not break the chain, and the export's manifest is kept.
    assert verify_chain().ok
    assert AuditExport.objects.get(pk=response["X-Audit-Export-Id"]).manifest == manifest


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export__one_byte_changed__offline_verification_fails(history, api_as, verifier, tmp_path, fmt):
    data, man, _, _ = _export(api_as("compliance"), f"format={fmt}", tmp_path)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(verifier.VerificationError, match="was changed"):
        verifier.verify(str(data), str(man), report=lambda _: None)


@pytest.mark.django_db
def test_export__rows_recomputed_after_rehashing__still_fails_on_the_file_digest(history, api_as, verifier, tmp_path):
    """Editing a row and recomputing every later hash makes a self-consistent file; the signed digest catches it."""
    data, man, _, _ = _export(api_as("compliance"), "format=jsonl", tmp_path)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[2]["reason"] = "nothing to see"
    prev = rows[2]["prev_hash"]
    for row in rows[2:]:
        row["prev_hash"] = prev
        row["hash"] = prev = event_hash(prev, row)
    data.write_text("".join(canonical_json(r) + "\n" for r in rows))
    with pytest.raises(verifier.VerificationError, match="was changed"):
        verifier.verify(str(data), str(man), report=lambda _: None)


@pytest.mark.django_db
def test_export__manifest_edited__signature_fails(history, api_as, verifier, tmp_path):
    data, man, manifest, _ = _export(api_as("compliance"), "format=csv", tmp_path)
    man.write_text(json.dumps({**manifest, "count": manifest["count"] - 1}))
    with pytest.raises(verifier.VerificationError, match="signature is not valid"):
        verifier.verify(str(data), str(man), report=lambda _: None)


@pytest.mark.django_db
def test_export__signed_by_an_untrusted_key__refused(history, api_as, verifier, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data, man, _, _ = _export(api_as("compliance"), "format=csv", tmp_path)
    other = tmp_path / "other.pem"
    other.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(verifier.VerificationError, match="not among the trusted keys"):
        verifier.verify(str(data), str(man), [str(other)], report=lambda _: None)


@pytest.mark.django_db
@pytest.mark.parametrize(("query", "expected"), [
    ("actor=system:guardrail", {"flag_state.killed"}),
    ("action=flag.created", {"flag.created"}),
    ("action_prefix=cohort.", {"cohort.created", "cohort.members_added"}),
    ("object_type=flag_state&object_key=search-v2@production", {"flag_state.updated"}),
    ("environment=staging&object_type=sdk_key", {"sdk_key.created"}),
    ("sequence_from=3&sequence_to=3", {"workload.created"}),
])
def test_export__filters__only_matching_events_and_manifest_names_them(history, api_as, verifier, tmp_path, query,
                                                                         expected):
    data, man, manifest, _ = _export(api_as("compliance"), f"format=jsonl&{query}", tmp_path)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    assert {r["action"] for r in rows} == expected
    assert manifest["filters"] == dict(sorted(p.split("=") for p in query.split("&")))
    assert manifest["complete_prefix"] is False
    verifier.verify(str(data), str(man), report=lambda _: None)


@pytest.mark.django_db
def test_export__time_range__since_inclusive_until_exclusive(history, api_as, tmp_path):
    third = AuditEvent.objects.get(sequence=3).occurred_at.isoformat()
    fifth = AuditEvent.objects.get(sequence=5).occurred_at.isoformat()
    from urllib.parse import urlencode

    data, _, _, _ = _export(api_as("compliance"), urlencode({"format": "jsonl", "since": third,
                                                                      "until": fifth}), tmp_path)
    assert [json.loads(line)["sequence"] for line in data.read_text().splitlines()] == [3, 4]


@pytest.mark.django_db
@pytest.mark.parametrize(("query", "field"), [
    ("format=xml", "format"), ("", "format"), ("format=csv&since=yesterday", "since"),
    ("format=csv&actor_type=robot", "actor_type"), ("format=csv&sequence_from=zero", "sequence_from"),
])
def test_export__bad_request__400_naming_the_field_and_no_event(history, api_as, query, field):
    client = api_as("compliance")
    count = AuditEvent.objects.count()
    response = client.get(f"/api/v1/audit/export?{query}")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert AuditEvent.objects.count() == count


@pytest.mark.django_db
def test_iter_events__many_batches__one_query_per_batch(history):
    count = AuditEvent.objects.count()
    with CaptureQueriesContext(connection) as queries:
        rows = list(iter_events(AuditEvent.objects.all(), until_sequence=count, batch=4))
    assert [r["sequence"] for r in rows] == list(range(1, count + 1))
    assert len(queries) == count // 4 + 1


@pytest.mark.django_db
def test_export__large_range__runs_in_background_with_progress_then_downloads(
        history, api_as, verifier, tmp_path, settings, django_capture_on_commit_callbacks):
    settings.TURNOUT_AUDIT_EXPORT_ASYNC_THRESHOLD = 3
    settings.TURNOUT_AUDIT_EXPORT_DIR = str(tmp_path / "exports")
    client = api_as("compliance")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.get("/api/v1/audit/export?format=csv")
    assert response.status_code == 202
    job = response.json()
    assert response["Location"] == job["links"]["self"]
    status = client.get(job["links"]["self"]).json()
    assert (status["status"], status["done"], status["progress"]) == ("ready", status["total"], 1.0)
    download, body = _download(client, job["links"]["download"])
    assert download.status_code == 200
    data, man = tmp_path / "export.csv", tmp_path / "manifest.json"
    data.write_bytes(body)
    man.write_text(json.dumps(client.get(job["links"]["manifest"]).json()))
    assert verifier.verify(str(data), str(man), report=lambda _: None)["count"] == job["total"]
    assert AuditEvent.objects.get(action="audit.exported").after["background"] is True


@pytest.mark.django_db
def test_export_download__streamed_or_unfinished__409(history, api_as, settings, tmp_path):
    settings.TURNOUT_AUDIT_EXPORT_ASYNC_THRESHOLD = 3
    settings.TURNOUT_AUDIT_EXPORT_DIR = str(tmp_path)
    client = api_as("compliance")
    job = client.get("/api/v1/audit/export?format=csv").json()  # on_commit not run: the task never started
    response = client.get(job["links"]["download"])
    assert response.status_code == 409 and "pending" in response.json()["error"]["message"]
    assert client.get(job["links"]["manifest"]).status_code == 409


@pytest.mark.django_db
def test_export_manifest__stream_cut_short__recomputed_identically(history, api_as, verifier, tmp_path):
    client = api_as("compliance")
    response = client.get("/api/v1/audit/export?format=jsonl")
    body = next(iter(response.streaming_content))  # read one chunk, never the rest
    export = AuditExport.objects.get(pk=response["X-Audit-Export-Id"])
    assert export.manifest is None
    manifest = client.get(f"/api/v1/audit/exports/{export.pk}/manifest").json()
    full = client.get(f"/api/v1/audit/export?format=jsonl&sequence_to={manifest['chain_head']['sequence']}")
    assert body and manifest["files"][0]["bytes"] == len(b"".join(full.streaming_content))
    assert manifest["files"][0]["sha256"] != ""


# --- the CLI and the standalone verifier ------------------------------------------------------------


@pytest.mark.django_db
def test_audit_export_command__then_audit_verify_export__verified_and_fails_after_one_byte(history, tmp_path,
                                                                                          capsys):
    out = tmp_path / "audit.csv"
    call_command("audit_export", str(out), "--format", "csv")
    event = AuditEvent.objects.get(action="audit.exported")
    assert event.actor == "system:manage.py audit_export"
    call_command("audit_verify_export", str(out), f"{out}.manifest.json")
    assert "VERIFIED" in capsys.readouterr().out
    raw = bytearray(out.read_bytes())
    raw[-5] ^= 0x20
    out.write_bytes(bytes(raw))
    with pytest.raises(CommandError, match=r"FAILED: .*was changed"):
        call_command("audit_verify_export", str(out), f"{out}.manifest.json")


def test_verify_export_tool__imports__only_stdlib_and_cryptography():
    tree = ast.parse((ROOT / "tools" / "verify_export.py").read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert modules - set(sys.stdlib_module_names) == {"cryptography"}


def test_verify_export_tool__canonical_form__same_as_the_server(verifier):
    from datetime import UTC, datetime

    event = {"sequence": 7, "occurred_at": format_time(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)),
             "actor_type": "user", "actor": "zoë", "action": "flag_state.updated", "object_type": "flag_state",
             "object_key": "a@b", "environment": "b", "before": {"percentage": 25.0, "z": [1, "\n\"x\""]},
             "after": {"ü": None, "a": {"b": True}}, "reason": "tab\there", "request_id": "r"}
    assert verifier.event_hash("ab" * 32, event) == event_hash("ab" * 32, event)


@pytest.mark.django_db
def test_verify_export_tool__as_a_script__exit_codes(history, tmp_path):
    out = tmp_path / "audit.jsonl"
    call_command("audit_export", str(out), "--format", "jsonl")
    keys = tmp_path / "keys.json"
    from audit.signing import public_keys

    keys.write_text(json.dumps({"keys": [k.as_dict() for k in public_keys()]}))
    script = str(ROOT / "tools" / "verify_export.py")
    ok = subprocess.run([sys.executable, "-I", script, str(out), f"{out}.manifest.json", "--public-key", str(keys)],
                        capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0 and "VERIFIED" in ok.stdout, ok.stdout + ok.stderr
    out.write_bytes(out.read_bytes().replace(b"error rate 7.2%", b"error rate 1.2%"))
    bad = subprocess.run([sys.executable, "-I", script, str(out), f"{out}.manifest.json"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1 and "FAILED" in bad.stdout


# --- real processes: ASGI streaming, a Celery worker ---------------------------------------------------


def test_export__served_by_uvicorn_asgi__streams_and_verifies(server_process, verifier, tmp_path):
    import httpx

    from rollout.access.keys import api_token_create
    from rollout.access.users import user_create
    from tests.audit.conftest import SETUP

    user_create(actor=SETUP, username="carol", password=None, roles=["compliance"])
    _, secret = api_token_create(actor=SETUP, username="carol", name="asgi")
    server = server_process.start()
    headers = {"Authorization": f"Bearer {secret}", "X-Request-ID": "asgi-export-1"}
    with httpx.stream("GET", f"{server.url}/api/v1/audit/export?format=csv", headers=headers, timeout=30) as r:
        assert r.status_code == 200
        body = b"".join(r.iter_bytes())
        link = r.headers["link"].split(";")[0].strip("<>")
    manifest = httpx.get(f"{server.url}{link}", headers=headers, timeout=30).json()
    (tmp_path / "e.csv").write_bytes(body)
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    assert verifier.verify(str(tmp_path / "e.csv"), str(tmp_path / "m.json"), report=lambda _: None)["count"] == 2
    assert AuditEvent.objects.get(action="audit.exported").request_id == "asgi-export-1"


@pytest.mark.services
def test_export__background_on_a_real_celery_worker__ready_and_verifies(celery_worker_process, verifier, tmp_path,
                                                                        settings):
    import time

    from rest_framework.test import APIClient

    from rollout.access.keys import api_token_create
    from rollout.access.users import user_create
    from tests.audit.conftest import SETUP

    settings.TURNOUT_AUDIT_EXPORT_ASYNC_THRESHOLD = 1
    user_create(actor=SETUP, username="carol", password=None, roles=["compliance"])
    _, secret = api_token_create(actor=SETUP, username="carol", name="worker")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    job = client.get("/api/v1/audit/export?format=jsonl").json()
    deadline = time.monotonic() + 60
    while (status := client.get(job["links"]["self"]).json())["status"] not in ("ready", "failed"):
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["status"] == "ready" and status["progress"] == 1.0
    body = b"".join(client.get(job["links"]["download"]).streaming_content)
    (tmp_path / "e.jsonl").write_bytes(body)
    (tmp_path / "m.json").write_text(json.dumps(client.get(job["links"]["manifest"]).json()))
    assert verifier.verify(str(tmp_path / "e.jsonl"), str(tmp_path / "m.json"), report=lambda _: None)["count"] == 2




@pytest.mark.django_db
def test_readme_recomputation_example__on_a_jsonl_export__passes_and_catches_an_edit(history, tmp_path):
    readme = (ROOT / "README.md").read_text()
    code = readme.split("## Audit trail", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "recompute.py"
    script.write_text(code)
    out = tmp_path / "audit.jsonl"
    call_command("audit_export", str(out), "--format", "jsonl")
    ok = subprocess.run([sys.executable, "-I", str(script), str(out)], capture_output=True, text=True)
    assert ok.returncode == 0 and "every hash recomputes" in ok.stdout, ok.stderr
    out.write_text(out.read_text().replace("widen", "narrow"))
    assert subprocess.run([sys.executable, "-I", str(script), str(out)], capture_output=True).returncode != 0
