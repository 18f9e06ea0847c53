"""Redis clients (when ``REDIS_URL`` is configured), every one with short connect and read timeouts.

Redis is a cache, a message bus and a counter store here — never the record. A request must not
wait on it for more than a moment, and a safety action (kill, rollback, pause) must not depend on it
at all. So every client made here (the process's sync client for pub/sub and counters, the asyncio
clients of async views, the Django cache backend below) shares three things:

- connect and socket timeouts of ``TURNOUT_REDIS_TIMEOUT`` seconds (default 1) and no retries: a
  caller that can do without Redis learns at once that it has to;
- a circuit breaker per process: after a connection error or a timeout, calls fail fast with
  ``RedisUnavailable`` (a ``redis.ConnectionError``) for ``TURNOUT_REDIS_RETRY_SECONDS``; then ONE
  call probes Redis again while the others keep failing fast, and its success closes the breaker.
  A hung Redis (a stopped process, a black-holed network) costs one timeout per process per retry
  interval, not one per request;
- errors stay ``redis.RedisError`` subclasses, so callers decide: degrade (a cache miss, a version
  read from the database: ``degrade`` below), fail open or closed (throttles), or answer a JSON 503
  ``redis_unavailable`` (``common.errors``).

The pub/sub listener of the SDK streams (rollout/delivery/broadcast.py) keeps its own connection with the
same timeouts but outside the breaker: idle reads there are normal, and it reconnects by itself.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.connection
import redis.connection
from django.conf import settings
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from redis.backoff import NoBackoff
from redis.retry import Retry

from common.conf import get_setting

logger = logging.getLogger("turnout.redis")

T = TypeVar("T")

_lock = threading.Lock()
_clients: dict[str, Any] = {}


class RedisUnavailable(redis.ConnectionError):
    """Redis failed moments ago: not asked again until the breaker's retry interval has passed."""


class Breaker:
    """This process's view of whether Redis answers (see the module docstring). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open_until = 0.0  # 0: closed (Redis answers)
        self._prober: int | None = None  # the thread probing Redis, once the retry interval has passed
        self._error = ""
        self._on_recovery: list[Callable[[], None]] = []

    def on_recovery(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (in a thread of its own, never on a caller's path) each time Redis
        answers again after the breaker opened: work deferred during the outage goes out now."""
        if callback not in self._on_recovery:
            self._on_recovery.append(callback)

    @property
    def is_open(self) -> bool:
        return self._open_until != 0.0

    def check(self) -> None:
        """Raise ``RedisUnavailable`` while open; past the retry interval, let one caller probe."""
        if self._open_until == 0.0:
            return
        ident = threading.get_ident()
        now = time.monotonic()
        with self._lock:
            if self._open_until == 0.0:
                return
            if now < self._open_until:
                if self._prober == ident:  # the probe itself, on its way (connect, handshake, command)
                    return
                raise RedisUnavailable(f"Redis is unavailable ({self._error}); retrying shortly")
            # This caller probes; the others fail fast until it has an answer (or the next interval).
            self._open_until = now + float(get_setting("REDIS_RETRY_SECONDS"))
            self._prober = ident

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            was_closed = self._open_until == 0.0
            self._open_until = time.monotonic() + float(get_setting("REDIS_RETRY_SECONDS"))
            self._prober = None
            self._error = type(exc).__name__
        if was_closed:
            logger.warning("redis.unavailable", extra={"error": type(exc).__name__, "detail": str(exc)[:200]})

    def succeeded(self) -> None:
        if self._open_until == 0.0:
            return
        with self._lock:
            was_open = self._open_until != 0.0
            self._open_until = 0.0
            self._prober = None
        if was_open:
            logger.info("redis.recovered")
            for callback in self._on_recovery:
                threading.Thread(target=_run_quietly, args=(callback,), name="turnout-redis-recovered",
                                 daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self._open_until = 0.0
            self._prober = None


def _run_quietly(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception as exc:
        logger.warning("redis.recovery_callback_failed", extra={"error": type(exc).__name__})


breaker = Breaker()
_FAILURES = (redis.ConnectionError, redis.TimeoutError)


class GuardedConnection(redis.connection.Connection):
    """A sync connection that consults and feeds the breaker."""

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self._sock:
            return
        breaker.check()
        try:
            super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)
        except _FAILURES as exc:
            breaker.failed(exc)
            raise

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        breaker.check()  # a pooled connection made before the failure is not asked either
        try:
            super().send_packed_command(command, check_health=check_health)  # type: ignore[no-untyped-call]  # unannotated in redis; super() calls bypass untyped_calls_exclude
        except RedisUnavailable:
            raise
        except _FAILURES as exc:
            breaker.failed(exc)
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            response = super().read_response(*args, **kwargs)  # type: ignore[no-untyped-call]  # unannotated in redis (as above)
        except _FAILURES as exc:
            breaker.failed(exc)
            raise
        breaker.succeeded()
        return response


class GuardedAsyncConnection(redis.asyncio.connection.Connection):
    """An asyncio connection that consults and feeds the same breaker."""

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self.is_connected:
            return
        breaker.check()
        try:
            await super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)
        except _FAILURES as exc:
            breaker.failed(exc)
            raise

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        breaker.check()  # a pooled connection made before the failure is not asked either
        try:
            await super().send_packed_command(command, check_health=check_health)
        except RedisUnavailable:
            raise
        except _FAILURES as exc:
            breaker.failed(exc)
            raise

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            response = await super().read_response(*args, **kwargs)
        except _FAILURES as exc:
            breaker.failed(exc)
            raise
        breaker.succeeded()
        return response


