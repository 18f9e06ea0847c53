"""The SDK streams a web process holds, and the one pass that writes a change to all of them.

Each open stream is an ``EventStream``: its environment, what it asked for (patches, member-list
references), the version it was last sent, and the ``send`` it is written with (the ASGI server's,
or a queue feeding Django's streaming response, ``rollout/delivery/stream.py``). A stream's own
coroutine does nothing while the stream is idle but wait for its client to leave.

- **A change** reaching the process (``broadcast.Broadcaster.deliver``) is written to every stream of
  its environment in ONE pass on the event loop (``fan_out``): streams that were last sent the same
  version and asked for the same kind of event are one group, whose event is made once (a patch is
  computed once per base version, ``rollout/delivery/patches.py``) and the same bytes written to each
  of its streams. No stream's coroutine wakes. With 10,000 streams a coroutine woken per stream, each
  climbing through Django's streaming layers to reach the server, cost about half a second of the
  event loop per change (``bench/README.md``).
- **A slow client** never holds up the others: a write starts on the pass's own stack
  (``common.aio.start_now``) and one the server has to hold back (its flow control paused writing)
  finishes in a task of its own; the stream is then sent the newest version it missed.
- **Heartbeats** run on one schedule per event loop: each stream gets a ``: keep-alive`` comment
  every ``STREAM_HEARTBEAT_SECONDS`` from its own connection time (so thousands of streams told of
  one change do not all fall quiet and beat at once). The streams due together have their keys
  checked once per key, not once per stream; a stream whose key was revoked is ended.

A stream holds few objects for as long as it is open (no request, no middleware, no generator
chain): the garbage collector's full passes walk every object the process holds, and with 10,000
streams held the Django way such a pass took a second, which a change could land in.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from common import metrics
from common.aio import start_now
from common.conf import get_setting
from rollout.delivery import local
from rollout.delivery.broadcast import broadcaster
from rollout.delivery.patches import patches

logger = logging.getLogger("turnout.stream")

KEEP_ALIVE = b": keep-alive\n\n"
RETRY = b"retry: 1000\n\n"  # the reconnection delay a client should use (docs/sdk-protocol.md)

Send = Callable[[Mapping[str, Any]], Awaitable[None]]


@functools.lru_cache(maxsize=256)
def ruleset_event(environment: str, version: int) -> bytes:
    """The event announcing ``version`` (made once per version, not once per stream)."""
    data = json.dumps({"environment": environment, "version": version}, separators=(", ", ": "))
    return f"event: ruleset\nid: {version}\ndata: {data}\n\n".encode()


class EventStream:
    """One open stream. ``environment_id`` is set when the SDK asked for patches (``?patches=1``);
    ``refs``: its documents carry member-list references (``?members=1``)."""

    __slots__ = ("beat_at", "closed", "environment", "environment_id", "last", "loop", "pending", "refs",
                 "secret", "send", "wanted")

    def __init__(self, *, environment: str, send: Send, secret: str | None, environment_id: int | None = None,
                 refs: bool = False) -> None:
        self.environment = environment
        self.environment_id = environment_id
        self.refs = refs
        self.secret = secret
        self.send = send
        self.loop = asyncio.get_running_loop()
        self.last = 0  # the version last written
        self.wanted = 0  # the newest version announced while a write was still held back
        self.pending: asyncio.Task[Any] | None = None  # that write
        self.closed = False
        self.beat_at = 0.0


def open_stream(stream: EventStream, version: int) -> None:
    """Start ``stream``: subscribe it, then send the version it must hold now — the newest this
    process has heard of (subscribing first, a change announced in between still reaches it)."""
    broadcaster.subscribe(stream)
    version = max(version, local.versions.peek(stream.environment) or 0)
    metrics.stream_opened(stream.environment)
    _write(stream, RETRY + ruleset_event(stream.environment, version), version)
    _heartbeats().add(stream)


def close_stream(stream: EventStream) -> None:
    """Forget ``stream`` (its client went away, or it was ended); safe to call more than once."""
    if not stream.closed:
        stream.closed = True
        metrics.stream_closed(stream.environment)
    broadcaster.unsubscribe(stream)


def end_stream(stream: EventStream) -> None:
    """End ``stream`` from the server's side: the response is completed, the client reconnects."""
    if stream.closed:
        return
    pending, stream.pending = stream.pending, None
    if pending is not None:
        pending.cancel()
    _send(stream, b"", more=False)
    close_stream(stream)


# -- writing ------------------------------------------------------------------------------------


def _send(stream: EventStream, body: bytes, *, more: bool = True) -> asyncio.Task[Any] | None:
    try:
        return start_now(stream.send({"type": "http.response.body", "body": body, "more_body": more}))
    except Exception as exc:  # the server refused the message: the connection is gone
        logger.debug("stream.write_failed", extra={"error": type(exc).__name__})
        close_stream(stream)
        return None


def _write(stream: EventStream, body: bytes, version: int | None) -> None:
    """Write ``body`` (announcing ``version``, or a heartbeat: None) unless an earlier write is still
    held back, in which case the newest version is sent once that one is through."""
    if stream.closed:
        return
    if stream.pending is not None:
        if version is not None and version > stream.wanted:
            stream.wanted = version
        return
    if version is not None:
        stream.last = version
    held = _send(stream, body)
    if held is not None:
        stream.pending = held
        held.add_done_callback(functools.partial(_written, stream))


