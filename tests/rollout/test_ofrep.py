from __future__ import annotations

import json

import pytest
from turnout.engine import bucket

from rollout.access.keys import sdk_key_create
from rollout.services.flags import flag_create, flag_state_retire, flag_state_update

pytestmark = pytest.mark.django_db
SINGLE = "/ofrep/v1/evaluate/flags/{}"
BULK = "/ofrep/v1/evaluate/flags"


@pytest.fixture
def key(flag, actor):  # type: ignore[no-untyped-def]
    flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, enabled=True,
                      percentage_value=50, overrides={"user-1": "parallel", "user-2": "legacy"})
    return sdk_key_create(actor=actor, environment="staging", name="svc")[1]


def _post(client, url, body, key=None, **headers):  # type: ignore[no-untyped-def]
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    if key:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client.post(url, data, content_type="application/json", **headers)


def test_ofrep_single__override__true_parallel_targeting_match(client, key):
    response = _post(client, SINGLE.format("invoice-engine"), {"context": {"targetingKey": "user-1"}}, key)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert (body["key"], body["value"], body["reason"], body["variant"]) == (
        "invoice-engine", True, "TARGETING_MATCH", "parallel")
    assert body["metadata"]["rule"] == "override"
    assert all(isinstance(v, bool | str | int | float) for v in body["metadata"].values())


def test_ofrep_single__no_bucket_attribute__false_legacy_reason_static(client, key):
    # No tenant_id: the flag buckets by tenant, so nothing was drawn (engine: DEFAULT, no bucket).
    body = _post(client, SINGLE.format("invoice-engine"), {"context": {"targetingKey": "user-9"}}, key).json()
    assert (body["value"], body["variant"], body["reason"]) == (False, "legacy", "STATIC")
    assert body["metadata"]["turnoutReason"] == "DEFAULT" and "bucket" not in body["metadata"]


def test_ofrep_single__drawn_outside_a_live_split__false_legacy_reason_split(client, key):
    tenant = next(t for t in (f"t{i}" for i in range(100)) if bucket("invoice-engine", t) >= 500_000)
    body = _post(client, SINGLE.format("invoice-engine"),
                 {"context": {"targetingKey": "user-9", "tenant_id": tenant}}, key).json()
    assert (body["value"], body["variant"], body["reason"]) == (False, "legacy", "SPLIT")
    assert body["metadata"]["turnoutReason"] == "DEFAULT" and body["metadata"]["bucket"] >= 500_000


def test_ofrep_single__zero_percent__false_legacy_reason_static_not_split(client, key, actor):
    flag_state_update(actor=actor, flag="invoice-engine", environment="staging", version=None, percentage_value=0)
    body = _post(client, SINGLE.format("invoice-engine"),
                 {"context": {"targetingKey": "user-9", "tenant_id": "t1"}}, key).json()
    assert (body["value"], body["variant"], body["reason"]) == (False, "legacy", "STATIC")
    assert body["metadata"]["turnoutReason"] == "DEFAULT"


def test_ofrep_single__killed_flag__disabled(client, key, actor):
    flag_state_update(actor=actor, flag="invoice-engine", environment="staging", version=None, enabled=False)
    body = _post(client, SINGLE.format("invoice-engine"), {"context": {"targetingKey": "user-1"}}, key).json()
    assert (body["value"], body["variant"], body["reason"]) == (False, "legacy", "DISABLED")


def test_ofrep_single__unknown_flag__404_flag_not_found(client, key):
    response = _post(client, SINGLE.format("nope"), {"context": {"targetingKey": "u"}}, key)
    assert response.status_code == 404
    assert response.json() == {"key": "nope", "errorCode": "FLAG_NOT_FOUND",
                               "errorDetails": "Flag 'nope' was not found"}


@pytest.mark.parametrize("context", [{}, {"plan": "pro"}, {"targetingKey": ""}])
def test_ofrep_single__no_targeting_key__400_targeting_key_missing(client, key, context):
    response = _post(client, SINGLE.format("invoice-engine"), {"context": context}, key)
    assert response.status_code == 400
    body = response.json()
    assert (body["key"], body["errorCode"]) == ("invoice-engine", "TARGETING_KEY_MISSING")
    assert body["errorDetails"]


