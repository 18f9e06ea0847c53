"""Faults against the SDK streams' one fan-out pass (``rollout/delivery/fanout.py``): slow clients whose
writes are held back, clients leaving meanwhile, revoked keys, server shutdown, exceptions escaping
into the event loop, the open-streams gauge. Real uvicorn processes where it matters."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from common.redis import channel
from rollout.access.keys import sdk_key_create
from rollout.delivery.broadcast import RULESET_CHANNEL, broadcaster
from tests.conftest import ROOT, ServerProcess, subprocess_env, wait_for_port
from tests.rollout.test_stream_fanout import AsgiStream, key  # noqa: F401  (key: the fixture)

pytestmark = pytest.mark.django_db

LOOP_ERRORS = ("Task exception was never retrieved", "Exception in callback", "exception in callback",
               "Task was destroyed but it is pending")


def _loop_errors(text: str) -> list[str]:
    """Lines of errors escaping into the event loop; a traceback other than uvicorn's for a stream's
    task it cancelled once the graceful shutdown's timeout passed."""
    errors = [line for line in text.splitlines() if any(e in line for e in LOOP_ERRORS)]
    tracebacks = text.count("Traceback (most recent call last)")
    cancelled = text.count("CancelledError: Task cancelled, timeout graceful shutdown exceeded")
    if tracebacks != cancelled:
        errors.append(f"{tracebacks} tracebacks, {cancelled} of them the graceful shutdown's cancellation")
    return errors


def _versions(data: bytes) -> list[int]:
    return [int(line[3:]) for line in data.decode(errors="replace").splitlines() if line.startswith("id:")]


class LoggedServer(ServerProcess):
    """``ServerProcess`` whose stderr goes to a file the test reads."""

    def __init__(self, log: Path, *args: str, **env: str) -> None:
        super().__init__(**env)
        self.log = log
        self.args = args

    def start(self) -> LoggedServer:
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning", *self.args],
            cwd=ROOT, env=subprocess_env(**self.env), stderr=self._out, stdout=self._out,
        )
        wait_for_port(self.port, self.proc)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def logged_server(transactional_db: Any, tmp_path: Path):  # type: ignore[no-untyped-def]
    servers: list[LoggedServer] = []

    def make(*args: str, **env: str) -> LoggedServer:
        server = LoggedServer(tmp_path / f"server{len(servers)}.log", *args, **env)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def _request(host: str, secret: str, query: str = "") -> bytes:
    return (f"GET /api/v1/sdk/stream{query} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {secret}\r\n"
            "Accept: text/event-stream\r\n\r\n").encode()


def _slow_socket(host: str, port: int, request: bytes) -> socket.socket:
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((host, port))
    slow.sendall(request)
    return slow


