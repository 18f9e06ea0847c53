"""Rate limits on the shared cache (Redis when configured): one base, a scope per kind of caller.

When the cache cannot be reached — refused, or hung past the cache client's socket timeout — a
throttle cannot count, so it decides by who is asking: a signed-in person or an API token goes
through (fail open: an operator pulling the kill switch during a Redis outage is never stopped by
the rate limiter), anyone else is refused with a JSON ``503 redis_unavailable`` (fail closed: an
outage never turns into unlimited password guessing). Either way the decision takes at most one
cache round trip, so it is bounded by the cache client's timeout.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from redis.exceptions import RedisError
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from common.errors import ServiceError
from common.middleware import client_address

logger = logging.getLogger("turnout.throttling")

# What a cache backend raises when its server is down or does not answer in time (the Redis client's
# own errors, and socket errors from below it).
CACHE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)


class CacheUnavailable(ServiceError):
    """The cache (Redis) did not answer, so an anonymous attempt cannot be counted: refused."""

    status_code = 503
    code = "redis_unavailable"  # the one code for the service that is down (common.errors)


def is_signed_in(request: Any) -> bool:
    """A person with a session or an API token (DRF sets ``request.auth`` for a token)."""
    user = getattr(request, "user", None)
    return bool(getattr(user, "is_authenticated", False)) or getattr(request, "auth", None) is not None


class ScopedThrottle(SimpleRateThrottle):
    """Reads its rate when used, not when imported, so settings overrides take effect."""

    scope: str  # every subclass names its scope

    def get_rate(self) -> str | None:
        rates: dict[str, str] = api_settings.DEFAULT_THROTTLE_RATES  # type: ignore[assignment]  # "N/period" strings; the stub says numbers
        return rates.get(self.scope)

    def get_ident(self, request: Any) -> str:
        return client_address(request) or "unknown"

    def allow_request(self, request: Any, view: Any) -> bool:
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        try:
            return self.count(request, view)
        except CACHE_ERRORS as exc:
            return self.cache_failed(request, exc)

    def count(self, request: Any, view: Any) -> bool:
        """DRF's sliding window on the cache: one read and one write."""
        return super().allow_request(request, view)

    def cache_failed(self, request: Any, exc: BaseException) -> bool:
        signed_in = is_signed_in(request)
        logger.warning("throttle.cache_unavailable", extra={
            "scope": self.scope, "decision": "open" if signed_in else "closed", "error": type(exc).__name__})
        if signed_in:
            return True
        raise CacheUnavailable("The cache (Redis) does not answer, so attempts cannot be counted; "
                               "try again shortly.")


class AuthThrottle(ScopedThrottle):
    """Signing in and issuing credentials: per client address, whoever it claims to be."""

    scope = "auth"

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class FailedSignInThrottle(ScopedThrottle):
    """Failed sign-ins per attempted username, from any address (the ``auth_username`` rate): what
    stops an attacker who rotates client addresses. ``allow_request`` only looks; ``failed`` counts.

    The username is compared case-insensitively and kept in the cache only as a hash.
    """

    scope = "auth_username"

    def __init__(self, username: str) -> None:
        super().__init__()
        digest = hashlib.sha256(username.strip().casefold().encode("utf-8", "surrogatepass")).hexdigest()
        self.ident = digest[:32]

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.ident}

    def count(self, request: Any, view: Any) -> bool:
        if self.num_requests is None or self.duration is None:
            self.history, self.key = [], ""  # no rate configured: nothing is limited or counted
            return True
        self.key, self.history, self.now = self.get_cache_key(request, view), [], self.timer()
        self.history = self.cache.get(self.key, [])
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        return len(self.history) < self.num_requests

    def failed(self) -> None:
        """Count one failed sign-in (after ``allow_request`` said yes)."""
        if not getattr(self, "key", ""):
            return
        try:
            self.history.insert(0, self.now)
            self.cache.set(self.key, self.history, self.duration)
        except CACHE_ERRORS as exc:
            # The attempt itself has been answered; the next one finds the cache down and is refused.
            logger.warning("throttle.cache_unavailable", extra={
                "scope": self.scope, "decision": "uncounted", "error": type(exc).__name__})


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
