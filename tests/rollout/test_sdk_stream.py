from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.test import AsyncClient

from rollout.access.keys import sdk_key_create, sdk_key_revoke
from rollout.delivery.broadcast import broadcaster
from rollout.services.flags import flag_state_update

URL = "/api/v1/sdk/stream"


def _event(chunk: bytes) -> dict[str, Any]:
    lines = chunk.decode().strip().split("\n")
    fields = dict(line.split(": ", 1) for line in lines if not line.startswith(":") and ": " in line)
    return {"event": fields.get("event"), "id": fields.get("id"), "data": json.loads(fields["data"])}


@pytest.fixture
def embedded(settings):  # type: ignore[no-untyped-def]
    """In-process broadcasting only (what a deployment without Redis gets)."""
    settings.REDIS_URL = None
    settings.TURNOUT_STREAM_HEARTBEAT_SECONDS = 30


@pytest.fixture
def key(db, flag, actor):  # type: ignore[no-untyped-def]
    return sdk_key_create(actor=actor, environment="staging", name="svc")[1]


def _run(scenario) -> Any:  # type: ignore[no-untyped-def]
    # async_to_sync from the test's thread: the view's database reads run on this thread, inside
    # the test's transaction.
    return async_to_sync(scenario)()


def test_stream__connect__current_version_first(embedded, key, envs):
    async def scenario() -> tuple[Any, bytes]:
        response = await AsyncClient().get(URL, headers={"Authorization": f"Bearer {key}"})
        content = aiter(response.streaming_content)
        first = await anext(content)
        await content.aclose()
        return response, first

    response, first = _run(scenario)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    version = type(envs["staging"]).objects.get(pk=envs["staging"].pk).ruleset_version
    assert first.startswith(b"retry: ")
    event = _event(first.split(b"\n\n", 1)[1])
    assert event == {"event": "ruleset", "id": str(version), "data": {"environment": "staging", "version": version}}


def test_stream__change_committed__new_version_event(embedded, key, flag, actor, django_capture_on_commit_callbacks):
    def change() -> int:
        with django_capture_on_commit_callbacks(execute=True):
            flag_state_update(actor=actor, flag=flag.key, environment="staging", version=None, percentage_value=5)
        return type(flag.states.first().environment).objects.get(key="staging").ruleset_version

    async def scenario() -> tuple[int, dict[str, Any]]:
        response = await AsyncClient().get(URL, headers={"Authorization": f"Bearer {key}"})
        content = aiter(response.streaming_content)
        await anext(content)
        version = await sync_to_async(change)()
        event = _event(await asyncio.wait_for(anext(content), 5))
        await content.aclose()
        return version, event

    version, event = _run(scenario)
    assert event["data"] == {"environment": "staging", "version": version}
    assert event["id"] == str(version)


def test_stream__other_environment_changes__not_told(embedded, key, flag, actor, settings,
                                                      django_capture_on_commit_callbacks):
    settings.TURNOUT_STREAM_HEARTBEAT_SECONDS = 0.05

    def change() -> None:
        with django_capture_on_commit_callbacks(execute=True):
            flag_state_update(actor=actor, flag=flag.key, environment="production", version=None, percentage_value=5)

    async def scenario() -> bytes:
        response = await AsyncClient().get(URL, headers={"Authorization": f"Bearer {key}"})
        content = aiter(response.streaming_content)
        await anext(content)
        await sync_to_async(change)()
        nxt = await asyncio.wait_for(anext(content), 5)
        await content.aclose()
        return nxt

    assert _run(scenario) == b": keep-alive\n\n"


def test_stream__idle__keep_alive_comments(embedded, key, settings):
    settings.TURNOUT_STREAM_HEARTBEAT_SECONDS = 0.02

    async def scenario() -> list[bytes]:
        response = await AsyncClient().get(URL, headers={"Authorization": f"Bearer {key}"})
        content = aiter(response.streaming_content)
        await anext(content)
        chunks = [await asyncio.wait_for(anext(content), 5) for _ in range(2)]
        await content.aclose()
        return chunks

    assert _run(scenario) == [b": keep-alive\n\n", b": keep-alive\n\n"]


def test_stream__client_goes_away__unsubscribed(embedded, key):
    async def scenario() -> tuple[int, int, int]:
        before = broadcaster.subscriber_count()
        response = await AsyncClient().get(URL, headers={"Authorization": f"Bearer {key}"})
        content = aiter(response.streaming_content)
        await anext(content)
        # Django's ASGI handler cancels the response task when the client disconnects.
        waiting = asyncio.ensure_future(anext(content))
        await asyncio.sleep(0.05)
        during = broadcaster.subscriber_count()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return before, during, broadcaster.subscriber_count()

    before, during, after = _run(scenario)
    assert (during, after) == (before + 1, before)


