"""Redis unreachable (a port nothing listens on), in process: safety actions commit and are audited,
the announcement waits in the outbox, SDK reads come from the database, and what truly needs Redis
answers 503 ``redis_unavailable`` — JSON for the APIs, a page for the UI — never a 500.

The live-process versions (Redis stopped, hung and restarted under a running server and SDK) are in
tests/integration/test_redis_faults.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from common.redis import RedisUnavailable, breaker, get_redis
from rollout.access.keys import sdk_key_create
from rollout.models import OutboxMessage
from tests.conftest import free_port

STATE = "/api/v1/flags/invoice-engine/states/staging/"


@pytest.fixture
def live_flag(flag: Any, actor: Any) -> Any:
    """The flag switched on at 100% in staging (so there is something to kill)."""
    from rollout.services.flags import flag_state_update

    flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, enabled=True,
                      percentage_value=100)
    return flag


@pytest.fixture
def redis_down(settings: Any) -> str:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings.REDIS_URL = url
    settings.CACHES = {"default": {"BACKEND": "common.redis.RedisCache", "LOCATION": url, "KEY_PREFIX": "turnout"}}
    breaker.reset()
    yield url
    breaker.reset()


def test_kill__redis_unreachable__200_audited_and_announcement_kept_in_outbox(
        admin_api: Any, live_flag: Any, redis_down: str, audit_events: Any) -> None:
    killed = admin_api.post(STATE + "kill/", {"reason": "errors spiking"}, format="json")
    assert killed.status_code == 200, killed.content
    assert killed.json()["enabled"] is False
    assert [e.action for e in audit_events()] == ["flag_state.killed"]
    from rollout.models import Environment

    rows = list(OutboxMessage.objects.filter(environment="staging").values_list("version", flat=True))
    assert max(rows) == Environment.objects.get(key="staging").ruleset_version


def test_sdk_ruleset__redis_unreachable__200_built_from_database_with_the_change(
        client: Any, admin_api: Any, live_flag: Any, actor: Any, redis_down: str) -> None:
    secret = sdk_key_create(actor=actor, environment="staging", name="svc")[1]
    assert admin_api.post(STATE + "kill/", {"reason": "errors spiking"}, format="json").status_code == 200
    response = client.get("/api/v1/sdk/ruleset", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 200
    assert json.loads(response.content)["flags"]["invoice-engine"]["enabled"] is False


def test_sdk_evaluate__redis_unreachable__200_decides_from_database(
        client: Any, flag: Any, actor: Any, redis_down: str) -> None:
    secret = sdk_key_create(actor=actor, environment="staging", name="svc")[1]
    response = client.post("/api/v1/sdk/evaluate", {"flag": "invoice-engine", "context": {"key": "u1"}},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 200
    assert response.json()["path"] == "legacy"


def test_guardrails_view__redis_unreachable__200_last_check_unknown(
        admin_api: Any, live_flag: Any, redis_down: str) -> None:
    """With Redis away the guardrails view still answers (the last check lives in the database; none yet here)."""
    response = admin_api.get(STATE + "guardrails/")
    assert response.status_code == 200
    assert response.json()["last_check"] is None


def test_dashboard__guarded_rollout_and_redis_unreachable__200_page_with_the_kill_switch(
        client: Any, live_flag: Any, actor: Any, redis_down: str) -> None:
    from rollout.access.users import user_create
    from rollout.plans.guardrails import guardrail_set

    guardrail_set(actor=actor, flag=live_flag.key, environment="staging", version=None, max_error_rate=5,
                  min_sample_size=30, window_seconds=300, action="rollback")
    client.force_login(user_create(actor=actor, username="ops", password=None, roles=["admin"]))
    response = client.get("/")
    assert response.status_code == 200
    assert b"not checked yet" in response.content


def test_sign_in__redis_unreachable__503_redis_unavailable_not_500(client: Any, db: Any, redis_down: str) -> None:
    """Anonymous sign-in is throttled in Redis: with it away the attempt is refused, naming Redis."""
    response = client.post("/login/", {"username": "someone", "password": "x"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "redis_unavailable"


def test_breaker__after_a_failure__fails_fast_then_one_call_probes(redis_down: str) -> None:
    client = get_redis()
    with pytest.raises(redis.ConnectionError) as first:
        client.get("x")
    assert not isinstance(first.value, RedisUnavailable)  # a real attempt
    assert breaker.is_open
    with pytest.raises(RedisUnavailable):
        client.get("x")  # not attempted: the breaker is open


def test_drain_outbox_task__redis_unreachable_then_back__rows_kept_then_published(
        admin_api: Any, live_flag: Any, settings: Any, redis_url: str) -> None:
    from rollout.tasks import drain_outbox

    good_url, good_caches = settings.REDIS_URL, settings.CACHES
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings.REDIS_URL = dead
    settings.CACHES = {"default": {"BACKEND": "common.redis.RedisCache", "LOCATION": dead}}
    breaker.reset()
    assert admin_api.post(STATE + "kill/", {"reason": "errors spiking"}, format="json").status_code == 200
    assert drain_outbox() == 0
    assert OutboxMessage.objects.filter(environment="staging").exists()

    settings.REDIS_URL, settings.CACHES = good_url, good_caches
    breaker.reset()
    from common.redis import channel
    from rollout.delivery.broadcast import RULESET_CHANNEL

    listener = redis.Redis.from_url(good_url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(channel(RULESET_CHANNEL))
    listener.get_message(timeout=1.0)  # the subscription's confirmation
    assert drain_outbox() >= 1
    assert not OutboxMessage.objects.exists()
    message = listener.get_message(timeout=5.0)
    assert message is not None and json.loads(message["data"])["environment"] == "staging"
    listener.close()


def test_service_unavailable__celery_broker_error__named_by_the_broker_configured(settings: Any) -> None:
    """kombu reports a Redis broker that is away as its own OperationalError: still Redis."""
    from kombu.exceptions import OperationalError

    from common.errors import service_unavailable

    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    assert service_unavailable(OperationalError("Error 111 connecting")) == "redis_unavailable"
    settings.REDIS_URL = None
    assert service_unavailable(OperationalError("no broker")) == "broker_unavailable"
    assert service_unavailable(ValueError("unrelated")) is None


def test_breaker__retry_interval_passed_and_redis_answers__one_probe_closes_it(
        settings: Any, redis_url: str) -> None:
    settings.TURNOUT_REDIS_RETRY_SECONDS = 0.0
    breaker.failed(redis.ConnectionError("a moment ago"))
    assert breaker.is_open
    get_redis().connection_pool.disconnect()  # the probe connects afresh (handshake included)
    assert get_redis().ping() is True
    assert not breaker.is_open
