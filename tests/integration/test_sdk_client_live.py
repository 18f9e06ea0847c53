"""The ``turnout`` SDK client against a real web process: a change made here reaches
its stream within a second, and the metrics it flushes are counted exactly."""

from __future__ import annotations

import time
from typing import Any

import pytest
from turnout import Turnout

from common.actors import Actor
from rollout.models import MetricMinute
from rollout.services.flags import flag_state_update
from rollout.services.keys import sdk_key_create
from rollout.services.metrics import metrics_rollup


def _wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


@pytest.mark.services
def test_sdk_client__change_committed__decides_with_the_new_version_within_one_second(server_process, redis_url,
                                                                                      flag):
    actor = Actor.system("test")
    secret = sdk_key_create(actor=actor, environment="staging", name="sdk")[1]
    server_process.start()
    with Turnout(server_process.url, secret, send_metrics=False) as client:
        assert client.wait_until_ready(10)
        for percentage in (100, 0):
            flag_state_update(actor=actor, flag=flag.key, environment="staging", version=None, enabled=True,
                              percentage_value=percentage)
            expected = "parallel" if percentage else "legacy"
            # Stream event, conditional fetch, recompile: all inside the protocol's one second.
            assert _wait_for(lambda e=expected: client.decide(flag.key, "u1", {"tenant_id": "t1"}).path == e, 1.0)


def test_sdk_client__flushed_metrics__counted_exactly(server_process, flag):
    secret = sdk_key_create(actor=Actor.system("test"), environment="staging", name="sdk")[1]
    server_process.start()
    with Turnout(server_process.url, secret, stream=False, flush_interval=3600) as client:
        assert client.wait_until_ready(10)
        for n in range(25):
            client.run(flag.key, f"u{n}", {"tenant_id": f"t{n}"}, legacy=lambda: 1, parallel=lambda: 1)
        assert client.flush()
    metrics_rollup(include_open=True)  # Redis mode; in embedded mode the rows are already there
    rows = {r.path: r for r in MetricMinute.objects.filter(flag_key=flag.key)}
    assert sum(r.calls for r in rows.values()) == 25
    assert sum(sum(r.latency_ms) for r in rows.values()) == 25
