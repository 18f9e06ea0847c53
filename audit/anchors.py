"""Anchors: chain heads recorded in signed manifests, checked against the stored chain.

Verifying the chain proves that the stored events agree with one another. It cannot prove that the
newest events were not removed — or the whole chain rewritten with freshly computed hashes — by
someone with raw write access to the database, because such a person can make the head row agree.
What they cannot do is change what was signed before: every export manifest and evidence pack
records the chain head at the moment it was made (``chain_head``: sequence and hash) and is signed
with the deployment's Ed25519 key. A reviewer who kept one holds an *anchor*.

``manage.py audit_verify --anchor MANIFEST`` checks the whole chain and then that each anchored
event still stands with the anchored hash. Every hash covers every event before it, so a match
proves events 1..N are exactly those the manifest saw, and that the chain was not cut below N.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.models import AuditEvent
from audit.signing import decode_public, manifest_signature_valid, public_keys
from audit.verify import ChainReport


class AnchorError(Exception):
    """The manifest cannot serve as an anchor (unreadable, unsigned, or signed by a key we do not trust)."""


@dataclass(frozen=True)
class Anchor:
    sequence: int
    hash: str
    source: str
    key_id: str


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        if zipfile.is_zipfile(path):  # an evidence pack: its manifest is inside
            with zipfile.ZipFile(path) as zf:
                return dict(json.loads(zf.read("manifest.json")))
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise AnchorError(f"{path.name}: not a readable manifest ({exc})") from None


def load_anchor(path: str | Path) -> Anchor:
    """The chain head a manifest (or an evidence pack's) records, once its signature checks out
    against this deployment's keys (the current one and the previous ones it still publishes)."""
    path = Path(path)
    manifest = _read_manifest(path)
    trusted = {k.key_id: decode_public(k.public_key) for k in public_keys()}
    key = trusted.get(str(manifest.get("key_id", "")))
    if key is None:
        raise AnchorError(f"{path.name}: signed by key {manifest.get('key_id')!r}, which this deployment does "
                          "not publish")
    if not manifest_signature_valid(manifest, key):
        raise AnchorError(f"{path.name}: the signature does not match the manifest (it was changed)")
    head = manifest.get("chain_head")
    if not isinstance(head, dict) or not isinstance(head.get("sequence"), int) or not isinstance(head.get("hash"), str):
        raise AnchorError(f"{path.name}: the manifest records no chain head")
    return Anchor(sequence=head["sequence"], hash=head["hash"], source=path.name, key_id=str(manifest["key_id"]))


def check_anchor(anchor: Anchor, report: ChainReport) -> str | None:
    """Why the verified chain contradicts the anchor, or None when it holds."""
    if anchor.sequence == 0:
        return None  # the chain was empty when the manifest was signed: nothing to hold to
    if anchor.sequence > report.last_sequence:
        return (f"event {anchor.sequence} was in the chain when {anchor.source} was signed, but the chain now "
                f"ends at {report.last_sequence}: events were removed from its end")
    stored = AuditEvent.objects.filter(sequence=anchor.sequence).values_list("hash", flat=True).first()
    if stored != anchor.hash:
        return (f"event {anchor.sequence} hashes to {stored}, not to {anchor.hash} as when {anchor.source} was "
                f"signed: the chain up to it was rewritten")
    return None