class Reader:
    """A client that keeps reading its stream in a thread."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.sendall(request)
        self.received: list[bytes] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            while chunk := self.sock.recv(65536):
                self.received.append(chunk)
        self.closed.set()

    def data(self) -> bytes:
        return b"".join(self.received)

    def wait_for(self, predicate: Any, timeout: float = 20) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.data()):
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        self.thread.join(5)


def _gauge(host: str, port: int) -> float:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    found = re.findall(rb'^turnout_stream_connections\{environment="staging"\} ([0-9.e+-]+)', data, re.M)
    return float(found[0]) if found else 0.0


def _publish(redis_url: str, start: int, count: int) -> int:
    client = redis.Redis.from_url(redis_url)
    pipe = client.pipeline(transaction=False)
    name = channel(RULESET_CHANNEL)
    for version in range(start + 1, start + count + 1):
        pipe.publish(name, json.dumps({"environment": "staging", "version": version}))
    pipe.execute()
    client.close()
    return start + count


@pytest.mark.services
def test_slow_client_leaves_while_held_back__others_still_told__gauge_back_to_zero__no_loop_errors(
        logged_server, redis_url, actor, flag):
    secret = sdk_key_create(actor=actor, environment="staging", name="svc")[1]
    server = logged_server("--timeout-graceful-shutdown", "1", REDIS_URL=redis_url).start()
    host, port = "127.0.0.1", server.port
    fast = Reader(host, port, _request(host, secret))
    assert fast.wait_for(_versions), "no first event"
    start = _versions(fast.data())[0]
    slows = [_slow_socket(host, port, _request(host, secret, q)) for q in ("", "?patches=1&members=1", "?patches=1")]
    time.sleep(0.5)
    last = _publish(redis_url, start, 30_000)  # the slow ones are held back
    assert fast.wait_for(lambda d: f"id: {last}\n".encode() in d), "the fast stream missed the newest version"
    for slow in slows:  # leave while held back (unread data: the kernel resets the connection)
        slow.close()
    time.sleep(0.5)
    last = _publish(redis_url, last, 5)
    assert fast.wait_for(lambda d: f"id: {last}\n".encode() in d)
    assert _gauge(host, port) == 1.0
    fast.close()
    deadline = time.monotonic() + 10
    while _gauge(host, port) != 0.0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gauge(host, port) == 0.0
    server.stop()
    assert _loop_errors(server.text()) == [], server.text()


@pytest.mark.services
def test_shutdown_with_open_streams_some_held_back__process_exits_without_loop_errors(
        logged_server, redis_url, actor, flag):
    secret = sdk_key_create(actor=actor, environment="staging", name="svc")[1]
    server = logged_server("--timeout-graceful-shutdown", "1", REDIS_URL=redis_url).start()
    host, port = "127.0.0.1", server.port
    fast = Reader(host, port, _request(host, secret))
    assert fast.wait_for(_versions), "no first event"
    start = _versions(fast.data())[0]
    slows = [_slow_socket(host, port, _request(host, secret, q)) for q in ("", "?patches=1&members=1")]
    time.sleep(0.5)
    last = _publish(redis_url, start, 30_000)
    assert fast.wait_for(lambda d: f"id: {last}\n".encode() in d)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("the server did not exit within 15 s of SIGTERM with open streams:\n" + server.text())
    for slow in slows:
        slow.close()
    fast.close()
    text = server.text()
    assert _loop_errors(text) == [], text


def _read_until_end(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Read ``sock`` until the chunked response ends (``0\\r\\n\\r\\n``) or the server closes it."""
    sock.settimeout(1)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return data, False
        if not chunk:
            return data, True
        data += chunk
        if data.endswith(b"\r\n0\r\n\r\n"):
            return data, True
    return data, False


@pytest.mark.services
def test_key_revoked_while_a_write_is_held_back__response_completed_once_the_client_reads(
        logged_server, redis_url, actor, flag):
    from rollout.access.keys import sdk_key_revoke
    from rollout.models import SdkKey

    secret = sdk_key_create(actor=actor, environment="staging", name="svc")[1]
    server = logged_server("--timeout-graceful-shutdown", "1", REDIS_URL=redis_url,
                           TURNOUT_STREAM_HEARTBEAT_SECONDS="0.2").start()
    host, port = "127.0.0.1", server.port
    fast = Reader(host, port, _request(host, secret))
    assert fast.wait_for(_versions), "no first event"
    start = _versions(fast.data())[0]
    slows = [_slow_socket(host, port, _request(host, secret, q)) for q in ("", "?patches=1&members=1")]
    time.sleep(0.5)
    last = _publish(redis_url, start, 30_000)
    assert fast.wait_for(lambda d: f"id: {last}\n".encode() in d)
    sdk_key_revoke(actor=actor, prefix=SdkKey.objects.get().prefix)
    assert fast.wait_for(lambda d: d.endswith(b"\r\n0\r\n\r\n"), timeout=20), "the fast stream was not ended"
    time.sleep(1)  # (the slow ones' heartbeats have found the key revoked meanwhile)
    for slow in slows:
        data, ended = _read_until_end(slow, 20)
        assert ended, data[-200:]
        slow.close()
    fast.close()
    deadline = time.monotonic() + 10
    while _gauge(host, port) != 0.0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gauge(host, port) == 0.0
    server.stop()
    assert _loop_errors(server.text()) == [], server.text()


