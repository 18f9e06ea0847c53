"""Small updates end to end: a real web process, the real SDK on its stream (``?patches=1``), changes
committed here. Each change arrives as a patch the SDK applies on top of the version it holds — no
ruleset download — and what it then holds equals the whole document the server serves."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
from turnout import Turnout

from common.actors import Actor
from rollout.access.keys import sdk_key_create
from rollout.services.flags import flag_state_update


def _wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


def _full(url: str, secret: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}/api/v1/sdk/ruleset", headers={"Authorization": f"Bearer {secret}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


@pytest.mark.services
def test_sdk_client__changes__arrive_as_patches_equal_to_the_full_document(server_process, redis_url, flag):
    actor = Actor.system("test")
    secret = sdk_key_create(actor=actor, environment="staging", name="sdk")[1]
    server_process.start()
    with Turnout(server_process.url, secret, send_metrics=False) as client:
        assert client.wait_until_ready(10)
        sync = client._sync
        assert sync is not None
        fetches: list[int] = []
        real_refresh = sync.refresh

        def counted_refresh() -> bool:
            fetches.append(1)
            return real_refresh()

        sync.refresh = counted_refresh  # type: ignore[method-assign]  # counts the SDK's downloads
        _full(server_process.url, secret)  # the current version is built and cached: patches have a base
        for percentage in (100, 0, 40):
            flag_state_update(actor=actor, flag=flag.key, environment="staging", version=None, enabled=True,
                              percentage_value=percentage, overrides={"vip": "parallel"})
            full = _full(server_process.url, secret)
            assert _wait_for(lambda v=full["version"]: client.version == v, 2.0)
            assert client.ruleset is not None and client.ruleset.doc == full
            assert sync.etag and sync.etag.startswith(f'"staging-{full["version"]}-')
        assert fetches == []  # every change came as a patch
        assert client.decide(flag.key, "vip", {"tenant_id": "t"}).path == "parallel"
