"""One Redis client per process (when ``REDIS_URL`` is configured): pub/sub and metrics counters.

The cache has its own client (Django's RedisCache); this one is for what a cache API cannot say:
publishing, pipelines of hash increments and atomic renames.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from django.conf import settings

_lock = threading.Lock()
_clients: dict[str, Any] = {}


def redis_url() -> str | None:
    return getattr(settings, "REDIS_URL", None) or None


def get_redis() -> Any | None:
    """The process's Redis client for ``REDIS_URL``, or None in embedded mode (no Redis)."""
    url = redis_url()
    if not url:
        return None
    client = _clients.get(url)
    if client is None:
        import redis

        with _lock:
            client = _clients.get(url)
            if client is None:
                client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5,
                                              health_check_interval=30)
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
        import redis.asyncio

        for closed in [old for old in _async_clients if old.is_closed()]:
            del _async_clients[closed]
        client = redis.asyncio.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5,
                                              health_check_interval=30)
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
