"""Rate limits on the shared cache (Redis when configured): one base, a scope per kind of caller."""

from __future__ import annotations

from typing import Any

import redis
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle


class ScopedThrottle(SimpleRateThrottle):
    """Reads its rate when used, not when imported, so settings overrides take effect."""

    scope: str  # every subclass names its scope

    def get_rate(self) -> str | None:
        # The rates are "N/period" strings; the stub types them as numbers.
        rates: dict[str, str] = api_settings.DEFAULT_THROTTLE_RATES  # type: ignore[assignment]
        return rates.get(self.scope)

    def allow_request(self, request: Any, view: Any) -> bool:
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        try:
            return super().allow_request(request, view)
        except redis.RedisError:
            # The counts are in Redis and it is away: a signed-in caller is let through (the kill
            # switch must work in an outage); anyone else gets 503 redis_unavailable.
            if getattr(request.user, "is_authenticated", False):
                return True
            raise


class AuthThrottle(ScopedThrottle):
    """Signing in and issuing credentials: per client address, whoever it claims to be."""

    scope = "auth"

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class ApiThrottle(ScopedThrottle):
    """The management API: per API token, else per signed-in user, else per client address."""

    scope = "api"

    def get_cache_key(self, request: Any, view: Any) -> str:
        token = getattr(request, "auth", None)
        prefix = getattr(token, "prefix", None)
        if prefix:
            ident = f"token:{prefix}"
        elif getattr(request.user, "is_authenticated", False):
            ident = f"user:{request.user.pk}"
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}
