"""One Redis client per process (when ``REDIS_URL`` is configured): pub/sub and metrics counters.

The cache has its own client (Django's RedisCache); this one is for what a cache API cannot say:
publishing, pipelines of hash increments and atomic renames.
"""

from __future__ import annotations

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


def channel(name: str) -> str:
    """A pub/sub channel name. Pub/sub ignores database numbers, so the channel carries it: two
    installations sharing one Redis server on different databases never hear each other."""
    from redis.connection import parse_url

    url = redis_url()
    db = parse_url(url).get("db", 0) if url else 0
    return f"turnout:{db}:{name}"
