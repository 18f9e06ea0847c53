"""The process's one fan-out to its SDK streams (``rollout/delivery/fanout.py``, ``common/aio.py``).

A change is written to every stream of its environment in one pass; a stream whose client reads
slowly finishes its write in a task of its own and then gets the newest version, never holding up
the others; an open stream served by the SDK routes' handler keeps nothing of its request or
response; a stream ended by the server completes its response. Through the real ASGI application
(and, for the slow reader, a real uvicorn process and Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import redis

from common import redis as turnout_redis
from common.aio import start_now
from common.redis import channel
from rollout.access import auth
from rollout.access.keys import sdk_key_create, sdk_key_revoke
from rollout.delivery import local
from rollout.delivery.broadcast import RULESET_CHANNEL, broadcaster
from rollout.delivery.fanout import EventStream, close_stream, open_stream
from rollout.models import Environment
from rollout.services.flags import flag_state_update

pytestmark = pytest.mark.django_db
ENV = "fanout-test"  # no such environment in the database: only the test's versions reach its streams


def _versions(bodies: list[bytes]) -> list[int]:
    return [int(line[3:]) for body in bodies for line in body.decode().splitlines() if line.startswith("id:")]


def _run(scenario: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """On a plain event loop in a thread of its own, as under a server (not a test helper's loop)."""
    result: list[Any] = []
    errors: list[BaseException] = []

    async def main() -> Any:
        try:
            return await scenario()
        finally:
            await broadcaster.stop()
            await turnout_redis.close_async_redis()

    def target() -> None:
        try:
            result.append(asyncio.run(main()))
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    runner = threading.Thread(target=target)
    runner.start()
    runner.join(60)
    if runner.is_alive():  # where it is stuck, for the report
        frame = sys._current_frames().get(runner.ident or 0)
        pytest.fail("the scenario did not finish within 60 s:\n" + "".join(traceback.format_stack(frame)))
    if errors:
        raise errors[0]
    return result[0] if result else None


# -- start_now --------------------------------------------------------------------------------


def test_start_now__coroutine_that_does_not_wait__finished_within_the_call_without_a_task():
    async def scenario() -> None:
        done: list[int] = []

        async def quick() -> None:
            done.append(1)

        assert start_now(quick()) is None
        assert done == [1]

    asyncio.run(scenario())


def test_start_now__coroutine_that_waits__a_task_finishes_it_once_its_future_is_done():
    async def scenario() -> None:
        future = asyncio.get_running_loop().create_future()
        steps: list[str] = []

        async def slow() -> str:
            steps.append("before")
            steps.append(await future)
            await asyncio.sleep(0)  # a bare yield too
            steps.append("after")
            return "result"

        task = start_now(slow())
        assert task is not None and steps == ["before"]
        future.set_result("got")
        assert await task == "result"
        assert steps == ["before", "got", "after"]

    asyncio.run(scenario())


def test_start_now__raises_before_waiting__raised_within_the_call():
    async def scenario() -> None:
        async def broken() -> None:
            raise ValueError("refused")

        with pytest.raises(ValueError, match="refused"):
            start_now(broken())

    asyncio.run(scenario())


def test_start_now__awaited_future_fails__raised_inside_the_coroutine():
    async def scenario() -> None:
        future = asyncio.get_running_loop().create_future()
        caught: list[str] = []

        async def slow() -> None:
            try:
                await future
            except OSError as exc:
                caught.append(str(exc))

        task = start_now(slow())
        assert task is not None
        future.set_exception(OSError("gone"))
        await task
        assert caught == ["gone"]

    asyncio.run(scenario())


@pytest.mark.parametrize("turn", [True, False], ids=["after_a_loop_turn", "before_its_first_step"])
def test_start_now__task_cancelled__what_it_waits_on_cancelled_and_the_coroutine_told(turn):
    """As a task (or Python 3.12's eager task) would — also when the task is cancelled before the
    loop has run it (``end_stream`` from the heartbeat pass, in the loop turn the write was held back
    in): the write is not left suspended on the server's flow control for ever."""
    async def scenario() -> tuple[list[bool], bool]:
        future = asyncio.get_running_loop().create_future()
        cleaned: list[bool] = []

        async def slow() -> None:
            try:
                await future
            except asyncio.CancelledError:
                cleaned.append(True)
                raise

        task = start_now(slow())
        assert task is not None
        if turn:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return cleaned, future.cancelled()

    assert asyncio.run(scenario()) == ([True], True)


# -- the fan-out --------------------------------------------------------------------------------


def test_fan_out__one_stream_reads_slowly__others_written_at_once_then_it_gets_the_newest_version():
    """The slow stream's held-back write finishes in its own task; meanwhile the others are written
    in the same pass; once through, it is sent the newest version (3 is skipped: nothing older)."""

    async def scenario() -> tuple[list[int], list[int], list[int]]:
        gate = asyncio.Event()
        fast: list[bytes] = []
        slow: list[bytes] = []
        calls = 0

        async def fast_send(message: Any) -> None:
            fast.append(message["body"])

        async def slow_send(message: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 2:  # its first change: the server holds the write back (the client reads slowly)
                await gate.wait()
            slow.append(message["body"])

        streams = [EventStream(environment=ENV, send=fast_send, secret=None),
                   EventStream(environment=ENV, send=slow_send, secret=None)]
        for stream in streams:
            open_stream(stream, 1)
        for version in (2, 3, 4):
            broadcaster.deliver(ENV, version)  # on the loop: written within the call
        during = _versions(slow)
        assert _versions(fast) == [1, 2, 3, 4]
        gate.set()
        async with asyncio.timeout(5):
            while len(_versions(slow)) < 3:
                await asyncio.sleep(0.01)
        for stream in streams:
            close_stream(stream)
        return during, _versions(slow), _versions(fast)

    during, slow, fast = _run(scenario)
    assert during == [1]
    assert slow == [1, 2, 4]
    assert fast == [1, 2, 3, 4]


def test_fan_out__stream_closed__not_written_and_unsubscribed():
    async def scenario() -> tuple[list[int], int]:
        bodies: list[bytes] = []

        async def send(message: Any) -> None:
            bodies.append(message["body"])

        stream = EventStream(environment=ENV, send=send, secret=None)
        open_stream(stream, 5)
        close_stream(stream)
        close_stream(stream)  # (twice is harmless)
        broadcaster.deliver(ENV, 6)
        return _versions(bodies), broadcaster.subscriber_count()

    versions, subscribers = _run(scenario)
    assert versions == [5]
    assert subscribers == 0


def test_fan_out__server_refuses_a_write__stream_closed():
    async def scenario() -> tuple[bool, int]:
        async def send(message: Any) -> None:
            raise RuntimeError("Unexpected ASGI message 'http.response.body' sent, after response already completed.")

        stream = EventStream(environment=ENV, send=send, secret=None)
        open_stream(stream, 1)
        return stream.closed, broadcaster.subscriber_count()

    closed, subscribers = _run(scenario)
    assert closed and subscribers == 0


# -- through the application --------------------------------------------------------------------


@pytest.fixture
def key(flag, actor, redis_url, settings):  # type: ignore[no-untyped-def]
    settings.REDIS_URL = redis_url
    flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, enabled=True, percentage_value=25)
    secret = sdk_key_create(actor=actor, environment="staging", name="svc")[1]
    assert auth.sdk_principal(secret) is not None  # the process's copy of the key: no thread per stream
    local.versions.offer("staging", Environment.objects.get(key="staging").ruleset_version, time.monotonic())
    return secret


class AsgiStream:
    """One stream through ``config.asgi.application``, with a server's ``receive``: after the request,
    it waits for the client to leave — or, as ASGI servers do, answers ``http.disconnect`` once the
    application has completed the response."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.status: int | None = None
        self.bodies: list[bytes] = []
        self.first = asyncio.Event()
        self.complete = asyncio.Event()
        self.leave = asyncio.Event()
        self._sent_request = False

    async def receive(self) -> dict[str, Any]:
        if not self._sent_request:
            self._sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        leave, complete = asyncio.create_task(self.leave.wait()), asyncio.create_task(self.complete.wait())
        await asyncio.wait((leave, complete), return_when=asyncio.FIRST_COMPLETED)
        leave.cancel()
        complete.cancel()
        return {"type": "http.disconnect"}

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            if message.get("body"):
                self.bodies.append(message["body"])
                self.first.set()
            if not message.get("more_body"):
                self.complete.set()

    async def run(self, *, django_only: bool = False) -> None:
        """Through the project's application, or with ``django_only`` through Django's own ASGI handler
        alone (as a deployment without the SDK routes' handler, or the test client, serves it)."""
        from config.asgi import application, django_application

        headers = [(b"authorization", f"Bearer {self.key}".encode()), (b"host", b"127.0.0.1")]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": "/api/v1/sdk/stream", "raw_path": b"/api/v1/sdk/stream",
                 "query_string": b"", "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000),
                 "server": ("127.0.0.1", 80)}
        await (django_application if django_only else application)(scope, self.receive, self.send)


def test_stream__open_through_the_sdk_handler__holds_nothing_of_its_request_or_response(key, settings, monkeypatch):
    """With 10,000 streams, what each keeps alive is what the garbage collector's full passes walk:
    held the Django way (request, middleware frames, the streaming response's generators) a pass took
    a second, and a change could land in it. Regression: the handler kept every stream's request.
    (Each request and response of the test is followed by a weak reference: gone means nothing holds
    it, without running a collection over the rest of the process's objects.)"""
    from django.http import StreamingHttpResponse

    from rollout.delivery.asgi import LeanASGIHandler

    settings.TURNOUT_STREAM_HEARTBEAT_SECONDS = 30
    settings.TURNOUT_SDK_VERSION_LOCAL_SECONDS = 3600
    followed: list[weakref.ref[Any]] = []
    create_request = LeanASGIHandler.create_request
    response_init = StreamingHttpResponse.__init__

    def following_request(self: Any, *args: Any, **kwargs: Any) -> Any:
        request, error = create_request(self, *args, **kwargs)
        followed.append(weakref.ref(request))
        return request, error

    def following_response(self: Any, *args: Any, **kwargs: Any) -> None:
        response_init(self, *args, **kwargs)
        followed.append(weakref.ref(self))

    monkeypatch.setattr(LeanASGIHandler, "create_request", following_request)
    monkeypatch.setattr(StreamingHttpResponse, "__init__", following_response)

    async def scenario() -> tuple[list[int | None], int, list[str]]:
        streams = [AsgiStream(key) for _ in range(20)]
        tasks = [asyncio.create_task(s.run()) for s in streams]
        async with asyncio.timeout(30):
            for stream in streams:
                await stream.first.wait()
        await asyncio.sleep(0.05)  # (each handler past its response)
        alive = [type(ref()).__name__ for ref in followed if ref() is not None]
        held = broadcaster.subscriber_count()
        for stream in streams:
            stream.leave.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*tasks)
        return [s.status for s in streams], held, alive

    statuses, held, alive = _run(scenario)
    assert statuses == [200] * 20
    assert held == 20
    assert len(followed) == 40  # 20 requests, 20 responses
    assert alive == []


