"""The ``turnout`` SDK client against a real web process: a change made here reaches
its stream within a second, and the metrics it flushes are counted exactly."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
from turnout import Turnout

from common.actors import Actor
from rollout.access.keys import api_token_create, sdk_key_create
from rollout.access.users import user_create
from rollout.models import MetricMinute
from rollout.telemetry.ingest import metrics_rollup


def _wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


def _api(url: str, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return dict(json.loads(response.read()))


@pytest.mark.services
def test_sdk_client__change_through_the_api__decides_with_it_within_one_second(server_process, redis_url, flag):
    """The whole path: an admin's PATCH to the management API of a real server process, committed and
    announced, the stream event, the SDK's conditional fetch and recompile — inside one second."""
    actor = Actor.system("test")
    secret = sdk_key_create(actor=actor, environment="staging", name="sdk")[1]
    user_create(actor=actor, username="root", password=None, roles=["admin"])
    token = api_token_create(actor=actor, username="root", name="ops")[1]
    server_process.start()
    path = f"/api/v1/flags/{flag.key}/states/staging/"
    with Turnout(server_process.url, secret, send_metrics=False) as client:
        assert client.wait_until_ready(10)
        for percentage in (100, 0, 100):
            version = _api(server_process.url, token, "GET", path)["version"]
            _api(server_process.url, token, "PATCH", path,
                 {"enabled": True, "percentage": percentage, "version": version, "reason": "widen"})
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
