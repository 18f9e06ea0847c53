"""A metrics batch that shows a breach asks for a guardrail check at once (rollout/plans/watch.py):
debounced, and never failing the ingest when the broker is down. On PostgreSQL and Redis."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from celery import Celery
from django.test import Client

from common import clock
from rollout.access.keys import sdk_key_create
from rollout.plans import watch
from rollout.plans.guardrails import guardrail_check, guardrail_set
from rollout.telemetry.batches import parse_batch
from tests.conftest import free_port
from tests.rollouts.test_guardrail_reaction import _at_25_percent, _batch, _row, _state

pytestmark = pytest.mark.django_db


def _post(client: Client, key: str, body: dict[str, Any]) -> Any:
    return client.post("/api/v1/sdk/metrics", json.dumps(body), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {key}")


def test_metrics_batch__shows_a_breach__check_runs_at_once_and_rolls_back(
        planned: Any, actor: Any, redis_clean: Any, client: Client, audit_events: Any) -> None:
    _at_25_percent(planned.key, actor, clock.now() - timedelta(minutes=10))
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_error_rate=10,
                  min_sample_size=50, window_seconds=300, action="rollback")
    key = sdk_key_create(actor=actor, environment="staging", name="svc")[1]
    healthy = _batch(_row("parallel", calls=100, runs=100, errors=1), end=clock.now())
    assert _post(client, key, healthy).status_code == 202
    assert _state().stage == 5  # nothing breached: no check was asked for
    failing = _batch(_row("parallel", calls=100, runs=100, errors=60), end=clock.now())
    assert _post(client, key, failing).status_code == 202  # tasks run inline here: the check ran
    state = _state()
    assert (state.stage, state.paused_at is not None) == (4, True)
    event = audit_events()[-1]
    assert (event.action, event.actor) == ("flag_state.rolled_back", "system:guardrail")


def test_metrics_batch__breaches_in_a_burst__one_check_per_debounce(
        planned: Any, actor: Any, redis_clean: Any) -> None:
    _at_25_percent(planned.key, actor, clock.now() - timedelta(minutes=10))
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_error_rate=10,
                  min_sample_size=50, window_seconds=300, action="rollback")
    state = _state()
    batch = parse_batch(_batch(_row("parallel", calls=10, runs=10, errors=9)))
    asked: list[int] = []
    for _ in range(5):
        watch.trigger_checks(state.environment_id, batch, asked.append)
    assert asked == [state.pk]
    healthy = parse_batch(_batch(_row("parallel", calls=10, runs=10, errors=0)))
    assert watch.batch_breaches(state.environment_id, healthy) == []


def test_metrics_batch__breach_with_the_broker_down__still_counted_202(
        planned: Any, actor: Any, redis_clean: Any, client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check cannot be enqueued (a broker on a port nobody listens on): the batch is counted
    all the same, and the periodic check remains."""
    from rollout.delivery import sdk_api

    _at_25_percent(planned.key, actor, clock.now() - timedelta(minutes=10))
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_error_rate=10,
                  min_sample_size=50, window_seconds=300, action="rollback")
    down = Celery("down", broker=f"redis://127.0.0.1:{free_port()}/0", set_as_current=False)
    down.conf.broker_connection_timeout = 0.5
    down.conf.broker_transport_options = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}
    tried: list[int] = []

    def enqueue(flag_state_id: int) -> None:
        tried.append(flag_state_id)
        down.send_task("rollout.tasks.check_guardrail", args=[flag_state_id], retry=False)

    monkeypatch.setattr(sdk_api, "enqueue_check", enqueue)
    key = sdk_key_create(actor=actor, environment="staging", name="svc")[1]
    failing = _batch(_row("parallel", calls=100, runs=100, errors=60), end=clock.now())
    response = _post(client, key, failing)
    assert response.status_code == 202 and response.json() == {"accepted": True}
    assert tried == [_state().pk]
    assert _state().stage == 5  # not acted on here; the next check will
    assert guardrail_check(flag_state_id=_state().pk).acted == "rolled_back"
    assert _state().percentage == Decimal(5)


def test_metrics_batch__breach_while_no_roll_up_ran__triggered_check_judges_that_batch(
        planned: Any, actor: Any, redis_clean: Any, client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Accepting a batch only appends it to the metrics stream; the check it triggers rolls up what waits
    before judging, so the batch that showed the breach is in the verdict (no roll-up is queued here)."""
    from rollout.telemetry import ingest

    monkeypatch.setattr(ingest, "queue_metrics_drain", lambda: None)
    _at_25_percent(planned.key, actor, clock.now() - timedelta(minutes=10))
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_error_rate=10,
                  min_sample_size=50, window_seconds=300, action="rollback")
    key = sdk_key_create(actor=actor, environment="staging", name="svc")[1]
    failing = _batch(_row("parallel", calls=100, runs=100, errors=60), end=clock.now())
    assert _post(client, key, failing).status_code == 202  # the check ran inline (eager tasks)
    assert _state().stage == 4
    check = _state().guardrail.last_check
    assert check is not None and (check["parallel"]["runs"], check["parallel"]["errors"]) == (100, 60)
