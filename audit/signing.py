"""The deployment's Ed25519 key that signs audit export manifests.

The private key comes from ``TURNOUT_AUDIT_SIGNING_KEY`` (PEM, or base64 of the raw 32 bytes); in
development, when unset, one is generated once into ``var/`` (never committed). A key is named by
its *key id*: the SHA-256 (hex) of the raw 32-byte public key. Rotation: set the new private key,
move the old public key to ``TURNOUT_AUDIT_PREVIOUS_PUBLIC_KEYS``; ``/api/v1/audit/public-key``
lists both, so manifests signed before the rotation still verify.

A manifest is signed over its canonical JSON without the ``signature`` member (keys sorted, no
whitespace, UTF-8); manifests hold only strings, integers, booleans, null, lists and objects.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from common.conf import get_setting
from config.env import VAR_DIR

ALGORITHM = "Ed25519"
DEV_KEY_FILE = "audit-signing-key.pem"


@dataclass(frozen=True)
class PublicKeyInfo:
    key_id: str
    public_key: str  # base64 of the raw 32 bytes
    pem: str
    current: bool

    def as_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "algorithm": ALGORITHM, "public_key": self.public_key, "pem": self.pem,
                "current": self.current}


def raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public(public)).hexdigest()


def _decode_private(value: str) -> Ed25519PrivateKey:
    text = value.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ImproperlyConfigured("TURNOUT_AUDIT_SIGNING_KEY must be an Ed25519 private key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImproperlyConfigured("TURNOUT_AUDIT_SIGNING_KEY must be PEM or base64 of 32 raw bytes") from None
    if len(raw) != 32:
        raise ImproperlyConfigured("TURNOUT_AUDIT_SIGNING_KEY must be PEM or base64 of 32 raw bytes")
    return Ed25519PrivateKey.from_private_bytes(raw)


def decode_public(value: str) -> Ed25519PublicKey:
    text = value.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ImproperlyConfigured("audit public keys must be Ed25519")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImproperlyConfigured("audit public keys must be PEM or base64 of 32 raw bytes") from None
    if len(raw) != 32:
        raise ImproperlyConfigured("audit public keys must be PEM or base64 of 32 raw bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def _dev_key_path() -> Path:
    return VAR_DIR / DEV_KEY_FILE


def _dev_key() -> Ed25519PrivateKey:
    """Generated once per checkout (``var/`` is gitignored); O_EXCL settles concurrent first starts."""
    path = _dev_key_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
    return _decode_private(path.read_text())


@lru_cache(maxsize=4)
def _load(configured: str | None, production: bool) -> Ed25519PrivateKey:
    if configured:
        return _decode_private(configured)
    if production:
        raise ImproperlyConfigured("TURNOUT_AUDIT_SIGNING_KEY is required in production (Ed25519, PEM or base64)")
    return _dev_key()


def signing_key() -> Ed25519PrivateKey:
    return _load(get_setting("AUDIT_SIGNING_KEY"), bool(getattr(settings, "PRODUCTION", False)))


def _info(public: Ed25519PublicKey, *, current: bool) -> PublicKeyInfo:
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return PublicKeyInfo(key_id=key_id(public), public_key=base64.b64encode(raw_public(public)).decode(),
                         pem=pem.decode(), current=current)


def public_keys() -> list[PublicKeyInfo]:
    """The current key first, then earlier ones still trusted for old manifests."""
    keys = [_info(signing_key().public_key(), current=True)]
    seen = {keys[0].key_id}
    for value in get_setting("AUDIT_PREVIOUS_PUBLIC_KEYS") or []:
        info = _info(decode_public(value), current=False)
        if info.key_id not in seen:
            keys.append(info)
            seen.add(info.key_id)
    return keys


def canonical_manifest(manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sign_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with ``algorithm``, ``key_id``, ``public_key`` and ``signature`` (base64) added."""
    key = signing_key()
    public = key.public_key()
    signed = {k: v for k, v in manifest.items() if k != "signature"}
    signed.update(algorithm=ALGORITHM, key_id=key_id(public), public_key=base64.b64encode(raw_public(public)).decode())
    signed["signature"] = base64.b64encode(key.sign(canonical_manifest(signed))).decode()
    return signed


def manifest_signature_valid(manifest: dict[str, Any], public: Ed25519PublicKey) -> bool:
    try:
        public.verify(base64.b64decode(manifest.get("signature", ""), validate=True), canonical_manifest(manifest))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
