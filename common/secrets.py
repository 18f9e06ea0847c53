"""Random bearer secrets (SDK keys, API tokens): shown once, stored as a SHA-256 digest.

The secrets carry 256 bits of randomness, so a fast digest is the right storage (a slow password
hash would only slow every request); lookups are by digest and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX_LENGTH = 12


@dataclass(frozen=True)
class NewSecret:
    value: str  # shown to the user once, never stored
    prefix: str
    digest: str


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def new_secret(kind: str) -> NewSecret:
    value = f"{kind}_{secrets.token_urlsafe(32)}"
    return NewSecret(value=value, prefix=value[:PREFIX_LENGTH], digest=digest(value))


def matches(value: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(value), stored_digest)
