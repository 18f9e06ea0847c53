"""Ruleset versions fanned out to the SDK streams held by this process.

Every stream subscribes here for its environment; a new version is handed to the process's event
loop once and written there to all of its streams in one pass (``rollout/delivery/fanout.py``). Each web process runs
ONE listener task (started with the process by the ASGI lifespan, ``config/asgi.py``, or else by
its first stream) that brings news of versions committed anywhere — not one connection per
stream. Every version it hears of also updates the process's copy of the current versions, which
the SDK endpoints answer from (``rollout/delivery/local.py``):

- Every change is handed at once to the subscribers of the process that committed it
  (``rollout.delivery.publish.announce_committed``).
- With Redis: the change's outbox rows are published on one pub/sub channel and the listener relays
  every message to the local subscribers. Each time it (re)subscribes it re-reads the current
  version of every environment it serves, so a message sent while it was not listening is not
  lost, and it drains the outbox: announcements Redis could not take while it was away go out as
  soon as this process reaches it again.
- Without Redis (embedded mode) there is no channel between processes. The listener reads the
  versions of the environments it serves from the database every ``STREAM_DB_POLL_SECONDS`` (one
  small query per process, only while streams are open), so a change committed by another
  process — a Celery worker's guardrail rollback or scheduled stage, a management command, a second
  web process — reaches the streams too, within that interval.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis
from django.db import connection

from common.conf import get_setting
from common.redis import channel, client_options, redis_url
from rollout.delivery import local
from rollout.models import Environment

logger = logging.getLogger("turnout.stream")

RULESET_CHANNEL = "ruleset"
RECONNECT_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)


class Subscriber(Protocol):
    """What the broadcaster needs of a stream (``rollout.delivery.fanout.EventStream``)."""

    environment: str
    loop: asyncio.AbstractEventLoop


FanOut = Callable[[list[Any], int], None]


class Broadcaster:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscriber]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._listener_loop: asyncio.AbstractEventLoop | None = None
        self._connect_hooks: list[Callable[[], object]] = []
        self._fan_out: FanOut | None = None

    def set_fan_out(self, fan_out: FanOut) -> None:
        """What writes a version to a loop's streams of one environment (``fanout.fan_out``, which
        registers itself here: every stream is made by that module)."""
        self._fan_out = fan_out

    def on_connect(self, hook: Callable[[], object]) -> None:
        """Run ``hook`` (in a worker thread) each time the listener (re)connects to Redis: the outbox
        (``rollout.delivery.publish``) drains what waited while it was away."""
        self._connect_hooks.append(hook)

    # -- subscribers (called on the event loop) -----------------------------------------------

    def subscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subs.setdefault(sub.environment, set()).add(sub)
        self._ensure_listener(sub.loop)

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            subs = self._subs.get(sub.environment)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.environment]

    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subs.values())

    # -- delivery (any thread) ----------------------------------------------------------------

    def deliver(self, environment: str, version: int) -> None:
        """Hand a version to this process's streams for that environment (thread-safe), and to the
        process's copy of the current versions (``rollout/delivery/local.py``).

        ONE fan-out per event loop (a web process has one): a single hand-over to the loop, which
        then offers the version to every stream of the environment — not one cross-thread wake-up
        per stream."""
        local.versions.offer(environment, version, time.monotonic())
        with self._lock:
            subs = list(self._subs.get(environment, ()))
        if not subs:
            return
        fan_out = self._fan_out
        assert fan_out is not None  # (set by the module that makes the streams)
        by_loop: dict[asyncio.AbstractEventLoop, list[Subscriber]] = {}
        for sub in subs:
            by_loop.setdefault(sub.loop, []).append(sub)
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, group in by_loop.items():
            if loop is running:
                fan_out(group, version)
                continue
            try:
                loop.call_soon_threadsafe(fan_out, group, version)
            except RuntimeError:  # that loop has closed: its streams are gone
                for sub in group:
                    self.unsubscribe(sub)

    def start(self) -> None:
        """Start the process's listener now (a web process at startup, on its event loop), so the
        process's copy of the current versions hears every change even before any stream opens."""
        self._ensure_listener(asyncio.get_running_loop())

    async def stop(self) -> None:
        task, self._listener = self._listener, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    # -- the Redis listener -------------------------------------------------------------------

    def _ensure_listener(self, loop: asyncio.AbstractEventLoop) -> None:
        task = self._listener
        if task is not None and not task.done() and self._listener_loop is loop:
            return
        self._listener_loop = loop
        # A fresh context: the listener outlives the request that started it (and its executor).
        self._listener = loop.create_task(self._listen(), name="turnout-ruleset-listener",
                                          context=contextvars.Context())

    async def _listen(self) -> None:
        if redis_url():
            await self._listen_redis()
        else:
            await self._watch_database()

    async def _watch_database(self) -> None:
        """Embedded mode: read the served environments' versions every few seconds while streams are open."""
        interval = max(0.05, float(get_setting("STREAM_DB_POLL_SECONDS")))
        known: dict[str, int] = {}
        while True:
            with self._lock:
                envs = list(self._subs)
            if not envs:
                # No stream left: stop; the next stream to subscribe starts a new listener.
                return
            try:
                for env_key, version in await asyncio.to_thread(_current_versions, envs):
                    # Only news is handed on (a stream reads the current version itself when it connects).
                    if known.get(env_key) != version:
                        known[env_key] = version
                        self.deliver(env_key, version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("stream.watch_error", extra={"error": type(exc).__name__}, exc_info=True)
            await asyncio.sleep(interval)

    async def _listen_redis(self) -> None:
        import redis.asyncio as aioredis

        url = redis_url()
        name = channel(RULESET_CHANNEL)
        attempt = 0
        while url:
            # The shared timeouts, but not the breaker: an idle read here is normal, not a failure.
            client = aioredis.Redis.from_url(url, **client_options())
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(name)
                    # Versions committed before the subscription took hold (at start, or while
                    # reconnecting) were announced to nobody here: read them.
                    await self._catch_up()
                    await self._drain_outbox()
                    attempt = 0
                    while True:
                        message = await pubsub.get_message(timeout=5.0)
                        if message is not None:
                            self._relay(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = RECONNECT_SECONDS[min(attempt, len(RECONNECT_SECONDS) - 1)]
                attempt += 1
                # Redis away is expected now and then (one line per attempt); anything else gets its traceback.
                logger.warning("stream.listener_error", extra={"error": type(exc).__name__, "retry_in": delay},
                               exc_info=not isinstance(exc, redis.RedisError))
                await asyncio.sleep(delay)
            finally:
                await client.aclose()

    def _relay(self, data: Any) -> None:
        try:
            message = json.loads(data)
            self.deliver(str(message["environment"]), int(message["version"]))
        except (ValueError, KeyError, TypeError):
            logger.warning("stream.bad_message")

    async def _catch_up(self) -> None:
        with self._lock:
            envs = list(self._subs)
        if not envs:
            return
        for env_key, version in await asyncio.to_thread(_current_versions, envs):
            self.deliver(env_key, version)


    async def _drain_outbox(self) -> None:
        try:
            await asyncio.to_thread(_run_connect_hooks, list(self._connect_hooks))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis or the database still away: beat and the next commit retry
            logger.warning("stream.outbox_drain_failed", extra={"error": type(exc).__name__})


def _run_connect_hooks(hooks: list[Callable[[], object]]) -> None:
    try:
        for hook in hooks:
            hook()
    finally:
        connection.close()  # a worker thread of the loop's executor: do not keep a connection there


def _current_versions(envs: list[str]) -> list[tuple[str, int]]:
    try:
        return list(Environment.objects.filter(key__in=envs).values_list("key", "ruleset_version"))
    finally:
        connection.close()  # a worker thread of the loop's executor: do not keep a connection there


broadcaster = Broadcaster()
