"""Anchors: a signed manifest's chain head catches what verifying the chain alone cannot — events removed
from the end together with the head row, or a chain rewritten with freshly computed hashes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit.chain import CHAINED_FIELDS, GENESIS_HASH, event_hash
from audit.models import AuditEvent
from tests.audit.test_verify import _raw

pytestmark = pytest.mark.django_db


@pytest.fixture
def manifest(history: None, tmp_path: Path) -> Path:
    """An export made now: its signed manifest records the chain head (the last event before the export's own)."""
    out = tmp_path / "audit.jsonl"
    call_command("audit_export", str(out))
    return tmp_path / "audit.jsonl.manifest.json"


def _head(manifest: Path) -> dict[str, Any]:
    return json.loads(manifest.read_text())["chain_head"]


def _set_head(sequence: int, digest: str) -> None:
    """The chain-head row has no trigger of its own: an attacker can move it back to match a cut chain."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditchainhead SET sequence = %s, hash = %s WHERE id = 1", [sequence, digest])


def cut_tail(keep: int) -> None:
    """Remove every event after ``keep`` and rewind the head: the rest of the chain is untouched and consistent."""
    _raw(("DELETE FROM audit_auditevent WHERE sequence > %s", [keep]))
    _set_head(keep, AuditEvent.objects.get(sequence=keep).hash)


def rewrite_from(sequence: int) -> None:
    """Edit one event and recompute every hash after it, head included: a consistent, forged chain."""
    rows = list(AuditEvent.objects.order_by("sequence").values(*CHAINED_FIELDS, "prev_hash", "hash"))
    prev = GENESIS_HASH
    updates = []
    for row in rows:
        if row["sequence"] == sequence:
            row["reason"] = "nothing to see"
        if row["sequence"] >= sequence:
            row["prev_hash"], row["hash"] = prev, event_hash(prev, row)
            updates.append(("UPDATE audit_auditevent SET reason = %s, prev_hash = %s, hash = %s WHERE sequence = %s",
                            [row["reason"], row["prev_hash"], row["hash"], row["sequence"]]))
        prev = row["hash"]
    _raw(*updates)
    _set_head(rows[-1]["sequence"], prev)


def test_anchor__untouched_chain__holds(manifest, capsys):
    call_command("audit_verify", "--anchor", str(manifest))
    out = capsys.readouterr().out
    assert "audit chain OK" in out and f"anchor OK: #{_head(manifest)['sequence']}" in out


def test_anchor__tail_removed_with_the_head__chain_alone_passes_anchor_catches_it(manifest, capsys):
    anchored = _head(manifest)["sequence"]
    cut_tail(anchored - 3)
    call_command("audit_verify")  # consistent as far as the database can tell
    assert "audit chain OK" in capsys.readouterr().out
    with pytest.raises(CommandError, match=rf"CONTRADICTS anchor .*#{anchored}\).*removed from its end"):
        call_command("audit_verify", "--anchor", str(manifest))


def test_anchor__chain_rewritten_with_fresh_hashes__chain_alone_passes_anchor_catches_it(manifest, capsys):
    anchored = _head(manifest)["sequence"]
    rewrite_from(3)
    call_command("audit_verify")
    assert "audit chain OK" in capsys.readouterr().out
    with pytest.raises(CommandError, match=rf"#{anchored}\).*rewritten"):
        call_command("audit_verify", "--anchor", str(manifest))


def test_anchor__json_report_lists_each_anchor(manifest, capsys):
    call_command("audit_verify", "--anchor", str(manifest), "--json")
    body = json.loads(capsys.readouterr().out)
    [anchor] = body["anchors"]
    assert anchor == {"source": manifest.name, "sequence": _head(manifest)["sequence"],
                      "hash": _head(manifest)["hash"], "key_id": anchor["key_id"], "ok": True, "problem": None}


def test_anchor__evidence_pack__its_manifest_serves(history, tmp_path, capsys):
    pack = tmp_path / "billing.zip"
    call_command("audit_export", str(pack), "--evidence", "workload:billing")
    call_command("audit_verify", "--anchor", str(pack))
    assert "anchor OK" in capsys.readouterr().out


def test_anchor__manifest_edited__refused_before_anything_is_checked(manifest):
    body = json.loads(manifest.read_text())
    body["chain_head"]["sequence"] -= 1
    manifest.write_text(json.dumps(body))
    with pytest.raises(CommandError, match=r"anchor refused: .*signature does not match"):
        call_command("audit_verify", "--anchor", str(manifest))


def test_anchor__signed_by_an_unknown_key__refused(manifest):
    body = json.loads(manifest.read_text())
    body["key_id"] = "f" * 64
    manifest.write_text(json.dumps(body))
    with pytest.raises(CommandError, match=r"anchor refused: .*does not publish"):
        call_command("audit_verify", "--anchor", str(manifest))


def test_anchor__not_a_manifest__refused(tmp_path, history):
    junk = tmp_path / "notes.zip"
    with zipfile.ZipFile(junk, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(CommandError, match=r"anchor refused: notes\.zip: not a readable manifest"):
        call_command("audit_verify", "--anchor", str(junk))