@pytest.mark.parametrize(("body", "code"), [
    (b"{nope", "PARSE_ERROR"),
    (b"[1]", "PARSE_ERROR"),
    ({"context": "x"}, "INVALID_CONTEXT"),
    ({"context": {"targetingKey": 5}}, "INVALID_CONTEXT"),
])
def test_ofrep_single__bad_request__400_with_error_details(client, key, body, code):
    response = _post(client, SINGLE.format("invoice-engine"), body, key)
    assert response.status_code == 400
    data = response.json()
    assert data["errorCode"] == code and data["errorDetails"] and data["key"] == "invoice-engine"


@pytest.mark.parametrize("url", [SINGLE.format("invoice-engine"), BULK])
def test_ofrep__no_key__401(client, key, url):
    response = _post(client, url, {"context": {"targetingKey": "u"}})
    assert response.status_code == 401
    assert response.json()["errorDetails"]


def test_ofrep__x_api_key__accepted(client, key):
    response = _post(client, SINGLE.format("invoice-engine"), {"context": {"targetingKey": "u"}}, HTTP_X_API_KEY=key)
    assert response.status_code == 200


def test_ofrep__over_the_rate__429_retry_after_whole_seconds(client, key, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"sdk": "2/min"}}
    for _ in range(2):
        _post(client, BULK, {"context": {"targetingKey": "u"}}, key)
    response = _post(client, SINGLE.format("invoice-engine"), {"context": {"targetingKey": "u"}}, key)
    assert response.status_code == 429
    assert response["Retry-After"].isdigit() and 1 <= int(response["Retry-After"]) <= 60
    assert response.json()["errorDetails"]


def test_ofrep_bulk__every_flag__items_match_single(client, key, actor):
    flag_create(actor=actor, key="search", workload="billing")
    context = {"targetingKey": "user-1", "tenant_id": "t4"}
    response = _post(client, BULK, {"context": context}, key)
    assert response.status_code == 200
    body = response.json()
    assert [item["key"] for item in body["flags"]] == ["invoice-engine", "search"]
    assert body["metadata"]["environment"] == "staging"
    for item in body["flags"]:
        assert item == _post(client, SINGLE.format(item["key"]), {"context": context}, key).json()
    assert response["ETag"].startswith('"')


def test_ofrep_bulk__no_targeting_key__200_with_failure_items(client, key):
    body = _post(client, BULK, {"context": {"plan": "pro"}}, key).json()
    assert [(i["key"], i["errorCode"]) for i in body["flags"]] == [("invoice-engine", "TARGETING_KEY_MISSING")]
    assert all(i["errorDetails"] for i in body["flags"])


def test_ofrep_bulk__bad_context__400_without_key(client, key):
    response = _post(client, BULK, {"context": []}, key)
    assert response.status_code == 400
    assert set(response.json()) == {"errorCode", "errorDetails"}