@pytest.mark.services
def test_embedded_mode__slow_client_leaves__others_told_by_the_database_watcher(logged_server, actor, flag):
    from rollout.services.flags import flag_state_update

    secret = sdk_key_create(actor=actor, environment="staging", name="svc")[1]
    server = logged_server("--timeout-graceful-shutdown", "1", REDIS_URL="",
                           TURNOUT_STREAM_DB_POLL_SECONDS="0.1").start()
    host, port = "127.0.0.1", server.port
    fast = Reader(host, port, _request(host, secret, "?patches=1"))
    assert fast.wait_for(_versions), "no first event"
    slow = _slow_socket(host, port, _request(host, secret, "?patches=1"))
    time.sleep(0.5)
    for version in range(1, 11):
        flag_state_update(actor=actor, flag=flag.key, environment="staging", version=version, enabled=True,
                          percentage_value=version)
    slow.close()
    from rollout.models import Environment

    newest = Environment.objects.get(key="staging").ruleset_version
    assert fast.wait_for(lambda d: f"id: {newest}\n".encode() in d), fast.data()[-300:]
    versions = _versions(fast.data())
    assert versions == sorted(set(versions)), versions
    fast.close()
    deadline = time.monotonic() + 10
    while _gauge(host, port) != 0.0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gauge(host, port) == 0.0
    server.stop()
    assert _loop_errors(server.text()) == [], server.text()


# -- start_now ----------------------------------------------------------------------------------


def _events(bodies: list[bytes]) -> list[tuple[str, int, int | None]]:
    """(kind, version, base of a patch) of each event written."""
    found: list[tuple[str, int, int | None]] = []
    for block in b"".join(bodies).decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "id" in lines:
            found.append((lines["event"], int(lines["id"]), int(lines["data"]) if lines["event"] == "patch" else None))
    return found


@pytest.mark.parametrize("seed", range(6))
def test_fan_out__patch_streams_slow_writes_and_slow_patches_while_versions_move__ordered_and_complete(
        seed, monkeypatch):
    """Patch streams (``?patches=1``, with and without ``members=1``) and plain ones; some clients'
    writes are held back at random, patches take a random while; versions move meanwhile. Every
    stream's events must go up, each patch must apply to the version the stream was last sent, and
    each stream must end on the newest version."""
    import asyncio
    import random

    from rollout.delivery import fanout
    from tests.rollout.test_stream_fanout import _run

    env = "fanout-attack"
    rng = random.Random(seed)
    current = {"version": 1}
    cache: dict[tuple[int, int, bool], asyncio.Future[tuple[int, bytes] | None]] = {}

    async def get(environment_id: int, base: int, refs: bool = False) -> tuple[int, bytes] | None:
        memo = (environment_id, base, refs)
        if memo not in cache:  # (as the real one: once per base, the result kept)
            cache[memo] = asyncio.get_running_loop().create_future()
            await asyncio.sleep(rng.random() * 0.01)
            to = current["version"]
            cache[memo].set_result(None if rng.random() < 0.2 else
                                  (to, f"event: patch\nid: {to}\ndata: {base}\n\n".encode()))
        return await asyncio.shield(cache[memo])

    monkeypatch.setattr(fanout.patches, "get", get)

    async def scenario() -> list[list[tuple[str, int, int | None]]]:
        outputs: list[list[bytes]] = []
        streams = []
        for i in range(12):
            bodies: list[bytes] = []
            outputs.append(bodies)

            def make_send(bodies: list[bytes] = bodies) -> Any:
                async def send(message: Any) -> None:
                    if rng.random() < 0.3:
                        await asyncio.sleep(rng.random() * 0.01)  # held back by the server
                    bodies.append(message["body"])
                return send

            stream = fanout.EventStream(environment=env, send=make_send(), secret="s",
                                        environment_id=None if i % 3 == 0 else 7, refs=i % 3 == 2)
            streams.append(stream)
            fanout.open_stream(stream, 1)
        for version in range(2, 60):
            current["version"] = version
            fanout.broadcaster.deliver(env, version)
            if rng.random() < 0.5:
                await asyncio.sleep(rng.random() * 0.005)
        async with asyncio.timeout(20):
            while any(s.last < 59 or s.pending is not None for s in streams) or fanout._background:
                await asyncio.sleep(0.01)
        for stream in streams:
            fanout.close_stream(stream)
        return [_events(bodies) for bodies in outputs]

    for events in _run(scenario):
        versions = [version for _, version, _ in events]
        assert versions == sorted(set(versions)), events
        assert versions[-1] == 59, events
        for (_, before, _), (kind, _, base) in itertools.pairwise(events):
            if kind == "patch":
                assert base == before, events


