from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from turnout.engine import compile_ruleset

from rollout.access.keys import sdk_key_create
from rollout.delivery.ruleset import get_ruleset
from rollout.services.flags import flag_state_update

pytestmark = pytest.mark.django_db
URL = "/api/v1/sdk/evaluate"
BULK = "/api/v1/sdk/evaluate/bulk"


@pytest.fixture
def key(flag, actor):  # type: ignore[no-untyped-def]
    flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, enabled=True,
                      percentage_value=50, compare_percentage=10, overrides={"user-1": "parallel"})
    return sdk_key_create(actor=actor, environment="staging", name="svc")[1]


def _post(client, url, body, key, **headers):  # type: ignore[no-untyped-def]
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(url, data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}", **headers)


def _local(envs, flag, key, attributes):  # type: ignore[no-untyped-def]
    ruleset = compile_ruleset(get_ruleset(envs["staging"].pk).document())
    return ruleset.decide(flag, key, attributes)


def test_evaluate__override__parallel_targeting_match(client, key, envs):
    response = _post(client, URL, {"flag": "invoice-engine",
                                   "context": {"key": "user-1", "attributes": {"tenant_id": "t1"}}}, key)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body == {"flag": "invoice-engine", "path": "parallel", "compare": body["compare"],
                    "reason": "TARGETING_MATCH", "rule": "override", "bucket": None, "stage": 0,
                    "version": envs["staging"].__class__.objects.get(pk=envs["staging"].pk).ruleset_version}
    assert "error_code" not in body and "detail" not in body


def test_evaluate__tenant_passed_as_key_only__receipt_says_the_bucket_by_attribute_is_missing(client, key, envs):
    body = _post(client, URL, {"flag": "invoice-engine", "context": {"key": "t1", "attributes": {"country": "DE"}}},
                 key).json()
    assert (body["path"], body["reason"], body["rule"], body["bucket"]) == ("legacy", "DEFAULT", "default", None)
    assert body["detail"] == "bucket_by attribute 'tenant_id' missing from the attributes: not in the split"
    split = _post(client, URL, {"flag": "invoice-engine", "context": {"key": "t1", "attributes": {"tenant_id": "t1"}}},
                  key).json()
    assert split["rule"] in ("split", "default") and isinstance(split["bucket"], int) and "detail" not in split


def test_evaluate__many_subjects__same_as_local_decide(client, key, envs):
    for n in range(200):
        attributes = {"tenant_id": f"t{n % 37}"} if n % 5 else {}
        body = _post(client, URL, {"flag": "invoice-engine", "context": {"key": f"u{n}", "attributes": attributes}},
                     key).json()
        local = _local(envs, "invoice-engine", f"u{n}", attributes)
        assert (body["path"], body["reason"], body["compare"], body["version"]) == (
            local.path, local.reason, local.compare, local.version)


def test_evaluate__unknown_flag__legacy_error_flag_not_found(client, key):
    body = _post(client, URL, {"flag": "nope", "context": {"key": "u1"}}, key).json()
    assert (body["path"], body["reason"], body["error_code"]) == ("legacy", "ERROR", "FLAG_NOT_FOUND")


def test_evaluate__no_key__targeting_key_missing(client, key):
    body = _post(client, URL, {"flag": "invoice-engine", "context": {"attributes": {}}}, key).json()
    assert (body["path"], body["reason"], body["error_code"]) == ("legacy", "ERROR", "TARGETING_KEY_MISSING")


@pytest.mark.parametrize(("body", "field"), [
    ({"context": {"key": "u"}}, "flag"),
    ({"flag": "", "context": {"key": "u"}}, "flag"),
    ({"flag": "f"}, "context"),
    ({"flag": "f", "context": []}, "context"),
    ({"flag": "f", "context": {"key": 7}}, "context.key"),
    ({"flag": "f", "context": {"key": "u", "attributes": "x"}}, "context.attributes"),
    ([1, 2], "body"),
])
def test_evaluate__bad_input__400_naming_the_field(client, key, body, field):
    response = _post(client, URL, body, key)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"] and error["message"].startswith(field)


def test_evaluate__not_json__400_parse_error(client, key):
    response = _post(client, URL, b"{nope", key)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_evaluate__body_over_limit__413(client, key, settings):
    settings.TURNOUT_EVALUATE_MAX_BODY = 100
    response = _post(client, URL, {"flag": "invoice-engine", "context": {"key": "u", "attributes": {"a": "x" * 200}}},
                     key)
    assert response.status_code == 413
    assert response.json()["error"]["fields"] == {"body": ["is larger than 100 bytes"]}


