"""Reading a bearer credential from a request (``Authorization: Bearer …`` or ``X-API-Key``).

What a credential means (API tokens, SDK keys) is the rollout app's business: ``rollout/access/auth.py``.
"""

from __future__ import annotations

from django.http import HttpRequest


def bearer(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    api_key = request.headers.get("X-API-Key", "").strip()
    return api_key or None