# -- served by Django's own handler -----------------------------------------------------------------


def test_stream_served_by_djangos_handler__client_reads_slowly__brought_to_the_newest_not_every_version(
        key, settings):  # noqa: F811  (the fixture, imported)
    """The stream served by Django's own ASGI handler (the whole application's, as under a root path,
    or Django's test client): its events pass through a queue to Django's streaming response. A client
    whose writes the server holds back must, as through the SDK handler, be brought to the newest
    version once it reads again — not be queued every version meanwhile (a queue without bound, held
    for as long as the client stays connected)."""
    import asyncio

    from tests.rollout.test_stream_fanout import _run

    settings.TURNOUT_STREAM_HEARTBEAT_SECONDS = 30
    settings.TURNOUT_SDK_VERSION_LOCAL_SECONDS = 3600

    class HeldBack(AsgiStream):
        def __init__(self, key: str) -> None:
            super().__init__(key)
            self.gate = asyncio.Event()

        async def send(self, message: Any) -> None:
            if message["type"] == "http.response.body" and self.bodies:
                await self.gate.wait()  # the client stopped reading after its first event
            await super().send(message)

    async def scenario() -> tuple[list[int], int]:
        stream = HeldBack(key)
        task = asyncio.create_task(stream.run(django_only=True))
        async with asyncio.timeout(30):
            await stream.first.wait()
        first = _versions(b"".join(stream.bodies))[0]
        last = first + 2000
        for version in range(first + 1, last + 1):
            broadcaster.deliver("staging", version)
            if version % 100 == 0:
                await asyncio.sleep(0)
        stream.gate.set()
        async with asyncio.timeout(20):
            while f"id: {last}\n".encode() not in b"".join(stream.bodies[-2:]):
                await asyncio.sleep(0.01)
        stream.leave.set()
        async with asyncio.timeout(10):
            await task
        return _versions(b"".join(stream.bodies)), broadcaster.subscriber_count()

    versions, left = _run(scenario)
    assert versions == sorted(set(versions))
    assert len(versions) < 100, f"{len(versions)} events: every version was queued for the slow client"
    assert left == 0


def test_stream_served_by_djangos_handler__client_leaves_while_held_back__nothing_left_waiting(
        key, settings):  # noqa: F811  (the fixture, imported)
    import asyncio
    import gc

    from rollout.delivery import fanout
    from tests.rollout.test_stream_fanout import _run

    settings.TURNOUT_STREAM_HEARTBEAT_SECONDS = 30
    settings.TURNOUT_SDK_VERSION_LOCAL_SECONDS = 3600

    class Stuck(AsgiStream):
        async def send(self, message: Any) -> None:
            if message["type"] == "http.response.body" and self.bodies:
                await asyncio.Event().wait()  # the client never reads again
            await super().send(message)

    async def scenario() -> tuple[int, list[str]]:
        stream = Stuck(key)
        task = asyncio.create_task(stream.run(django_only=True))
        async with asyncio.timeout(30):
            await stream.first.wait()
        first = _versions(b"".join(stream.bodies))[0]
        for version in range(first + 1, first + 50):
            broadcaster.deliver("staging", version)
            await asyncio.sleep(0)
        stream.leave.set()
        async with asyncio.timeout(10):
            await task
            while fanout._background:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
        # (Django's handler closes only the outermost of the response's generators when the client
        # leaves; the stream's own is closed when collected, as before this change)
        gc.collect()
        await asyncio.sleep(0.05)
        me = asyncio.current_task()
        waiting = [repr(t) for t in asyncio.all_tasks() if t is not me and not t.done()
                   and "heartbeats" not in t.get_name() and "listener" not in t.get_name()]
        return broadcaster.subscriber_count(), waiting

    left, waiting = _run(scenario)
    assert left == 0
    assert waiting == []