@pytest.mark.parametrize("header", [None, "Bearer sdk_wrong", "Bearer tok_abc"])
def test_evaluate__missing_or_wrong_key__401_error_body(client, key, header):
    kwargs = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.post(URL, "{}", content_type="application/json", **kwargs)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="sdk"'
    assert response.json()["error"]["code"] == "authentication_failed"


def test_evaluate__x_api_key__accepted(client, key):
    response = client.post(URL, json.dumps({"flag": "invoice-engine", "context": {"key": "u"}}),
                           content_type="application/json", HTTP_X_API_KEY=key)
    assert response.status_code == 200


def test_evaluate__get__405_error_body(client, key):
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_evaluate__over_the_rate__429_retry_after(client, key, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"sdk": "3/min"}}
    body = {"flag": "invoice-engine", "context": {"key": "u"}}
    assert [_post(client, URL, body, key).status_code for _ in range(3)] == [200, 200, 200]
    response = _post(client, URL, body, key)
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert response.json()["error"]["code"] == "throttled"
    # One budget per key for every SDK endpoint.
    assert client.get("/api/v1/sdk/ruleset", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 429


def test_evaluate__warm__at_most_one_query_and_no_compile(client, key, monkeypatch, settings):
    body = {"flag": "invoice-engine", "context": {"key": "u", "attributes": {"tenant_id": "t"}}}
    assert _post(client, URL, body, key).status_code == 200
    import rollout.delivery.evaluation as evaluation

    monkeypatch.setattr(evaluation, "compile_ruleset", lambda doc: pytest.fail("compiled again"))
    with CaptureQueriesContext(connection) as queries:
        assert _post(client, URL, body, key).status_code == 200
    # The key comes from the cache, the ruleset from the process; the environment's version from
    # Redis (read with the throttle count) or, without Redis, one indexed read.
    assert len(queries.captured_queries) == (0 if settings.REDIS_URL else 1), queries.captured_queries


def test_evaluate__after_a_change__new_version_decides(client, key, flag, actor, django_capture_on_commit_callbacks):
    body = {"flag": "invoice-engine", "context": {"key": "u", "attributes": {"tenant_id": "t"}}}
    before = _post(client, URL, body, key).json()
    with django_capture_on_commit_callbacks(execute=True):
        flag_state_update(actor=actor, flag=flag.key, environment="staging", version=None, percentage_value=100)
    after = _post(client, URL, body, key).json()
    assert after["version"] > before["version"]
    assert (after["path"], after["reason"]) == ("parallel", "SPLIT")


def test_evaluate_bulk__every_flag__same_as_single(client, key, actor, envs):
    from rollout.services.flags import flag_create

    flag_create(actor=actor, key="search", workload="billing")
    context = {"key": "user-1", "attributes": {"tenant_id": "t3"}}
    response = _post(client, BULK, {"context": context}, key)
    assert response.status_code == 200
    body = response.json()
    assert body["environment"] == "staging"
    assert sorted(body["flags"]) == ["invoice-engine", "search"]
    for name, decision in body["flags"].items():
        assert decision == _post(client, URL, {"flag": name, "context": context}, key).json()


def test_evaluate_bulk__bad_context__400(client, key):
    response = _post(client, BULK, {"context": {"key": ["x"]}}, key)
    assert response.status_code == 400
    assert "context.key" in response.json()["error"]["fields"]


@pytest.mark.services
def test_evaluate__redis_version_key__only_ever_raised(redis_url, key, envs):
    from common.redis import get_redis
    from rollout.delivery.evaluation import remember_version, version_cache_key

    remember_version("staging", 10)
    remember_version("staging", 9)  # a late writer
    assert int(get_redis().get(version_cache_key("staging"))) == 10
    assert 0 < get_redis().ttl(version_cache_key("staging")) <= 5


@pytest.mark.services
def test_evaluate__redis_version_key_lost__database_asked(client, redis_url, key, envs):
    from common.redis import get_redis
    from rollout.delivery.evaluation import version_cache_key

    body = {"flag": "invoice-engine", "context": {"key": "u"}}
    first = _post(client, URL, body, key).json()
    get_redis().delete(version_cache_key("staging"))
    with CaptureQueriesContext(connection) as queries:
        assert _post(client, URL, body, key).json() == first
    assert len(queries.captured_queries) == 1
    assert int(get_redis().get(version_cache_key("staging"))) == first["version"]
