"""The manifest signing key: from the environment (PEM or raw base64), generated once in development, rotatable."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from audit import signing


def _pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _raw_b64(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                              serialization.NoEncryption())).decode()


def _public_b64(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(signing.raw_public(key.public_key())).decode()


@pytest.mark.parametrize("encode", [_pem, _raw_b64])
def test_signing_key__configured_as_pem_or_raw_base64__used(settings, encode):
    key = Ed25519PrivateKey.generate()
    settings.TURNOUT_AUDIT_SIGNING_KEY = encode(key)
    assert signing.public_keys()[0].key_id == signing.key_id(key.public_key())
    signed = signing.sign_manifest({"count": 1, "files": []})
    assert signing.manifest_signature_valid(signed, key.public_key())
    assert not signing.manifest_signature_valid({**signed, "count": 2}, key.public_key())


@pytest.mark.parametrize("value", ["not a key", base64.b64encode(b"short").decode()])
def test_signing_key__malformed__refused_clearly(settings, value):
    settings.TURNOUT_AUDIT_SIGNING_KEY = value
    with pytest.raises(ImproperlyConfigured, match="TURNOUT_AUDIT_SIGNING_KEY"):
        signing.signing_key()


def test_signing_key__unset_in_production__refused(settings):
    settings.TURNOUT_AUDIT_SIGNING_KEY = None
    settings.PRODUCTION = True
    with pytest.raises(ImproperlyConfigured, match="required in production"):
        signing.signing_key()


def test_signing_key__unset_in_development__generated_once_private_and_reused(settings, tmp_path, monkeypatch):
    settings.TURNOUT_AUDIT_SIGNING_KEY = None
    monkeypatch.setattr(signing, "_dev_key_path", lambda: tmp_path / "var" / signing.DEV_KEY_FILE)
    signing._load.cache_clear()
    first = signing.key_id(signing._dev_key().public_key())
    path = tmp_path / "var" / signing.DEV_KEY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert signing.key_id(signing._dev_key().public_key()) == first


@pytest.mark.django_db
def test_key_rotation__old_manifest__still_verifies_with_the_previous_key_published(history, settings, tmp_path,
                                                                                     capsys):
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    settings.TURNOUT_AUDIT_SIGNING_KEY = _pem(old)
    out = tmp_path / "audit.jsonl"
    call_command("audit_export", str(out))
    assert json.loads((tmp_path / "audit.jsonl.manifest.json").read_text())["key_id"] == signing.key_id(
        old.public_key())
    settings.TURNOUT_AUDIT_SIGNING_KEY = _raw_b64(new)
    with pytest.raises(CommandError, match="not among the trusted keys"):
        call_command("audit_verify_export", str(out), f"{out}.manifest.json")
    settings.TURNOUT_AUDIT_PREVIOUS_PUBLIC_KEYS = [_public_b64(old)]
    assert [k.current for k in signing.public_keys()] == [True, False]
    call_command("audit_verify_export", str(out), f"{out}.manifest.json")
    assert "VERIFIED" in capsys.readouterr().out