def test_stream__change_through_the_sdk_handler__every_stream_told_and_client_leaving_unsubscribes(key, settings):
    settings.TURNOUT_STREAM_HEARTBEAT_SECONDS = 30
    settings.TURNOUT_SDK_VERSION_LOCAL_SECONDS = 3600

    async def scenario() -> tuple[list[list[int]], int]:
        streams = [AsgiStream(key) for _ in range(5)]
        tasks = [asyncio.create_task(s.run()) for s in streams]
        async with asyncio.timeout(30):
            for stream in streams:
                await stream.first.wait()
        first = _versions(streams[0].bodies)[0]
        broadcaster.deliver("staging", first + 1)
        for stream in streams:
            stream.leave.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*tasks)
        return [_versions(s.bodies) for s in streams], broadcaster.subscriber_count()

    versions, left = _run(scenario)
    assert all(v == [versions[0][0], versions[0][0] + 1] for v in versions), versions
    assert left == 0


@pytest.mark.django_db(transaction=True)
def test_stream__key_revoked__sdk_handler_completes_the_response_at_the_next_heartbeat(key, actor, settings):
    """A stream ended by the server (its key revoked) completes its response, and the handler's call
    returns (the server then closes or reuses the connection)."""
    settings.TURNOUT_STREAM_HEARTBEAT_SECONDS = 0.05
    settings.TURNOUT_SDK_KEY_LOCAL_SECONDS = 0  # (no process copy: each heartbeat asks)

    async def scenario() -> tuple[bool, list[bytes], int]:
        stream = AsgiStream(key)
        task = asyncio.create_task(stream.run())
        async with asyncio.timeout(30):
            await stream.first.wait()
        await asyncio.to_thread(_revoke, actor, key)
        async with asyncio.timeout(10):
            await task
        return stream.complete.is_set(), stream.bodies, broadcaster.subscriber_count()

    complete, bodies, left = _run(scenario)
    assert complete
    assert b": keep-alive\n\n" in bodies or len(bodies) == 1
    assert left == 0


