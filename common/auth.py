"""Bearer credentials: API tokens (``tok_…``, act as their user) and SDK keys (``sdk_…``, one environment)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.http import HttpRequest
from rest_framework import authentication, exceptions

from common.conf import get_setting
from common.redis import degrade
from common.secrets import digest


def bearer(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    api_key = request.headers.get("X-API-Key", "").strip()
    return api_key or None


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer tok_…`` — the request acts as the token's user."""

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        value = bearer(request)
        if value is None or not value.startswith("tok_"):
            return None
        from rollout.models import ApiToken
        from rollout.services.keys import key_touch

        token = (
            ApiToken.objects.select_related("user")
            .filter(secret_hash=digest(value), revoked_at__isnull=True, user__is_active=True)
            .first()
        )
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API token.")
        key_touch(ApiToken, token.pk)
        return token.user, token

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="api"'


@dataclass(frozen=True)
class SdkPrincipal:
    """What an SDK key may do: read and report for one environment."""

    key_id: int
    prefix: str
    environment_id: int
    environment: str
    is_authenticated: bool = True


# digest -> (monotonic expiry, cached row or False): spares the shared cache a round trip on the
# SDK's hot endpoints. Revocation clears it at once in the revoking process (forget_sdk_key) and
# within SDK_KEY_LOCAL_SECONDS everywhere else.
_local_keys: dict[str, tuple[float, Any]] = {}


def forget_sdk_key(key_digest: str) -> None:
    _local_keys.pop(key_digest, None)


class NotLocal:
    """``sdk_principal_local``'s answer when only ``sdk_principal`` can answer."""


NOT_LOCAL = NotLocal()


def sdk_principal_local(value: str | None) -> SdkPrincipal | NotLocal | None:
    """``sdk_principal``'s answer when the process-local copy gives it without any I/O (no cache,
    no database, no ``last_used`` bookkeeping due); ``NOT_LOCAL`` otherwise."""
    if not value or not value.startswith("sdk_"):
        return None
    local = _local_keys.get(digest(value))
    if local is None or local[0] <= time.monotonic():
        return NOT_LOCAL
    cached = local[1]
    if not cached:
        return None
    from rollout.models import SdkKey
    from rollout.services.keys import key_touch_due

    if key_touch_due(SdkKey, cached[0]):
        return NOT_LOCAL
    return SdkPrincipal(key_id=cached[0], prefix=cached[1], environment_id=cached[2], environment=cached[3])


def sdk_principal(value: str | None) -> SdkPrincipal | None:
    """Resolve an SDK key (cached by digest; revocation deletes the cache entries on commit)."""
    if not value or not value.startswith("sdk_"):
        return None
    from rollout.models import SdkKey
    from rollout.services.keys import key_touch, sdk_key_cache_key

    d = digest(value)
    now = time.monotonic()
    local = _local_keys.get(d)
    if local is not None and local[0] > now:
        cached = local[1]
        if not cached:
            return None
        key_touch(SdkKey, cached[0])
        return SdkPrincipal(key_id=cached[0], prefix=cached[1], environment_id=cached[2], environment=cached[3])
    ck = sdk_key_cache_key(d)
    # Redis away: the database answers (SDKs keep polling through an outage).
    cached = degrade(lambda: cache.get(ck), None, what="sdk_key")
    if cached is None:
        row = (
            SdkKey.objects.filter(secret_hash=d, revoked_at__isnull=True)
            .values_list("pk", "prefix", "environment_id", "environment__key")
            .first()
        )
        cached = list(row) if row else False
        degrade(lambda: cache.set(ck, cached, timeout=get_setting("SDK_KEY_CACHE_TIMEOUT")), None, what="sdk_key")
    local_seconds = get_setting("SDK_KEY_LOCAL_SECONDS")
    if local_seconds > 0:
        if len(_local_keys) > 10_000:
            _local_keys.clear()
        _local_keys[d] = (now + local_seconds, cached)
    if not cached:
        return None
    key_touch(SdkKey, cached[0])
    return SdkPrincipal(key_id=cached[0], prefix=cached[1], environment_id=cached[2], environment=cached[3])


class SdkKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer sdk_…`` (or ``X-API-Key``) for the SDK and OFREP endpoints."""

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        value = bearer(request)
        principal = sdk_principal(value)
        if principal is None:
            raise exceptions.AuthenticationFailed("Missing, invalid or revoked SDK key.")
        return principal, principal

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="sdk"'
