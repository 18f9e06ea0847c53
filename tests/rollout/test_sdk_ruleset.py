from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from common.actors import Actor
from rollout.access.keys import sdk_key_create, sdk_key_revoke
from rollout.services.flags import flag_state_update

pytestmark = pytest.mark.django_db
URL = "/api/v1/sdk/ruleset"


@pytest.fixture
def key(flag, actor):  # type: ignore[no-untyped-def]
    return sdk_key_create(actor=actor, environment="staging", name="svc")[1]


def _get(client, key, **headers):  # type: ignore[no-untyped-def]
    return client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}", **headers)


def test_ruleset__valid_key__200_document_with_strong_etag(client, key, flag, actor):
    flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, enabled=True,
                      percentage_value=25, compare_percentage=10, overrides={"user-1": "parallel"})
    response = _get(client, key)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    etag = response["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    doc = json.loads(response.content)
    assert doc["schema"] == 1 and doc["environment"] == "staging"
    assert doc["flags"]["invoice-engine"] == {
        "enabled": True, "retired": False, "salt": "invoice-engine", "bucket_by": "tenant_id",
        "overrides": {"user-1": "parallel"}, "exclude_cohorts": [], "include_cohorts": [],
        "percentage": 25.0, "compare_percentage": 10.0, "stage": 0,
    }


def test_ruleset__matching_if_none_match__304_without_body(client, key):
    etag = _get(client, key)["ETag"]
    response = _get(client, key, HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag


def test_ruleset__after_a_change__new_etag_and_version(client, key, flag, actor, django_capture_on_commit_callbacks):
    first = _get(client, key)
    # The change's announcement after commit raises the version the lean path reads from Redis.
    with django_capture_on_commit_callbacks(execute=True):
        flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, percentage_value=50)
    second = _get(client, key, HTTP_IF_NONE_MATCH=first["ETag"])
    assert second.status_code == 200
    assert second["ETag"] != first["ETag"]
    assert json.loads(second.content)["version"] > json.loads(first.content)["version"]


def test_ruleset__cached__second_request_builds_nothing(client, key, settings):
    _get(client, key)
    with CaptureQueriesContext(connection) as queries:
        response = _get(client, key)
    assert response.status_code == 200
    # The key and the document come from the process; the environment's version from Redis (read
    # with the throttle count) or, without Redis, one indexed read.
    selects = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")]
    assert len(selects) == (0 if settings.REDIS_URL else 1), selects


def test_ruleset__build__query_count_does_not_grow_with_flags(client, key, actor, envs):
    from cohorts.services import cohort_create, cohort_members_add
    from rollout.services.flags import flag_create

    def build_queries() -> int:
        from django.core.cache import cache

        cache.clear()
        with CaptureQueriesContext(connection) as queries:
            assert _get(client, key).status_code == 200
        return len(queries.captured_queries)

    small = build_queries()
    for n in range(10):
        cohort_create(actor=actor, key=f"c{n}", name=f"C{n}")
        cohort_members_add(actor=actor, key=f"c{n}", subjects=[f"u{n}-{i}" for i in range(5)])
        flag_create(actor=actor, key=f"f{n}", workload="billing")
        flag_state_update(actor=actor, flag=f"f{n}", environment="staging", version=1, include_cohorts=[f"c{n}"])
    large = build_queries()
    # Flags and their cohorts are prefetched; only each used cohort's member list is a query of its own.
    assert large - small <= 10


@pytest.mark.parametrize("header", [None, "Bearer ", "Bearer sdk_wrong", "Basic abc", "Bearer tok_abc"])
def test_ruleset__missing_or_wrong_key__401_json(client, key, header):
    kwargs = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    response = client.get(URL, **kwargs)
    assert response.status_code == 401
    body = response.json()
    assert body["error"]["code"] in {"not_authenticated", "authentication_failed"}
    assert body["error"]["message"]


def test_ruleset__revoked_key__401_at_once(client, key, actor, django_capture_on_commit_callbacks):
    assert _get(client, key).status_code == 200
    from rollout.models import SdkKey

    with django_capture_on_commit_callbacks(execute=True):
        sdk_key_revoke(actor=actor, prefix=SdkKey.objects.get().prefix)
    assert _get(client, key).status_code == 401


def test_ruleset__key_for_staging__never_sees_production(client, key, flag, actor):
    flag_state_update(actor=actor, flag=flag.key, environment="production", version=1, percentage_value=99)
    doc = _get(client, key).json()
    assert doc["environment"] == "staging"
    assert doc["flags"]["invoice-engine"]["percentage"] == 0.0
    prod_key = sdk_key_create(actor=Actor.system("t"), environment="production", name="p")[1]
    assert _get(client, prod_key).json()["flags"]["invoice-engine"]["percentage"] == 99.0


def test_ruleset__x_api_key_header__accepted(client, key):
    assert client.get(URL, HTTP_X_API_KEY=key).status_code == 200


def test_ruleset__cohorts_in_use__included_with_members(client, key, flag, actor):
    from cohorts.services import cohort_create, cohort_members_add

    cohort_create(actor=actor, key="pilot", name="Pilot", match_on="tenant_id")
    cohort_members_add(actor=actor, key="pilot", subjects=["t2", "t1"])
    cohort_members_add(actor=actor, key="pilot", subjects=["t9"], kind="exclude")
    cohort_create(actor=actor, key="unused", name="Unused")
    flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, include_cohorts=["pilot"])
    doc = _get(client, key).json()
    assert doc["cohorts"] == {"pilot": {"match_on": "tenant_id", "rules": None, "include": ["t1", "t2"],
                                        "exclude": ["t9"]}}