def test_ofrep_bulk__if_none_match__304_then_200_after_change(client, key, actor,
                                                              django_capture_on_commit_callbacks):
    body = {"context": {"targetingKey": "user-1", "tenant_id": "t1"}}
    etag = _post(client, BULK, body, key)["ETag"]
    again = _post(client, BULK, body, key, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
    other = _post(client, BULK, {"context": {"targetingKey": "user-2"}}, key, HTTP_IF_NONE_MATCH=etag)
    assert other.status_code == 200 and other["ETag"] != etag
    with django_capture_on_commit_callbacks(execute=True):
        flag_state_update(actor=actor, flag="invoice-engine", environment="staging", version=None,
                          percentage_value=70)
    changed = _post(client, BULK, body, key, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag


def test_ofrep_bulk__cors_preflight__allows_auth_and_if_none_match(client):
    response = client.options(BULK, HTTP_ORIGIN="https://app.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
                              HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization,if-none-match,content-type")
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "*"
    allowed = {h.strip().lower() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "if-none-match", "content-type", "x-api-key"} <= allowed
    assert "POST" in response["Access-Control-Allow-Methods"]


def test_ofrep_bulk__response__exposes_etag_to_browsers(client, key):
    response = _post(client, BULK, {"context": {"targetingKey": "u"}}, key, HTTP_ORIGIN="https://app.example")
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "ETag" in response["Access-Control-Expose-Headers"]


def test_ofrep__trailing_slash_and_csrf__no_redirect_no_csrf_failure(key):
    from django.test import Client

    csrf_client = Client(enforce_csrf_checks=True)
    response = _post(csrf_client, SINGLE.format("invoice-engine"), {"context": {"targetingKey": "u"}}, key)
    assert response.status_code == 200


def test_schema__lists_every_sdk_and_ofrep_endpoint(admin_client):
    response = admin_client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    for path, method in [("/api/v1/sdk/evaluate", "post"), ("/api/v1/sdk/evaluate/bulk", "post"),
                         ("/api/v1/sdk/stream", "get"), ("/api/v1/sdk/metrics", "post"),
                         ("/ofrep/v1/evaluate/flags/{key}", "post"), ("/ofrep/v1/evaluate/flags", "post")]:
        assert method in paths[path], path


# -- one OpenFeature mapping: OFREP and the in-process provider agree ----------------------------

_IN = next(t for t in (f"t{i}" for i in range(100)) if bucket("invoice-engine", t) < 500_000)
_OUT = next(t for t in (f"t{i}" for i in range(100)) if bucket("invoice-engine", t) >= 500_000)
# (flag, context, the engine's reason): every reason the engine gives, DEFAULT in each of its forms
_CASES = [
    ("invoice-engine", {"targetingKey": "user-1"}, "TARGETING_MATCH"),
    ("invoice-engine", {"targetingKey": "user-2"}, "TARGETING_MATCH"),
    ("invoice-engine", {"targetingKey": "user-9", "tenant_id": _IN}, "SPLIT"),
    ("invoice-engine", {"targetingKey": "user-9", "tenant_id": _OUT}, "DEFAULT"),  # drawn, live split
    ("invoice-engine", {"targetingKey": "user-9"}, "DEFAULT"),  # no bucket_by attribute: no draw
    ("zero", {"targetingKey": "user-9"}, "DEFAULT"),  # 0 %: nothing drawn
    ("killed", {"targetingKey": "user-9"}, "DISABLED"),
    ("retired", {"targetingKey": "user-9"}, "STATIC"),
    ("nope", {"targetingKey": "user-9"}, "ERROR"),
    ("invoice-engine", {"plan": "pro"}, "ERROR"),
]


@pytest.fixture
def every_reason(key, actor):  # type: ignore[no-untyped-def]
    for name in ("zero", "killed", "retired"):
        flag_create(actor=actor, key=name, workload="billing")
    flag_state_update(actor=actor, flag="zero", environment="staging", version=None, enabled=True,
                      percentage_value=0)
    flag_state_update(actor=actor, flag="killed", environment="staging", version=None, enabled=False,
                      percentage_value=100)
    flag_state_update(actor=actor, flag="retired", environment="staging", version=None, enabled=True,
                      percentage_value=100)
    flag_state_retire(actor=actor, flag="retired", environment="staging")
    return key


@pytest.mark.parametrize(("flag_key", "context", "engine_reason"), _CASES)
def test_ofrep_and_provider__same_decision__same_reason(client, every_reason, flag_key, context, engine_reason):
    from openfeature.evaluation_context import EvaluationContext
    from turnout import Turnout
    from turnout.openfeature import TurnoutProvider

    key = every_reason
    document = client.get("/api/v1/sdk/ruleset", HTTP_AUTHORIZATION=f"Bearer {key}").json()
    sdk = Turnout.offline(document)
    try:
        attributes = {k: v for k, v in context.items() if k != "targetingKey"}
        local = TurnoutProvider(sdk).resolve_boolean_details(
            flag_key, False, EvaluationContext(context.get("targetingKey"), attributes))
        assert str(sdk.decide(flag_key, context.get("targetingKey"), attributes).reason) == engine_reason
    finally:
        sdk.close()
    remote = _post(client, SINGLE.format(flag_key), {"context": context}, key).json()
    if engine_reason == "ERROR":
        assert (remote["errorCode"], str(local.reason)) == (str(local.error_code), "ERROR")
        assert remote["errorDetails"] == local.error_message
        return
    assert local.error_code is None
    assert (remote["value"], remote["variant"], remote["reason"]) == (local.value, local.variant, str(local.reason))
    assert remote["metadata"] == local.flag_metadata
    assert remote["metadata"]["turnoutReason"] == engine_reason
    assert remote["reason"] in ("STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "UNKNOWN")  # OFREP 0.3.0