def test_stream__key_revoked__stream_ends_at_next_heartbeat(embedded, key, actor, settings,
                                                            django_capture_on_commit_callbacks):
    settings.TURNOUT_STREAM_HEARTBEAT_SECONDS = 0.02
    from rollout.models import SdkKey

    def revoke() -> None:
        with django_capture_on_commit_callbacks(execute=True):
            sdk_key_revoke(actor=actor, prefix=SdkKey.objects.get().prefix)

    async def scenario() -> list[bytes]:
        response = await AsyncClient().get(URL, headers={"Authorization": f"Bearer {key}"})
        content = aiter(response.streaming_content)
        await anext(content)
        await sync_to_async(revoke)()
        return [chunk async for chunk in content]

    assert _run(scenario) == []


def test_stream__no_key__401_error_body(embedded, key):
    async def scenario() -> Any:
        return await AsyncClient().get(URL)

    response = _run(scenario)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


class SseReader(threading.Thread):
    """A raw server-sent events reader (http.client), recording when each event arrived."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.key = key
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.connected = threading.Event()
        self.status: int | None = None

    def run(self) -> None:
        self.conn.request("GET", URL, headers={"Authorization": f"Bearer {self.key}", "Accept": "text/event-stream"})
        response = self.conn.getresponse()
        self.status = response.status
        data: list[str] = []
        try:
            while True:
                line = response.readline()
                if not line:
                    return
                text = line.decode().rstrip("\r\n")
                if text.startswith("data: "):
                    data.append(text[6:])
                elif not text and data:
                    self.events.append((time.monotonic(), json.loads("\n".join(data))))
                    data = []
                    self.connected.set()
        except OSError:
            return

    def close(self) -> None:
        sock = self.conn.sock
        if sock is not None:
            sock.close()


def _wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


@pytest.mark.services
def test_stream__change_in_another_process__reaches_streams_within_one_second(server_process, redis_url, flag,
                                                                              actor):
    key = sdk_key_create(actor=actor, environment="staging", name="svc")[1]
    server_process.env["TURNOUT_STREAM_HEARTBEAT_SECONDS"] = "1"
    server_process.start()
    readers = [SseReader(server_process.url, key) for _ in range(3)]
    for reader in readers:
        reader.start()
    for reader in readers:
        assert reader.connected.wait(10), "no first event"
        assert reader.status == 200
    before = readers[0].events[0][1]["version"]
    for n in range(3):
        flag_state_update(actor=actor, flag=flag.key, environment="staging", version=None, percentage_value=10 + n)
        expected = before + n + 1

        def told(expected: int = expected) -> bool:
            return all(any(e["version"] == expected for _, e in r.events) for r in readers)

        # The deadline the protocol promises: every stream hears of a committed change within 1 s.
        assert _wait_for(told, 1.0), (expected, [r.events for r in readers])
    for reader in readers:
        reader.close()


def test_stream__embedded_mode_change_in_another_process__reaches_streams_within_one_second(server_process, flag,
                                                                                          actor):
    """No Redis: the web process's listener reads the versions from the database, so a change committed
    by another process (here the test process; in production a Celery worker's guardrail rollback)
    reaches its streams without any message between the processes."""
    from rollout.models import Environment

    key = sdk_key_create(actor=actor, environment="staging", name="svc")[1]
    # A short poll keeps the test well inside the one second on a loaded machine (the default is 0.5 s).
    server_process.env.update(REDIS_URL="", TURNOUT_STREAM_HEARTBEAT_SECONDS="30", TURNOUT_STREAM_DB_POLL_SECONDS="0.1")
    server_process.start()
    reader = SseReader(server_process.url, key)
    reader.start()
    assert reader.connected.wait(10), "no first event"
    before = reader.events[0][1]["version"]
    for n in range(3):
        flag_state_update(actor=actor, flag=flag.key, environment="staging", version=None, percentage_value=20 + n)
        expected = Environment.objects.get(key="staging").ruleset_version
        assert expected == before + n + 1

        def told(expected: int = expected) -> bool:
            return any(e["version"] == expected for _, e in reader.events)

        assert _wait_for(told, 1.0), (expected, reader.events)
    reader.close()