# -- heartbeats ----------------------------------------------------------------------------------


def test_heartbeats__one_keys_check_slow__streams_of_other_keys_still_beat(monkeypatch, settings):
    """Each stream's keep-alive used to wait for its own key's check only. With one schedule for
    all streams, a key whose check has to wait (its copy expired — with the defaults, every key
    that only streams — and the one thread for such reads busy, or the database slow) must not stop
    the keep-alives of every other stream of the process, which proxies then close as idle."""
    import asyncio

    from rollout.delivery import fanout, lean
    from tests.rollout.test_stream_fanout import _run

    settings.TURNOUT_STREAM_HEARTBEAT_SECONDS = 0.05

    async def asdk_principal(secret: str | None) -> object | None:
        if secret == "slow":
            await asyncio.sleep(30)
        return object()

    monkeypatch.setattr(lean, "asdk_principal", asdk_principal)

    async def scenario() -> int:
        bodies: list[bytes] = []

        async def send(message: Any) -> None:
            bodies.append(message["body"])

        async def nowhere(message: Any) -> None:
            pass

        quick = fanout.EventStream(environment="beat-attack", send=send, secret="quick")
        slow = fanout.EventStream(environment="beat-attack", send=nowhere, secret="slow")
        fanout.open_stream(quick, 1)
        fanout.open_stream(slow, 1)
        deadline = asyncio.get_running_loop().time() + 5
        while bodies.count(fanout.KEEP_ALIVE) < 5 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for stream in (quick, slow):
            fanout.close_stream(stream)
        return bodies.count(fanout.KEEP_ALIVE)

    assert _run(scenario) >= 5


# -- the context a change is written in ---------------------------------------------------------------


def test_fan_out__change_committed_by_a_request_in_its_own_thread__patches_not_computed_on_that_requests_thread(
        monkeypatch):
    """A change committed by a sync view (the management API under Django's handler: a thread of
    its own per request, ``ThreadSensitiveContext``) is handed to the loop from that thread. The
    patches for the process's streams must be computed where the streams' own work runs — not queued
    on the committing request's thread (behind the rest of that request, delaying every patch
    stream's event and that request's response, and closing that request's database connection)."""
    import asyncio

    from asgiref.sync import ThreadSensitiveContext, sync_to_async

    from rollout.delivery import fanout, patches
    from tests.rollout.test_stream_fanout import _run

    threads: dict[str, int] = {}

    def released_patch(environment_id: int, base: int, refs: bool = False) -> tuple[int, bytes] | None:
        threads["patch"] = threading.get_ident()
        return None

    monkeypatch.setattr(patches, "_released_patch", released_patch)
    patches.patches.clear()

    async def scenario() -> None:
        bodies: list[bytes] = []

        async def send(message: Any) -> None:
            bodies.append(message["body"])

        stream = fanout.EventStream(environment="context-attack", send=send, secret="s", environment_id=991)
        fanout.open_stream(stream, 1)

        def view() -> None:  # the committing request's view, on its own thread
            threads["request"] = threading.get_ident()
            broadcaster.deliver("context-attack", 2)
            time.sleep(0.2)  # (the rest of the request)

        async with ThreadSensitiveContext():
            await sync_to_async(view)()
        async with asyncio.timeout(10):
            while stream.last < 2:
                await asyncio.sleep(0.01)
        fanout.close_stream(stream)

    _run(scenario)
    assert threads["patch"] != threads["request"]
