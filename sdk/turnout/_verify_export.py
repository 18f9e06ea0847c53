#!/usr/bin/env python3
"""Verify a Turnout audit export or evidence pack offline. Needs Python 3.10+ and `cryptography` only.

    python verify_export.py EXPORT.csv|EXPORT.jsonl MANIFEST.json [--public-key KEY]...
    python verify_export.py EVIDENCE.zip [--public-key KEY]...

KEY is a file holding the deployment's public key: the JSON from ``GET /api/v1/audit/public-key``,
a PEM public key, or base64 of the raw 32 bytes. Without ``--public-key`` the key embedded in the
manifest is used, and its key id is printed to compare with the published one.

Checks, in order: the manifest's Ed25519 signature (over its canonical JSON without
``signature``), each file's SHA-256 and size, then every event: its hash recomputed as
``sha256(prev_hash + canonical JSON of the event)``, sequences increasing, consecutive events
linked (``prev_hash`` = previous ``hash``), none past the manifest's chain head, and the count,
first and last hashes equal to the manifest's. Exit status 0 when everything holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import csv
import functools
import hashlib
import io
import json
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS_HASH = "0" * 64
CHAINED_FIELDS = ("sequence", "occurred_at", "actor_type", "actor", "action", "object_type", "object_key",
                  "environment", "before", "after", "reason", "request_id")
EXPORT_FIELDS = (*CHAINED_FIELDS, "prev_hash", "hash")
CHUNK = 1 << 20


class VerificationError(Exception):
    pass


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def event_hash(prev_hash: str, event: dict[str, Any]) -> str:
    payload = {name: event[name] for name in CHAINED_FIELDS}
    return hashlib.sha256((prev_hash + canonical_json(payload)).encode("utf-8")).hexdigest()


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _decode_public(text: str) -> Ed25519PublicKey:
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise VerificationError("the public key is not an Ed25519 key")
        return key
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise VerificationError("a public key must be PEM, base64 of 32 raw bytes, or the /public-key JSON") from None


def load_public_keys(paths: list[str]) -> dict[str, Ed25519PublicKey]:
    """Trusted keys by key id (sha256 hex of the raw public key)."""
    keys: list[Ed25519PublicKey] = []
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        if text.lstrip().startswith("{"):
            keys.extend(_decode_public(k["public_key"]) for k in json.loads(text)["keys"])
        else:
            keys.append(_decode_public(text))
    return {hashlib.sha256(_raw(k)).hexdigest(): k for k in keys}


def check_signature(manifest: dict[str, Any], trusted: dict[str, Ed25519PublicKey],
                    report: Callable[[str], None]) -> None:
    if manifest.get("algorithm") != "Ed25519":
        raise VerificationError(f"unsupported signature algorithm {manifest.get('algorithm')!r}")
    key_id = manifest.get("key_id", "")
    if trusted:
        if key_id not in trusted:
            raise VerificationError(f"manifest signed by key {key_id}, which is not among the trusted keys")
        public, source = trusted[key_id], "trusted key"
    else:
        public = _decode_public(manifest.get("public_key", ""))
        if hashlib.sha256(_raw(public)).hexdigest() != key_id:
            raise VerificationError("the embedded public key does not match the manifest's key id")
        source = "key embedded in the manifest (compare this key id with the published one)"
    body = {k: v for k, v in manifest.items() if k != "signature"}
    try:
        public.verify(base64.b64decode(manifest.get("signature", ""), validate=True),
                      canonical_json(body).encode("utf-8"))
    except (InvalidSignature, binascii.Error, ValueError):
        raise VerificationError("the manifest's signature is not valid (manifest altered or wrong key)") from None
    report(f"ok  signature: Ed25519, key id {key_id}, {source}")


def check_digest(open_file: Callable[[], IO[bytes]], entry: dict[str, Any], report: Callable[[str], None]) -> None:
    digest, size = hashlib.sha256(), 0
    with open_file() as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    if digest.hexdigest() != entry["sha256"] or size != entry["bytes"]:
        raise VerificationError(f"{entry['name']}: SHA-256 {digest.hexdigest()} ({size} bytes) differs from the "
                                f"manifest's {entry['sha256']} ({entry['bytes']} bytes): the file was changed")
    report(f"ok  {entry['name']}: sha256 {entry['sha256']}, {size} bytes")


def jsonl_rows(fh: IO[bytes]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(io.TextIOWrapper(fh, encoding="utf-8", newline="\n"), start=1):
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            raise VerificationError(f"line {number} is not JSON") from None


def csv_rows(fh: IO[bytes]) -> Iterator[dict[str, Any]]:
    reader = csv.reader(io.TextIOWrapper(fh, encoding="utf-8", newline=""))
    if tuple(next(reader, ())) != EXPORT_FIELDS:
        raise VerificationError(f"the CSV header is not {','.join(EXPORT_FIELDS)}")
    for row in reader:
        event: dict[str, Any] = dict(zip(EXPORT_FIELDS, row, strict=True))
        event["sequence"] = int(event["sequence"])
        event["before"] = json.loads(event["before"])
        event["after"] = json.loads(event["after"])
        yield event


def check_events(rows: Iterator[dict[str, Any]], manifest: dict[str, Any], name: str,
                 report: Callable[[str], None]) -> str:
    """Every row's hash, order and linkage; returns a digest of the row hashes (to compare files)."""
    head = manifest["chain_head"]["sequence"]
    count, first, last_seq, last_hash, linked = 0, None, None, None, 0
    digest = hashlib.sha256()
    for event in rows:
        sequence = event["sequence"]
        if event_hash(event["prev_hash"], event) != event["hash"]:
            raise VerificationError(f"{name}: event {sequence}: hash does not match its content (altered)")
        if last_seq is not None and sequence <= last_seq:
            raise VerificationError(f"{name}: event {sequence} comes after {last_seq} (out of order)")
        if last_seq is not None and sequence == last_seq + 1:
            if event["prev_hash"] != last_hash:
                raise VerificationError(f"{name}: event {sequence} does not link to event {last_seq}")
            linked += 1
        if sequence > head:
            raise VerificationError(f"{name}: event {sequence} is past the manifest's chain head {head}")
        if first is None:
            first = event
        count += 1
        last_seq, last_hash = sequence, event["hash"]
        digest.update(event["hash"].encode())
    expected = (manifest["count"], manifest["first_hash"], manifest["last_hash"])
    found = (count, first["hash"] if first else None, last_hash)
    if found != expected:
        raise VerificationError(f"{name}: holds {count} events from {found[1]} to {found[2]}; the manifest says "
                                f"{expected[0]} from {expected[1]} to {expected[2]}")
    if manifest.get("complete_prefix") and (first is None or first["prev_hash"] != GENESIS_HASH or count != head):
        raise VerificationError(f"{name}: the manifest says the whole chain up to {head}, but it is not")
    report(f"ok  {name}: {count} events, every hash recomputed, {linked} consecutive links checked")
    return digest.hexdigest()


