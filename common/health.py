"""Health checks for process managers and load balancers.

- ``GET /healthz`` — liveness: the process answers (no dependency is touched, so a database outage
  never makes a supervisor restart healthy web processes).
- ``GET /readyz`` — readiness: the database answers a query (else ``503``: this process cannot
  serve). Redis (when ``REDIS_URL`` is set) and the background processes are reported too, but do
  not take the process out of rotation: with Redis down the kill switch, rollbacks and SDK polling
  still work from the database, and a load balancer that dropped every web process for it would
  take the emergency lever away exactly when it is needed. So the answer is ``200`` with
  ``"status": "degraded"`` and the failing part named:

  ``{"status": "degraded", "checks": {"database": "ok", "redis": "error: ConnectionError"},
  "background": {"worker": "stale 95s", "beat": "ok", "schedule": "stale 95s"}}``

  ``background`` comes from the heartbeats in the database (common/heartbeats.py): ``worker`` and
  ``beat`` are the Celery processes, ``schedule`` is beat's schedule reaching a worker (the path
  guardrail checks take). Each is ``ok``, ``stale <age>s`` or ``missing``.

Both are answered by ``HealthCheckMiddleware``, first in the chain, before host validation and the
HTTPS redirect: probes come over plain HTTP with whatever ``Host`` the prober uses (a pod IP, say).
They carry no data, take no input, and are not logged per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse

from common import heartbeats
from common.hybrid import HybridMiddleware
from common.redis import breaker, client_options

logger = logging.getLogger("turnout.health")

CHECK_TIMEOUT_SECONDS = 2.0


def check_database() -> None:
    connection = connections["default"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_redis() -> None:
    client = _redis_client(str(settings.REDIS_URL))
    if not client.ping():
        raise redis.RedisError("PING was not answered")
    breaker.succeeded()  # Redis is back: this process need not wait for its retry interval


_clients: dict[str, Any] = {}


def _redis_client(url: str) -> Any:
    """A client of its own, outside the breaker: readiness asks Redis itself, every time."""
    client = _clients.get(url)
    if client is None:
        options = {**client_options(), "socket_timeout": CHECK_TIMEOUT_SECONDS,
                   "socket_connect_timeout": CHECK_TIMEOUT_SECONDS}
        client = redis.Redis.from_url(url, **options)
        _clients[url] = client
    return client


def readiness() -> tuple[str, dict[str, str], dict[str, str]]:
    """Runs every check; ``(status, {check: "ok" | error}, {background kind: "ok" | "stale Ns" |
    "missing"})`` where status is ``ok``, ``degraded`` (Redis or background failing) or
    ``unavailable`` (the database failing). Errors are logged, not raised."""
    checks: list[tuple[str, Callable[[], None]]] = [("database", check_database)]
    if getattr(settings, "REDIS_URL", None):
        checks.append(("redis", check_redis))
    results: dict[str, str] = {}
    for name, check in checks:
        start = time.perf_counter()
        try:
            check()
        except Exception as exc:
            results[name] = f"error: {type(exc).__name__}"
            logger.warning("health.check_failed", extra={"check": name, "error": str(exc)[:200],
                                                         "ms": round((time.perf_counter() - start) * 1000, 1)})
        else:
            results[name] = "ok"
    background: dict[str, str] = {}
    if results["database"] == "ok":
        try:
            background = heartbeats.status()
        except Exception as exc:  # the heartbeat table unreadable (a migration pending): say so
            background = {"heartbeats": f"error: {type(exc).__name__}"}
    # A failed check can leave the connection unusable; let Django replace it on the next request.
    connections["default"].close_if_unusable_or_obsolete()
    if results["database"] != "ok":
        state = "unavailable"
    elif any(value != "ok" for value in (*results.values(), *background.values())):
        state = "degraded"
    else:
        state = "ok"
    return state, results, background


def _liveness() -> HttpResponse:
    return JsonResponse({"status": "ok"})


def _readiness_response() -> HttpResponse:
    state, results, background = readiness()
    return JsonResponse({"status": state, "checks": results, "background": background},
                        status=503 if state == "unavailable" else 200)


class HealthCheckMiddleware(HybridMiddleware):
    """Answers ``/healthz`` and ``/readyz`` before anything else runs (see the module docstring)."""

    @staticmethod
    def _which(request: HttpRequest) -> str | None:
        if request.method not in ("GET", "HEAD"):
            return None
        if request.path == "/healthz":
            return "live"
        if request.path == "/readyz":
            return "ready"
        return None

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self.__acall__(request)
        which = self._which(request)
        if which == "live":
            return _liveness()
        if which == "ready":
            return _readiness_response()
        return self.respond(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        which = self._which(request)
        if which == "live":
            return _liveness()
        if which == "ready":
            # Database calls are synchronous: run them like a sync view (the request's thread, whose
            # connection Django closes or keeps at the end of the request as usual).
            return await sync_to_async(_readiness_response)()
        return await self.arespond(request)