def _revoke(actor: Any, key: str) -> None:
    from django.db import connection

    from rollout.models import SdkKey

    try:
        sdk_key_revoke(actor=actor, prefix=SdkKey.objects.get().prefix)
    finally:
        connection.close()


# -- a real server ------------------------------------------------------------------------------


@pytest.mark.services
def test_stream__client_stops_reading__others_still_told_at_once_and_it_catches_up_to_the_newest(
        server_process, redis_url, actor, flag):
    """A real uvicorn process and Redis: one client stops reading until the server's flow control
    holds its writes back; 40,000 versions announced meanwhile all reach the other stream, and the
    slow one, once it reads again, is brought to the newest version without every step between."""
    secret = sdk_key_create(actor=actor, environment="staging", name="svc")[1]
    server_process.start()
    host, port = "127.0.0.1", server_process.port
    request = (f"GET /api/v1/sdk/stream HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {secret}\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()

    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (before connecting: the window it offers)
    slow.connect((host, port))
    slow.sendall(request)
    fast = socket.create_connection((host, port))
    fast.sendall(request)
    fast.settimeout(20)
    received: list[bytes] = []
    told = threading.Event()

    def read_fast() -> None:  # (a client that keeps reading)
        with contextlib.suppress(OSError):
            while chunk := fast.recv(65536):
                received.append(chunk)
                if not told.is_set() and _versions([b"".join(received)]):
                    told.set()

    reader = threading.Thread(target=read_fast, daemon=True)
    reader.start()
    assert told.wait(20), "the stream sent no first event"
    start = _versions([b"".join(received)])[0]
    time.sleep(0.2)  # (the slow stream has connected too)

    last = start + 40_000
    client = redis.Redis.from_url(redis_url)
    pipe = client.pipeline(transaction=False)
    name = channel(RULESET_CHANNEL)
    for version in range(start + 1, last + 1):
        pipe.publish(name, json.dumps({"environment": "staging", "version": version}))
    pipe.execute()

    deadline = time.monotonic() + 20
    while f"id: {last}\n".encode() not in b"".join(received[-2:]) and time.monotonic() < deadline:
        time.sleep(0.01)
    fast_versions = _versions([b"".join(received)])
    assert fast_versions == list(range(start, last + 1))

    slow.settimeout(5)
    slow_received = b""
    deadline = time.monotonic() + 20
    while f"id: {last}\n".encode() not in slow_received and time.monotonic() < deadline:
        slow_received += slow.recv(65536)
    slow_versions = _versions([slow_received])
    assert slow_versions[-1] == last
    assert slow_versions == sorted(set(slow_versions))
    assert len(slow_versions) < len(fast_versions)  # held back, then brought to the newest
    for sock in (slow, fast):
        sock.close()
    client.close()


@pytest.mark.parametrize(("root", "path", "lean"), [
    ("", "/api/v1/sdk/stream", True),
    ("/turnout", "/turnout/api/v1/sdk/stream", True),
    ("/turnout", "/turnout/ofrep/v1/evaluate/flags", True),
    ("/turnout", "/turnout/flags/", False),
    ("", "/turnout/api/v1/sdk/stream", False),
])
def test_sdk_routes__deployed_under_a_root_path__still_served_by_the_lean_handler(root, path, lean):
    """An ASGI ``path`` includes the deployment's ``root_path``: the SDK routes were matched against
    the whole path, so under a prefix every stream went through the full middleware chain and
    Django's streaming response instead."""
    from rollout.delivery.asgi import sdk_asgi_application

    reached: list[str] = []

    def app(name: str) -> Any:
        async def call(scope: Any, receive: Any, send: Any) -> None:
            reached.append(name)
        return call

    application = sdk_asgi_application(app("full"), app("lean"))
    asyncio.run(application({"type": "http", "path": path, "root_path": root}, None, None))
    assert reached == ["lean" if lean else "full"]
