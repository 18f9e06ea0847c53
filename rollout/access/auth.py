"""Bearer credentials of the API: API tokens (``tok_…``, act as their user) and SDK keys (``sdk_…``, one
environment) — resolving them (cached), recording their last use, and their OpenAPI descriptions.

Creating and revoking keys are audited services (``rollout/access/keys.py``); revocation tells this
module to forget a key at once (``forget_sdk_key``) and deletes the shared cache entries named here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.core.cache import cache
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from common.auth import bearer
from common.conf import get_setting
from common.redis import degrade
from common.secrets import digest
from rollout.models import ApiToken, SdkKey

if TYPE_CHECKING:
    from drf_spectacular.openapi import AutoSchema


def sdk_key_cache_key(digest: str) -> str:
    return f"sdkkey:{digest}"


def api_token_cache_key(digest: str) -> str:
    return f"apitoken:{digest}"


_touched: dict[tuple[str, int], float] = {}


def key_touch_due(model: type[SdkKey] | type[ApiToken], pk: int) -> bool:
    """Whether ``key_touch`` would do anything (else it returns at once, without I/O)."""
    return _touched.get((model.__name__, pk), 0.0) <= time.monotonic()


def key_touch(model: type[SdkKey] | type[ApiToken], pk: int) -> None:
    """Record last use, at most once per resolution window per key (bookkeeping, not audited).
    Each process remembers its own last touch, so a busy key costs no cache round trip."""
    resolution = get_setting("KEY_LAST_USED_RESOLUTION")
    memo = (model.__name__, pk)
    now = time.monotonic()
    if _touched.get(memo, 0.0) > now:
        return
    if len(_touched) > 10_000:
        _touched.clear()
    _touched[memo] = now + resolution
    # Redis away: every process writes (still at most once per window each, and only when older).
    if not degrade(lambda: cache.add(f"touch:{model.__name__}:{pk}", 1, timeout=resolution), True, what="touch"):
        return
    used_at = timezone.now()
    model.objects.filter(pk=pk).exclude(last_used_at__gt=used_at - timedelta(seconds=resolution)).update(
        last_used_at=used_at
    )


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer tok_…`` — the request acts as the token's user."""

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        value = bearer(request)
        if value is None or not value.startswith("tok_"):
            return None
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
    if key_touch_due(SdkKey, cached[0]):
        return NOT_LOCAL
    return SdkPrincipal(key_id=cached[0], prefix=cached[1], environment_id=cached[2], environment=cached[3])


def sdk_key_local_expiry(value: str | None) -> float | None:
    """When this process's copy of the key's lookup expires (monotonic), None without one (no I/O)."""
    if not value or not value.startswith("sdk_"):
        return None
    local = _local_keys.get(digest(value))
    return None if local is None else local[0]


def sdk_principal(value: str | None, *, fresh: bool = False) -> SdkPrincipal | None:
    """Resolve an SDK key (cached by digest; revocation deletes the cache entries on commit).
    ``fresh``: ask the shared cache (or the database) even if this process's copy is still valid,
    and renew the copy (a refresh ahead of its expiry)."""
    if not value or not value.startswith("sdk_"):
        return None
    d = digest(value)
    now = time.monotonic()
    local = _local_keys.get(d)
    if local is not None and local[0] > now and not fresh:
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


# --- OpenAPI: how the schema names the two schemes (registered when this module is imported) --------


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = ApiTokenAuthentication
    name = "apiToken"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "tok_…",
                "description": "An API token (`tok_…`), acting as its user."}


class SdkKeyScheme(OpenApiAuthenticationExtension):
    target_class = SdkKeyAuthentication
    name = "sdkKey"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "sdk_…",
                "description": "An SDK key (`sdk_…`), scoped to one environment; also accepted as `X-API-Key`."}
