"""429 with Retry-After (whole seconds) and the one error body, on the shared cache."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def rates(settings: Any):  # type: ignore[no-untyped-def]
    def set_rates(**rates: str) -> None:
        base = dict(settings.REST_FRAMEWORK)
        base["DEFAULT_THROTTLE_RATES"] = {**base["DEFAULT_THROTTLE_RATES"], **rates}
        settings.REST_FRAMEWORK = base

    return set_rates


def assert_throttled(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 429, response.content
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    error = response.json()["error"]
    assert (error["code"], error["retry_after"], error["fields"]) == ("throttled", retry_after, {})


def test_api_throttle__over_the_rate__429_with_retry_after(rates, as_role):
    rates(api="2/min")
    viewer = as_role("viewer")
    assert [viewer.get("/api/v1/workloads/").status_code for _ in range(2)] == [200, 200]
    assert_throttled(viewer.get("/api/v1/workloads/"))
    assert as_role("editor").get("/api/v1/workloads/").status_code == 200  # per token, not global


def test_auth_throttle__issuing_tokens__429_after_the_auth_rate(rates, as_role):
    rates(auth="1/min")
    viewer = as_role("viewer")
    assert viewer.post("/api/v1/tokens/", {"name": "a"}, format="json").status_code == 201
    assert_throttled(viewer.post("/api/v1/tokens/", {"name": "b"}, format="json"))
    assert viewer.get("/api/v1/tokens/").status_code == 200  # reading is not issuing


def test_login_throttle__repeated_attempts__429_with_retry_after(rates, client):
    rates(auth="2/min")
    for _ in range(2):
        assert client.post("/login/", {"username": "x", "password": "y"}).status_code == 200
    assert_throttled(client.post("/login/", {"username": "x", "password": "y"}))


def test_sdk_throttle__over_the_rate__429(rates, client, flag, actor):
    from rollout.access.keys import sdk_key_create

    rates(sdk="1/min")
    _, secret = sdk_key_create(actor=actor, environment="staging", name="svc")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    assert client.get("/api/v1/sdk/ruleset", **headers).status_code == 200
    assert_throttled(client.get("/api/v1/sdk/ruleset", **headers))
