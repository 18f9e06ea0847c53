"""Evidence packs: one signed bundle per workload or flag state, verifiable like any export."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest

from audit import evidence
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def _pack(client: Any, url: str) -> tuple[zipfile.ZipFile, bytes]:
    response = client.get(url)
    assert response.status_code == 200, response.content[:300] if not response.streaming else ""
    assert response["Content-Type"] == "application/zip"
    body = b"".join(response.streaming_content)
    return zipfile.ZipFile(io.BytesIO(body)), body


def test_evidence_pack__workload__every_event_about_it_and_nothing_else(history, api_as, verifier, tmp_path,
                                                                        settings):
    settings.TURNOUT_AUDIT_EXPORT_DIR = str(tmp_path / "exports")
    zf, body = _pack(api_as("compliance"), "/api/v1/audit/evidence/workload/billing")
    assert sorted(zf.namelist()) == ["events.csv", "events.jsonl", "manifest.json", "summary.json"]
    rows = [json.loads(line) for line in zf.read("events.jsonl").decode().splitlines()]
    keys = {(r["object_type"], r["object_key"]) for r in rows}
    assert keys == {("workload", "billing"), ("flag", "invoice-engine"), ("flag_state", "invoice-engine@staging"),
                    ("cohort", "pilot"), ("sdk_key", rows[-1]["object_key"])}
    assert not any("search" in r["object_key"] for r in rows)
    summary = json.loads(zf.read("summary.json"))
    assert summary["subject"]["flags"] == ["invoice-engine"] and summary["subject"]["cohorts"] == ["pilot"]
    history_ = summary["sections"]["rollout_history"]
    assert [h["changes"].get("percentage") for h in history_] == [
        {"before": 0.0, "after": 10.0}, {"before": 10.0, "after": 50.0}, None]
    [rollback] = summary["sections"]["rollbacks"]
    assert (rollback["actor"], rollback["reason"]) == ("system:guardrail", "error rate 7.2% > 5%")
    assert summary["sections"]["current_state"]["workload"]["risk"] == "high"
    manifest = json.loads(zf.read("manifest.json"))
    assert manifest["kind"] == "evidence" and manifest["subject"] == {"type": "workload", "key": "billing"}
    assert manifest["count"] == len(rows) == summary["events"]["count"]
    pack = tmp_path / "pack.zip"
    pack.write_bytes(body)
    assert verifier.verify(str(pack), report=lambda _: None)["count"] == len(rows)
    event = AuditEvent.objects.get(action="audit.evidence_exported")
    assert event.after["subject"] == {"type": "workload", "key": "billing"} and event.after["count"] == len(rows)


def test_evidence_pack__one_changed_byte_in_summary__fails(history, api_as, verifier, tmp_path, settings):
    settings.TURNOUT_AUDIT_EXPORT_DIR = str(tmp_path / "exports")
    zf, _ = _pack(api_as("compliance"), "/api/v1/audit/evidence/workload/billing")
    pack = tmp_path / "forged.zip"
    with zipfile.ZipFile(pack, "w") as out:
        for name in zf.namelist():
            data = zf.read(name)
            out.writestr(name, data.replace(b"7.2%", b"1.2%") if name == "summary.json" else data)
    with pytest.raises(verifier.VerificationError, match=r"summary\.json.*was changed"):
        verifier.verify(str(pack), report=lambda _: None)


def test_evidence_pack__flag_state__only_that_environment(history, api_as, verifier, tmp_path, settings):
    settings.TURNOUT_AUDIT_EXPORT_DIR = str(tmp_path / "exports")
    zf, body = _pack(api_as("compliance"), "/api/v1/audit/evidence/flag_state/search-v2@production")
    rows = [json.loads(line) for line in zf.read("events.jsonl").decode().splitlines()]
    assert {(r["object_type"], r["object_key"]) for r in rows} == {
        ("workload", "search"), ("flag", "search-v2"), ("flag_state", "search-v2@production")}
    (tmp_path / "p.zip").write_bytes(body)
    verifier.verify(str(tmp_path / "p.zip"), report=lambda _: None)


def test_evidence_pack__deleted_flag__still_found_through_the_audit_log(history, api_as, settings, tmp_path):
    from rollout.services.flags import flag_delete, flag_state_update
    from tests.audit.conftest import SETUP

    settings.TURNOUT_AUDIT_EXPORT_DIR = str(tmp_path / "exports")
    flag_state_update(actor=SETUP, flag="search-v2", environment="production", version=None, enabled=False)
    flag_delete(actor=SETUP, key="search-v2", reason="rolled back for good")
    zf, _ = _pack(api_as("compliance"), "/api/v1/audit/evidence/workload/search")
    actions = [json.loads(line)["action"] for line in zf.read("events.jsonl").decode().splitlines()]
    assert actions[-1] == "flag.deleted" and "flag_state.updated" in actions


def test_evidence_pack__registered_section_and_event_source__included(history, api_as, settings, tmp_path,
                                                                      monkeypatch):
    settings.TURNOUT_AUDIT_EXPORT_DIR = str(tmp_path / "exports")
    monkeypatch.setitem(evidence.SECTIONS, "custom", lambda subject, until: [{"flags": list(subject.flags),
                                                                                  "until": until}])
    monkeypatch.setitem(evidence.EVENT_SOURCES, "workload_neighbours",
                        lambda subject: evidence.Q(object_type="workload", object_key="search"))
    zf, _ = _pack(api_as("compliance"), "/api/v1/audit/evidence/workload/billing")
    summary = json.loads(zf.read("summary.json"))
    assert summary["sections"]["custom"] == [{"flags": ["invoice-engine"], "until": summary["until_sequence"]}]
    assert any('"object_key":"search"' in line for line in zf.read("events.jsonl").decode().splitlines())


@pytest.mark.parametrize(("url", "status"), [
    ("/api/v1/audit/evidence/workload/nope", 404),
    ("/api/v1/audit/evidence/flag_state/no-at-sign", 400),
    ("/api/v1/audit/evidence/cohort/pilot", 404),
])
def test_evidence_pack__unknown_subject__error_and_no_event(history, api_as, url, status):
    client = api_as("compliance")
    count = AuditEvent.objects.count()
    assert client.get(url).status_code == status
    assert AuditEvent.objects.count() == count


def test_evidence_pack__cli__zip_verifies(history, tmp_path, capsys):
    from django.core.management import call_command

    out = tmp_path / "billing.zip"
    call_command("audit_export", str(out), "--evidence", "workload:billing")
    call_command("audit_verify_export", str(out))
    assert "VERIFIED" in capsys.readouterr().out
