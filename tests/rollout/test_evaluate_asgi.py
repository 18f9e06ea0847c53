"""The async evaluate and OFREP views as an ASGI server runs them (``AsyncClient``: an ASGIRequest,
so the throttle's Redis round trip goes through the event loop's ``redis.asyncio`` client).

The sync test client runs the same views through ``async_to_sync`` (the WSGI path); the other
test modules cover that path. Here each scenario runs with ``async_to_sync`` from the test's
thread, so the views' database reads (on a miss) run inside the test's transaction.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient

from common import redis as turnout_redis
from rollout.access.keys import sdk_key_create
from rollout.delivery import lean
from rollout.services.flags import flag_state_update

pytestmark = pytest.mark.django_db
URL = "/api/v1/sdk/evaluate"
SINGLE = "/ofrep/v1/evaluate/flags/invoice-engine"
CONTEXTS = [{"key": "user-1", "attributes": {"tenant_id": "t1"}}, {"key": "u2", "attributes": {}},
            {"key": None}, {"key": "u3", "attributes": {"tenant_id": "t9", "plan": "pro"}}]


@pytest.fixture(params=["redis", "embedded"])
def mode(request, settings):  # type: ignore[no-untyped-def]
    if request.param == "redis":
        settings.REDIS_URL = request.getfixturevalue("redis_url")
    else:
        settings.REDIS_URL = None
    return request.param


@pytest.fixture
def key(flag, actor):  # type: ignore[no-untyped-def]
    flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, enabled=True,
                      percentage_value=50, compare_percentage=10, overrides={"user-1": "parallel"})
    return sdk_key_create(actor=actor, environment="staging", name="svc")[1]


@pytest.fixture
def sdk_rate(settings):  # type: ignore[no-untyped-def]
    def set_rate(rate: str) -> None:
        base = dict(settings.REST_FRAMEWORK)
        base["DEFAULT_THROTTLE_RATES"] = {**base["DEFAULT_THROTTLE_RATES"], "sdk": rate}
        settings.REST_FRAMEWORK = base

    return set_rate


def _asgi(scenario: Callable[[], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        try:
            return await scenario()
        finally:
            await turnout_redis.close_async_redis()

    return async_to_sync(run)()


async def _apost(url: str, body: Any, key: str) -> Any:
    return await AsyncClient().post(url, json.dumps(body), content_type="application/json",
                                    headers={"Authorization": f"Bearer {key}"})


def _post(client, url, body, key):  # type: ignore[no-untyped-def]
    return client.post(url, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")


def test_evaluate_asgi__decisions__same_responses_as_the_sync_client(mode, client, key):
    bodies = [{"flag": "invoice-engine", "context": context} for context in CONTEXTS]
    bodies += [{"flag": "nope", "context": {"key": "u1"}}, {"flag": "", "context": {"key": "u1"}}, {"flag": "x"}]

    async def scenario() -> list[Any]:
        return [await _apost(URL, body, key) for body in bodies]

    answers = _asgi(scenario)
    for body, answer in zip(bodies, answers, strict=True):
        expected = _post(client, URL, body, key)
        assert (answer.status_code, answer["Content-Type"], answer.content) == (
            expected.status_code, expected["Content-Type"], expected.content)


def test_ofrep_asgi__decisions__same_responses_as_the_sync_client(mode, client, key):
    bodies: list[Any] = [{"context": {"targetingKey": c["key"], **(c.get("attributes") or {})}} for c in CONTEXTS]
    bodies += [{"context": []}, []]
    urls = [SINGLE] * len(bodies) + ["/ofrep/v1/evaluate/flags/nope"]
    bodies.append({"context": {"targetingKey": "u1"}})

    async def scenario() -> list[Any]:
        return [await _apost(url, body, key) for url, body in zip(urls, bodies, strict=True)]

    answers = _asgi(scenario)
    for url, body, answer in zip(urls, bodies, answers, strict=True):
        expected = _post(client, url, body, key)
        assert (answer.status_code, answer.content) == (expected.status_code, expected.content)
        assert answer["Access-Control-Allow-Origin"] == expected["Access-Control-Allow-Origin"] == "*"


def test_evaluate_asgi__bad_key__401_same_body(mode, client, key):
    async def scenario() -> Any:
        return await _apost(URL, {"flag": "invoice-engine", "context": {"key": "u"}}, "sdk_nope")

    answer = _asgi(scenario)
    expected = _post(client, URL, {"flag": "invoice-engine", "context": {"key": "u"}}, "sdk_nope")
    assert (answer.status_code, answer.content, answer["WWW-Authenticate"]) == (
        401, expected.content, expected["WWW-Authenticate"])


def test_evaluate_and_ofrep_asgi__over_the_rate__429_at_the_exact_limit(mode, sdk_rate, key):
    sdk_rate("3/min")

    async def scenario() -> list[Any]:
        return [await _apost(URL, {"flag": "invoice-engine", "context": {"key": "u"}}, key),
                await _apost(SINGLE, {"context": {"targetingKey": "u"}}, key),
                await _apost(URL, {"flag": "invoice-engine", "context": {"key": "u"}}, key),
                await _apost(URL, {"flag": "invoice-engine", "context": {"key": "u"}}, key),
                await _apost(SINGLE, {"context": {"targetingKey": "u"}}, key)]

    answers = _asgi(scenario)
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    sdk, ofrep = answers[3], answers[4]
    assert 1 <= int(sdk["Retry-After"]) <= 60
    error = sdk.json()["error"]
    assert (error["code"], error["retry_after"]) == ("throttled", int(sdk["Retry-After"]))
    assert 1 <= int(ofrep["Retry-After"]) <= 60
    assert ofrep.json()["errorDetails"].startswith("Rate limit exceeded")


def test_ofrep_asgi__preflight__204_with_cors(mode):
    async def scenario() -> Any:
        return await AsyncClient().options(SINGLE)

    response = _asgi(scenario)
    assert response.status_code == 204
    assert response["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    assert response["Access-Control-Allow-Origin"] == "*"


def test_evaluate_asgi__hot_path__no_thread_no_database(redis_url, settings, key, monkeypatch):
    """Key and compiled ruleset already in the process: the one Redis round trip, nothing else."""
    settings.REDIS_URL = redis_url
    calls: list[str] = []
    from asgiref import sync

    from rollout.delivery import evaluation

    def counting(func, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(func.__name__)
        return sync.sync_to_async(func, *args, **kwargs)

    monkeypatch.setattr(lean, "sync_to_async", counting)
    monkeypatch.setattr(evaluation, "sync_to_async", counting)

    async def scenario() -> list[Any]:
        first = await _apost(URL, {"flag": "invoice-engine", "context": {"key": "u1"}}, key)
        misses = list(calls)
        calls.clear()
        second = await _apost(URL, {"flag": "invoice-engine", "context": {"key": "u2"}}, key)
        third = await _apost(SINGLE, {"context": {"targetingKey": "u3"}}, key)
        return [first, second, third, misses]

    first, second, third, misses = _asgi(scenario)
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 200)
    assert misses == ["sdk_principal", "compiled_ruleset"]
    assert calls == []


def test_evaluate_asgi__last_used_due__key_resolved_in_a_thread(redis_url, settings, key, monkeypatch):
    settings.REDIS_URL = redis_url
    from rollout.access import auth

    async def scenario() -> tuple[Any, Any]:
        first = await _apost(URL, {"flag": "invoice-engine", "context": {"key": "u1"}}, key)
        auth._touched.clear()  # the resolution window passed: last_used is due again
        return first, await _apost(URL, {"flag": "invoice-engine", "context": {"key": "u2"}}, key)

    first, second = _asgi(scenario)
    assert (first.status_code, second.status_code) == (200, 200)
    assert auth._touched  # sdk_principal (which touches) ran, not the local answer


def test_async_redis__per_event_loop__one_client_each(redis_url, settings):
    settings.REDIS_URL = redis_url

    async def first_loop() -> tuple[Any, asyncio.AbstractEventLoop]:
        client = turnout_redis.get_async_redis()
        assert await client.ping()
        assert turnout_redis.get_async_redis() is client
        await client.connection_pool.disconnect()  # the loop ends without closing the client
        return client, asyncio.get_running_loop()

    async def second_loop() -> tuple[Any, set[asyncio.AbstractEventLoop], bool]:
        client = turnout_redis.get_async_redis()
        assert await client.ping()
        registered = set(turnout_redis._async_clients)
        await turnout_redis.close_async_redis()
        return client, registered, asyncio.get_running_loop() in turnout_redis._async_clients

    first, ended = async_to_sync(first_loop)()
    assert ended.is_closed() and ended in turnout_redis._async_clients
    second, registered, still_registered = async_to_sync(second_loop)()
    assert second is not first
    assert ended not in registered  # dropped when the next loop made its client
    assert still_registered is False


def test_async_redis__embedded__none(settings):
    settings.REDIS_URL = None

    async def get() -> Any:
        return turnout_redis.get_async_redis()

    assert async_to_sync(get)() is None