def _written(stream: EventStream, task: asyncio.Task[Any]) -> None:
    if stream.pending is not task:
        return
    stream.pending = None
    if task.cancelled() or task.exception() is not None:
        close_stream(stream)
    elif stream.wanted > stream.last:
        # Announced while the client was slow: send it the newest version now (a patch from the one it has, if it can).
        _spawn(stream.loop, _send_group([stream], stream.last, stream.wanted))


_background: set[asyncio.Task[Any]] = set()  # (tasks are only weakly held by the loop)


def _spawn(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> None:
    """A task of the process's streams, in a context of its own: not the one the change was handed
    over in (a request that committed it, on its own thread: a patch computed there would queue
    behind that request's own work, on its thread, ``asgiref.sync.ThreadSensitiveContext``)."""
    task = loop.create_task(coro, context=contextvars.Context())
    _background.add(task)
    task.add_done_callback(_background.discard)


def fan_out(streams: list[EventStream], version: int) -> None:
    """Write ``version`` to ``streams`` (one environment's, on their event loop): one event per group
    of streams in the same state, the same bytes to each of them."""
    groups: dict[tuple[int, int | None, bool], list[EventStream]] = {}
    for stream in streams:
        if stream.closed or stream.last >= version:
            continue
        if stream.pending is not None:
            stream.wanted = max(stream.wanted, version)
            continue
        groups.setdefault((stream.last, stream.environment_id, stream.refs), []).append(stream)
    for (base, environment_id, _refs), group in groups.items():
        if environment_id is None:
            _write_all(group, ruleset_event(group[0].environment, version), version)
        else:  # a patch from ``base``: computed (once per process) in a task, then written to the group
            _spawn(asyncio.get_running_loop(), _send_group(group, base, version))


def _write_all(group: list[EventStream], body: bytes, version: int) -> None:
    written = 0
    for stream in group:
        if not stream.closed and stream.last < version:
            _write(stream, body, version)
            written += 1
    if written:
        metrics.record_stream_event(environment=group[0].environment, count=written)


async def _send_group(group: list[EventStream], base: int, version: int) -> None:
    """Send ``version`` to streams last sent ``base``: as a patch from ``base`` when the SDK asked for
    patches and the process can make one, else as the version's announcement."""
    first = group[0]
    body, sent = ruleset_event(first.environment, version), version
    if first.environment_id is not None:
        patched = await patches.get(first.environment_id, base, first.refs)
        if patched is not None and patched[0] >= version:
            sent, body = patched
    # (a stream written to meanwhile no longer holds ``base``: the patch is not for it)
    _write_all([s for s in group if s.last == base], body, sent)
    rest = [s for s in group if s.last < version]
    if rest:
        _write_all(rest, ruleset_event(first.environment, version), version)


# -- heartbeats ---------------------------------------------------------------------------------


class Heartbeats:
    """One event loop's heartbeat schedule: its streams in the order their beats fall due (every
    stream beats at the same interval, so the order they joined in is the order they come due)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: deque[EventStream] = deque()
        self.task: asyncio.Task[None] | None = None

    def add(self, stream: EventStream) -> None:
        stream.beat_at = self.loop.time() + float(get_setting("STREAM_HEARTBEAT_SECONDS"))
        self.queue.append(stream)
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run(), name="turnout-stream-heartbeats",
                                              context=contextvars.Context())  # (outlives the stream that started it)

    async def _run(self) -> None:
        queue = self.queue
        while queue:
            now = self.loop.time()
            due: dict[str | None, list[EventStream]] = {}  # by key
            while queue and (queue[0].closed or queue[0].beat_at <= now):
                stream = queue.popleft()
                if not stream.closed:
                    due.setdefault(stream.secret, []).append(stream)
            if not due:
                if queue:
                    await asyncio.sleep(queue[0].beat_at - now)
                continue
            interval = float(get_setting("STREAM_HEARTBEAT_SECONDS"))
            for streams in due.values():
                for stream in streams:
                    stream.beat_at += interval
                    queue.append(stream)
            for secret, streams in due.items():
                # One check per key (not per stream), each on its own: a key whose check has to wait
                # holds up the beats of its own streams only, never the schedule.
                check = start_now(_beat(secret, streams))
                if check is not None:
                    _background.add(check)
                    check.add_done_callback(_background.discard)
            await asyncio.sleep(0)


async def _beat(secret: str | None, streams: list[EventStream]) -> None:
    """The keep-alive of ``streams`` (all of key ``secret``), or their end if the key was revoked."""
    from rollout.delivery.lean import asdk_principal  # (lean imports the views' helpers)

    try:
        revoked = await asdk_principal(secret) is None
    except Exception as exc:  # the key store away: beat anyway, check at the next beat
        logger.warning("stream.key_check_failed", extra={"error": type(exc).__name__})
        revoked = False
    for stream in streams:
        if stream.closed:
            continue
        if revoked:
            end_stream(stream)
        else:
            _write(stream, KEEP_ALIVE, None)


_schedules: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Heartbeats] = weakref.WeakKeyDictionary()


def _heartbeats() -> Heartbeats:
    loop = asyncio.get_running_loop()
    found = _schedules.get(loop)
    if found is None:
        found = _schedules[loop] = Heartbeats(loop)
    return found


broadcaster.set_fan_out(fan_out)
