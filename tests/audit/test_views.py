"""The audit log pages: filters, diffs, per-object history, and who may read them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui_support import HTMX, signed_in, text

pytestmark = pytest.mark.django_db


@pytest.fixture
def changes(flag: Any, actor: Any) -> None:
    from rollout.services.flags import flag_state_kill, flag_state_update

    flag_state_update(actor=actor, flag="invoice-engine", environment="staging", version=None, enabled=True,
                      percentage_value=30)
    flag_state_kill(actor=actor, flag="invoice-engine", environment="staging", reason="incident 42")


def test_audit_log__filtered_by_action__only_those_events(changes: Any) -> None:
    body = text(signed_in("compliance").get("/audit/?action=flag_state.killed", **HTMX))
    assert body.count("<tr>") == 2  # header row + one event
    assert "flag_state.killed" in body and "flag.created" not in body


def test_audit_log__time_and_actor_filters__empty_state(changes: Any) -> None:
    client = signed_in("viewer")
    assert "No event matches these filters." in text(client.get("/audit/?since=2999-01-01T00:00", **HTMX))
    assert "No event matches these filters." in text(client.get("/audit/?actor=nobody", **HTMX))


def test_audit_event__update__diff_marks_changed_fields(changes: Any) -> None:
    from audit.models import AuditEvent

    event = AuditEvent.objects.get(action="flag_state.killed")
    body = text(signed_in("compliance").get(f"/audit/events/{event.sequence}/", **HTMX))
    assert 'class="changed"' in body and "enabled" in body and "incident 42" in body


def test_object_history__flag_state__every_event_of_that_object(changes: Any) -> None:
    body = text(signed_in("compliance").get("/audit/history/flag_state/invoice-engine@staging/"))
    assert "flag_state.updated" in body and "flag_state.killed" in body and "flag.created" not in body


def _export_zip(client: Any, data: dict[str, str], tmp_path: Any) -> Any:
    response = client.post("/audit/export/", data)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    name = response["Content-Disposition"].split('filename="')[1].rstrip('"')
    assert name.startswith("audit-") and name.endswith(f".{data['format']}.zip")
    path = tmp_path / name
    path.write_bytes(b"".join(response.streaming_content))
    return path


def test_audit_export__small__zip_with_the_filtered_events_and_their_signed_manifest(changes: Any, tmp_path: Any
                                                                                    ) -> None:
    import json
    import zipfile

    from audit.models import AuditExport

    path = _export_zip(signed_in("compliance"), {"format": "jsonl", "action": "flag_state.killed"}, tmp_path)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert len(names) == 2 and names[1] == "manifest.json" and names[0].endswith(".jsonl")
        lines = zf.read(names[0]).decode().strip().splitlines()
        manifest = json.loads(zf.read("manifest.json"))
    assert len(lines) == 1 and '"flag_state.killed"' in lines[0]
    assert manifest["files"][0]["name"] == names[0] and manifest["count"] == 1 and manifest["signature"]
    # The manifest is stored too (the export is finished once its last byte has been written).
    assert AuditExport.objects.get(pk=manifest["export_id"]).manifest == manifest


def test_audit_export__ui_zip__offline_verifier_passes_and_fails_after_one_changed_byte(changes: Any,
                                                                                         tmp_path: Any) -> None:
    """Issue 18: a compliance reviewer verifies a UI export offline with only what the UI hands out —
    the zip, the verifier the audit page links, and the public key it links."""
    import subprocess
    import sys
    import zipfile

    client = signed_in("compliance")
    path = _export_zip(client, {"format": "csv"}, tmp_path)
    verifier = client.get("/audit/verify_export.py")
    assert verifier.status_code == 200 and 'filename="verify_export.py"' in verifier["Content-Disposition"]
    script = tmp_path / "verify_export.py"
    script.write_bytes(b"".join(verifier.streaming_content))
    key = tmp_path / "key.json"
    key_file = client.get("/audit/public-key.json")
    assert key_file["Content-Disposition"] == 'attachment; filename="turnout-audit-public-key.json"'
    assert key_file.json() == client.get("/api/v1/audit/public-key").json()
    key.write_bytes(key_file.content)

    run = subprocess.run([sys.executable, str(script), str(path), "--public-key", str(key)], capture_output=True,
                         text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr

    with zipfile.ZipFile(path) as zf:
        data, manifest = zf.read(zf.namelist()[0]), zf.read("manifest.json")
        inner = zf.namelist()[0]
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(tampered, "w") as zf:
        zf.writestr(inner, data.replace(b"incident 42", b"incident 43"))
        zf.writestr("manifest.json", manifest)
    run = subprocess.run([sys.executable, str(script), str(tampered), "--public-key", str(key)], capture_output=True,
                         text=True, cwd=tmp_path)
    assert run.returncode == 1


def test_audit_page__links_the_offline_verifier_and_the_public_key(changes: Any) -> None:
    body = text(signed_in("compliance").get("/audit/"))
    assert 'href="/audit/verify_export.py"' in body and 'href="/audit/public-key.json"' in body
    assert "signed <code>manifest.json</code>" in body


def test_offline_verifier__viewer__403(changes: Any) -> None:
    assert signed_in("viewer").get("/audit/verify_export.py").status_code == 403


def test_audit_export__large__background_with_progress_then_download(
    changes: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.TURNOUT_AUDIT_EXPORT_ASYNC_THRESHOLD = 1
    client = signed_in("compliance")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/audit/export/", {"format": "csv"})
    assert response.status_code == 302
    body = text(client.get(response["Location"]))
    assert "Ready." in body and "/download" in body and "Download its signed manifest" in body
    from audit.models import AuditExport

    export = AuditExport.objects.get()
    manifest = client.get(f"/audit/exports/{export.pk}/manifest.json")
    assert manifest.status_code == 200
    assert manifest["Content-Disposition"] == f'attachment; filename="{export.file_name}.manifest.json"'
    assert manifest.json() == export.manifest


def test_audit_export_and_verify__viewer__403(changes: Any) -> None:
    client = signed_in("viewer")
    assert client.post("/audit/export/", {"format": "csv"}).status_code == 403
    assert client.post("/audit/verify/", **HTMX).status_code == 403


def test_audit_verify__intact_chain__verified(changes: Any) -> None:
    body = text(signed_in("compliance").post("/audit/verify/", **HTMX))
    assert "Verified:" in body
