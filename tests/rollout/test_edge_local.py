"""The SDK endpoints' process-local fast paths (``rollout/delivery/local.py``, ``lean.py``, ``asgi.py``):
the throttle counted in the process and added to Redis in batches, the current version from the
process's copy, one key lookup per process for many waiters, and streams without a thread each.

The views run as an ASGI server runs them (``AsyncClient`` or ``config.asgi.application`` itself, an
``ASGIRequest``: the async Redis path), against real Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient

from common import redis as turnout_redis
from common.actors import Actor
from common.secrets import digest
from rollout.access import auth
from rollout.access.keys import sdk_key_create, sdk_key_revoke
from rollout.delivery import lean, local
from rollout.delivery.broadcast import broadcaster
from rollout.delivery.evaluation import version_cache_key
from rollout.models import Environment, SdkKey
from rollout.services.flags import flag_state_update

pytestmark = pytest.mark.django_db
URL = "/api/v1/sdk/ruleset"


@pytest.fixture
def key(flag, actor, redis_url, settings):  # type: ignore[no-untyped-def]
    settings.REDIS_URL = redis_url
    flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, enabled=True, percentage_value=25)
    return sdk_key_create(actor=actor, environment="staging", name="svc")[1]


def _get(key: str) -> Any:
    async def run() -> Any:
        try:
            return await AsyncClient().get(URL, headers={"Authorization": f"Bearer {key}"})
        finally:
            await turnout_redis.close_async_redis()

    return async_to_sync(run)()


def _rate(settings: Any, rate: str) -> None:
    base = dict(settings.REST_FRAMEWORK)
    base["DEFAULT_THROTTLE_RATES"] = {**base["DEFAULT_THROTTLE_RATES"], "sdk": rate}
    settings.REST_FRAMEWORK = base


def test_throttle__two_processes__refused_over_the_limit_within_the_stated_bound(key, settings, monkeypatch,
                                                                                   redis_url):
    """Two web processes (two process-local counters, one shared Redis counter), a key limited to 10.
    Neither syncs on time here (the interval is an hour), so only the rule "ask Redis before crossing
    the limit" holds them: the key gets at most the limit plus what the other process had not yet
    added (the documented bound), and a process whose sync is due refuses once Redis says so."""
    import redis

    _rate(settings, "10/day")  # (a day's window: the test never straddles two)
    settings.TURNOUT_SDK_THROTTLE_SYNC_SECONDS = 3600
    a, b = local.LocalThrottle(), local.LocalThrottle()
    shared = redis.Redis.from_url(redis_url)
    prefix = SdkKey.objects.get(secret_hash=digest(key)).prefix

    def counter() -> int:
        found = [int(shared.get(k) or 0) for k in shared.scan_iter(f"*throttle:sdk:{prefix}:*")]
        return sum(found)

    monkeypatch.setattr(local, "throttle", a)
    statuses_a = [_get(key).status_code for _ in range(4)]
    assert statuses_a == [200] * 4
    assert counter() == 1  # the first request synced; the other three were counted in the process only
    unsent_a = 3

    monkeypatch.setattr(local, "throttle", b)
    statuses_b = [_get(key).status_code for _ in range(12)]
    # B saw 1 in Redis, admitted up to the limit by its own count, asked Redis before crossing it.
    assert statuses_b == [200] * 9 + [429] * 3
    admitted = statuses_a.count(200) + statuses_b.count(200)
    assert admitted == 13 and admitted <= 10 + unsent_a
    response = _get(key)
    assert response.status_code == 429 and response.json()["error"]["code"] == "throttled"
    assert int(response["Retry-After"]) >= 1

    # A's sync is due: it adds what it counted, hears the key is over, and refuses from then on.
    settings.TURNOUT_SDK_THROTTLE_SYNC_SECONDS = 0
    monkeypatch.setattr(local, "throttle", a)
    assert [_get(key).status_code for _ in range(2)] == [429, 429]


def test_version__changed_in_another_process__announced_at_once_else_within_the_local_staleness(
        key, flag, actor, settings, redis_url):
    import redis

    settings.TURNOUT_SDK_VERSION_LOCAL_SECONDS = 3600
    first = _get(key)
    v1 = int(first["X-Turnout-Ruleset-Version"])

    def change_elsewhere(percentage: int) -> int:
        """A change committed by another process: the database and Redis say so, this process's
        copy has not heard (the test's transaction: no on-commit announcement here)."""
        flag_state_update(actor=actor, flag=flag.key, environment="staging", version=None,
                          percentage_value=percentage)
        version = Environment.objects.get(key="staging").ruleset_version
        redis.Redis.from_url(redis_url).set(f"{version_cache_key('staging')}", version)
        return version

    v2 = change_elsewhere(40)
    assert v2 > v1
    # The process's copy is still valid: the stated staleness, not the database, bounds it.
    assert int(_get(key)["X-Turnout-Ruleset-Version"]) == v1
    # The listener relays the pub/sub announcement: the copy has it at once.
    broadcaster.deliver("staging", v2)
    second = _get(key)
    assert int(second["X-Turnout-Ruleset-Version"]) == v2
    assert second.json()["flags"]["invoice-engine"]["percentage"] == 40.0
    assert second["ETag"] != first["ETag"]

    # An announcement lost: the copy expires (here after 0.2 s) and Redis is asked again.
    settings.TURNOUT_SDK_VERSION_LOCAL_SECONDS = 0.2
    broadcaster.deliver("staging", v2)
    v3 = change_elsewhere(60)
    time.sleep(0.25)
    assert int(_get(key)["X-Turnout-Ruleset-Version"]) == v3


def test_key_check__many_waiters_at_once__one_lookup_per_process(key, monkeypatch, django_capture_on_commit_callbacks):
    """Ten thousand streams of one key reach their heartbeat together: the key is looked up once, and
    a revoked key is refused to every one of them."""
    calls: list[bool] = []
    real = auth.sdk_principal

    def counting(value: str | None, *, fresh: bool = False) -> Any:
        calls.append(fresh)
        return real(value, fresh=fresh)

    monkeypatch.setattr(lean, "sdk_principal", counting)

    async def many() -> list[Any]:
        return list(await asyncio.gather(*(lean.asdk_principal(key) for _ in range(50))))

    auth._local_keys.clear()
    principals = async_to_sync(many)()
    assert len(calls) == 1
    assert {p.environment for p in principals} == {"staging"}
    with django_capture_on_commit_callbacks(execute=True):
        sdk_key_revoke(actor=Actor.system("test"), prefix=SdkKey.objects.get(secret_hash=digest(key)).prefix)
    assert async_to_sync(many)() == [None] * 50
    assert len(calls) == 2


def test_stream__twenty_connections__no_thread_per_stream(key, settings):
    """Django's ASGI handler made a thread per request and kept it until the request ended: an idle
    stream held one for hours. Through the real application, twenty streams add no thread per
    stream (the event loop here runs outside any test helper, as a server's does). The key and the
    version are in the process already (as for every stream after a process's first), so the
    streams need nothing from the database."""
    from config.asgi import application

    settings.TURNOUT_STREAM_HEARTBEAT_SECONDS = 30
    settings.TURNOUT_SDK_VERSION_LOCAL_SECONDS = 3600
    assert auth.sdk_principal(key) is not None  # the process's copy of the key
    local.versions.offer("staging", Environment.objects.get(key="staging").ruleset_version, time.monotonic())
    headers = [(b"authorization", f"Bearer {key}".encode()), (b"host", b"127.0.0.1")]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/api/v1/sdk/stream", "raw_path": b"/api/v1/sdk/stream", "query_string": b"",
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}

    async def scenario() -> tuple[int, int, list[int]]:
        before = threading.active_count()
        leave = asyncio.Event()
        firsts: list[asyncio.Event] = []
        statuses: list[int] = []

        async def one() -> None:
            first = asyncio.Event()
            firsts.append(first)
            sent_request = False

            async def receive() -> dict[str, Any]:
                nonlocal sent_request
                if not sent_request:
                    sent_request = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                await leave.wait()
                return {"type": "http.disconnect"}

            async def send(message: Any) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])
                elif message["type"] == "http.response.body" and message.get("body"):
                    first.set()

            await application(dict(scope), receive, send)

        tasks = [asyncio.create_task(one()) for _ in range(20)]
        async with asyncio.timeout(30):
            while not (len(firsts) == 20 and all(f.is_set() for f in firsts)):
                await asyncio.sleep(0.01)
        during = threading.active_count()
        leave.set()
        await asyncio.gather(*tasks)
        await turnout_redis.close_async_redis()
        return before, during, statuses

    # A plain event loop in a thread of its own, as under uvicorn (not async_to_sync's).
    result: list[tuple[int, int, list[int]]] = []
    runner = threading.Thread(target=lambda: result.append(asyncio.run(scenario())))
    runner.start()
    runner.join(60)
    before, during, statuses = result[0]
    assert statuses == [200] * 20
    assert during - before < 10, (before, during)  # the process's shared helper threads, not one per stream