def verify(export: str, manifest_path: str | None = None, public_keys: list[str] | None = None,
           report: Callable[[str], None] = print,
           trusted_keys: dict[str, Ed25519PublicKey] | None = None) -> dict[str, Any]:
    """Raise VerificationError on the first problem; return the manifest when everything holds."""
    trusted = {**load_public_keys(public_keys or []), **(trusted_keys or {})}
    path = Path(export)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            text = Path(manifest_path).read_text(encoding="utf-8") if manifest_path else zf.read("manifest.json")
            manifest: dict[str, Any] = json.loads(text)
            check_signature(manifest, trusted, report)
            names = set(zf.namelist()) - {"manifest.json"}
            listed = {entry["name"] for entry in manifest["files"]}
            if names != listed:
                raise VerificationError(f"the pack holds {sorted(names)}, the manifest lists {sorted(listed)}")
            digests = []
            for entry in manifest["files"]:
                check_digest(functools.partial(zf.open, entry["name"]), entry, report)
                if entry["format"] in ("jsonl", "csv"):
                    with zf.open(entry["name"]) as fh:
                        rows = jsonl_rows(fh) if entry["format"] == "jsonl" else csv_rows(fh)
                        digests.append(check_events(rows, manifest, entry["name"], report))
            if len(set(digests)) > 1:
                raise VerificationError("events.jsonl and events.csv hold different events")
        return manifest
    if not manifest_path:
        raise VerificationError("a CSV or JSONL export needs its manifest")
    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))  # the pack branch typed it
    check_signature(manifest, trusted, report)
    if len(manifest["files"]) != 1:
        raise VerificationError("this manifest describes a pack of several files, not one export file")
    entry = manifest["files"][0]
    check_digest(lambda: path.open("rb"), entry, report)
    with path.open("rb") as fh:
        check_events(jsonl_rows(fh) if entry["format"] == "jsonl" else csv_rows(fh), manifest, path.name, report)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify a Turnout audit export or evidence pack offline.")
    parser.add_argument("export", help="the .csv / .jsonl export, or the evidence pack .zip")
    parser.add_argument("manifest", nargs="?", help="the manifest .json (inside the zip for a pack)")
    parser.add_argument("--public-key", action="append", default=[], help="trusted public key file (repeatable)")
    args = parser.parse_args(argv)
    try:
        manifest = verify(args.export, args.manifest, args.public_key)
    except (VerificationError, OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        print(f"FAILED: {exc}")
        return 1
    print(f"VERIFIED: {manifest['count']} events, sequences {manifest['first_sequence']}..{manifest['last_sequence']}"
          f" (chain head {manifest['chain_head']['sequence']}), signed by {manifest['key_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