def timeout_seconds() -> float:
    return float(getattr(settings, "TURNOUT_REDIS_TIMEOUT", get_setting("REDIS_TIMEOUT")))


def client_options() -> dict[str, Any]:
    """Connection options every client shares: short timeouts, no retries, keepalive."""
    seconds = timeout_seconds()
    return {"socket_timeout": seconds, "socket_connect_timeout": seconds, "socket_keepalive": True,
            "retry": Retry(NoBackoff(), 0), "health_check_interval": 30}


def redis_url() -> str | None:
    return getattr(settings, "REDIS_URL", None) or None


def get_redis() -> Any | None:
    """The process's Redis client for ``REDIS_URL``, or None in embedded mode (no Redis)."""
    url = redis_url()
    if not url:
        return None
    client = _clients.get(url)
    if client is None:
        with _lock:
            client = _clients.get(url)
            if client is None:
                client = redis.Redis.from_url(url, connection_class=GuardedConnection, **client_options())
                _clients[url] = client
    return client


_async_clients: dict[asyncio.AbstractEventLoop, dict[str, Any]] = {}


def get_async_redis() -> Any | None:
    """A ``redis.asyncio`` client for ``REDIS_URL`` bound to the running event loop, or None in
    embedded mode. An asyncio connection belongs to the loop that opened it, so each loop gets its
    own client (an ASGI worker runs one loop for its whole life: one client per process); clients
    of loops that have since closed are dropped when the next one is created."""
    url = redis_url()
    if not url:
        return None
    loop = asyncio.get_running_loop()
    clients = _async_clients.get(loop)
    client = clients.get(url) if clients is not None else None
    if client is None:
        for closed in [old for old in _async_clients if old.is_closed()]:
            del _async_clients[closed]
        client = redis.asyncio.Redis.from_url(url, connection_class=GuardedAsyncConnection, **client_options())
        _async_clients.setdefault(loop, {})[url] = client
    return client


async def close_async_redis() -> None:
    """Close the running loop's async clients (before a short-lived loop, a test's say, ends)."""
    for client in _async_clients.pop(asyncio.get_running_loop(), {}).values():
        await client.aclose()


def channel(name: str) -> str:
    """A pub/sub channel name. Pub/sub ignores database numbers, so the channel carries it: two
    installations sharing one Redis server on different databases never hear each other."""
    from redis.connection import parse_url

    url = redis_url()
    db = parse_url(url).get("db", 0) if url else 0
    return f"turnout:{db}:{name}"


def degrade(call: Callable[[], T], default: T, *, what: str) -> T:
    """``call()``, or ``default`` when Redis fails: for reads and writes a cache may lose (a miss,
    a write that did not happen). Never use it for what must not be lost."""
    try:
        return call()
    except redis.RedisError as exc:
        logger.debug("redis.degraded", extra={"what": what, "error": type(exc).__name__})
        return default


class RedisCache(DjangoRedisCache):
    """Django's Redis cache backend on guarded connections: short timeouts, no retries, the breaker.

    Errors still raise (``redis.RedisError``): the throttles need to know the count was not taken.
    Callers for whom a failure is only a miss wrap the call in ``degrade``. ``OPTIONS`` given in
    ``CACHES`` override the shared connection options.
    """

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        options = {"connection_class": GuardedConnection, **client_options(), **params.get("OPTIONS", {})}
        super().__init__(server, {**params, "OPTIONS": options})
