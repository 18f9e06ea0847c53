"""Operations surface: /healthz, /readyz, /metrics, structured logs and Celery task observability."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import OperationalError, connections
from prometheus_client.parser import text_string_to_metric_families

from common.actors import Actor
from common.logging import JsonFormatter, PlainFormatter
from common.request_context import request_id_var, task_var
from rollout.access.keys import sdk_key_create


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def scrape(client: Any, **headers: str) -> str:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    return response.content.decode()


def test_healthz__any_host_no_database__200_ok(client: Any) -> None:
    response = client.get("/healthz", headers={"Host": "10.1.2.3:8000"})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def _beat_all(age_seconds: float = 0.0) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from common.heartbeats import KINDS
    from common.models import Heartbeat

    for kind in KINDS:
        Heartbeat.objects.update_or_create(kind=kind, name=f"{kind}@test",
                                           defaults={"seen_at": timezone.now() - timedelta(seconds=age_seconds)})


def test_readyz__database_answers_background_fresh__200_ok(client: Any, db: Any, settings: Any) -> None:
    settings.REDIS_URL = None
    _beat_all()
    response = client.get("/readyz", headers={"Host": "pod-ip.internal"})
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok"},
                               "background": {"worker": "ok", "beat": "ok", "schedule": "ok"}}


def test_readyz__no_worker_ever_ran__200_degraded_names_each_missing(client: Any, db: Any, settings: Any) -> None:
    settings.REDIS_URL = None
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "degraded", "checks": {"database": "ok"},
                               "background": {"worker": "missing", "beat": "missing", "schedule": "missing"}}


def test_readyz__worker_heartbeat_95s_old__degraded_names_worker_stale(client: Any, db: Any, settings: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from common.models import Heartbeat

    settings.REDIS_URL = None
    _beat_all()
    Heartbeat.objects.filter(kind="worker").update(seen_at=timezone.now() - timedelta(seconds=95))
    body = client.get("/readyz").json()
    assert body["status"] == "degraded"
    assert body["background"] == {"worker": "stale 95s", "beat": "ok", "schedule": "ok"}


def test_readyz__database_and_redis_answer__200_names_both(client: Any, db: Any, redis_url: str) -> None:
    _beat_all()
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}
    assert response.json()["status"] == "ok"


def test_readyz__redis_unreachable__200_degraded_names_redis(client: Any, db: Any, settings: Any) -> None:
    """Redis away does not take web processes out of rotation: the kill switch still works."""
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    _beat_all()
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("error: ")


def test_readyz__database_unreachable__503_names_database(
    client: Any, db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.REDIS_URL = None

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(connections["default"], "cursor", refuse)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"database": "error: OperationalError"},
                               "background": {}}


def test_metrics__worker_stale_beat_fresh__background_up_says_which(client: Any, db: Any, settings: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from common.models import Heartbeat

    _beat_all()
    Heartbeat.objects.filter(kind="worker").update(seen_at=timezone.now() - timedelta(seconds=95))
    text = scrape(client)
    assert metric_value(text, "turnout_background_up", kind="worker") == 0
    assert metric_value(text, "turnout_background_up", kind="beat") == 1
    assert metric_value(text, "turnout_background_heartbeat_age_seconds", kind="worker") >= 95


def test_healthz_readyz__production_https_redirect_on__answered_over_http(client: Any, db: Any, settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.REDIS_URL = None
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/login/").status_code == 301


def test_metrics__sdk_ruleset_requested__request_and_build_counted(client: Any, db: Any) -> None:
    from rollout.services.environments import environment_create

    # An environment of its own: its ruleset's cache key is shared with no other test (Redis is shared).
    env_key = f"metrics-{uuid.uuid4().hex[:8]}"
    environment_create(actor=Actor.system("test"), key=env_key, name="Metrics", order=5)
    secret = sdk_key_create(actor=Actor.system("test"), environment=env_key, name="m")[1]
    before = scrape(client)
    for _ in range(3):
        assert client.get("/api/v1/sdk/ruleset", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("turnout_http_requests_total", method="GET", route="api/v1/sdk/ruleset", status="200") == 3
    assert delta("turnout_http_request_duration_seconds_count", method="GET", route="api/v1/sdk/ruleset") == 3
    assert delta("turnout_ruleset_builds_total", environment=env_key) == 1  # then served from the cache


def test_request_log__log_requests_off__no_line(client: Any, db: Any, settings: Any, caplog: Any) -> None:
    settings.LOG_REQUESTS = False
    with caplog.at_level(logging.INFO, logger="turnout.http"):
        client.get("/login/")
    assert [r for r in caplog.records if r.name == "turnout.http"] == []


def test_metrics__unknown_path__counted_as_unmatched_not_by_path(client: Any, db: Any) -> None:
    client.get("/no/such/page-123")
    text = scrape(client)
    assert metric_value(text, "turnout_http_requests_total", method="GET", route="unmatched", status="404") >= 1
    assert "page-123" not in text


def test_metrics__scrape_token_set__401_without_200_with(client: Any, db: Any, settings: Any) -> None:
    settings.TURNOUT_METRICS_TOKEN = "scrape-token-for-tests"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert "turnout_http_requests_total" in scrape(client, Authorization="Bearer scrape-token-for-tests")


def test_metrics__hook_functions__exposed_with_their_labels(client: Any, db: Any) -> None:
    from common import metrics

    before = scrape(client)
    metrics.record_evaluation(api="ofrep_bulk", environment="staging", reason="SPLIT", count=5)
    metrics.record_guardrail_action(environment="production", action="rollback")
    metrics.record_sdk_report(environment="staging", outcome="accepted")
    metrics.stream_opened("staging")
    during = scrape(client)
    metrics.stream_closed("staging")
    after = scrape(client)
    assert (metric_value(after, "turnout_evaluations_total", api="ofrep_bulk", environment="staging", reason="SPLIT")
            - metric_value(before, "turnout_evaluations_total", api="ofrep_bulk", environment="staging",
                           reason="SPLIT")) == 5
    assert (metric_value(after, "turnout_guardrail_actions_total", environment="production", action="rollback")
            - metric_value(before, "turnout_guardrail_actions_total", environment="production", action="rollback")) == 1
    assert (metric_value(after, "turnout_sdk_metric_reports_total", environment="staging", outcome="accepted")
            - metric_value(before, "turnout_sdk_metric_reports_total", environment="staging", outcome="accepted")) == 1
    open_before = metric_value(before, "turnout_stream_connections", environment="staging")
    assert metric_value(during, "turnout_stream_connections", environment="staging") == open_before + 1
    assert metric_value(after, "turnout_stream_connections", environment="staging") == open_before


def test_metrics__celery_task_runs__duration_observed_by_task_and_state(client: Any, envs: Any) -> None:
    from rollout.tasks import warm_ruleset

    labels = {"task": "rollout.tasks.warm_ruleset", "state": "SUCCESS"}
    before = metric_value(scrape(client), "turnout_task_duration_seconds_count", **labels)
    assert warm_ruleset.delay(envs["staging"].pk).get() == envs["staging"].ruleset_version
    assert metric_value(scrape(client), "turnout_task_duration_seconds_count", **labels) == before + 1


def test_json_log__inside_request__one_object_with_event_ids_and_request_id() -> None:
    token = request_id_var.set("req-123")
    try:
        record = logging.makeLogRecord({"name": "turnout.ruleset", "levelname": "INFO", "msg": "ruleset.built",
                                        "environment": "staging", "version": 7})
        line = JsonFormatter().format(record)
    finally:
        request_id_var.reset(token)
    payload = json.loads(line)
    assert payload["event"] == "ruleset.built"
    assert payload["logger"] == "turnout.ruleset"
    assert payload["level"] == "INFO"
    assert (payload["request_id"], payload["environment"], payload["version"]) == ("req-123", "staging", 7)
    assert "\n" not in line


def test_plain_log__task_context__key_value_fields() -> None:
    token = task_var.set(("rollout.tasks.warm_ruleset", "abc"))
    try:
        line = PlainFormatter().format(logging.makeLogRecord({"name": "x", "levelname": "WARNING", "msg": "hello",
                                                              "flag": "f1"}))
    finally:
        task_var.reset(token)
    assert line.endswith("WARNING x hello task=rollout.tasks.warm_ruleset task_id=abc flag=f1")


@contextlib.contextmanager
def json_lines(name: str) -> Iterator[io.StringIO]:
    """What logger ``name`` writes at INFO, as JSON lines, whatever level the run was started with
    (`make` exports LOG_LEVEL=WARNING for `make run`, and so for the tests too)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_request_log__request_served__http_request_line_with_route_status_and_request_id(
    client: Any, db: Any, settings: Any
) -> None:
    settings.LOG_REQUESTS = True
    with json_lines("turnout.http") as stream:
        response = client.get("/api/v1/sdk/ruleset", headers={"X-Request-ID": "abc-42"})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert response.status_code == 401 and response["X-Request-ID"] == "abc-42"
    assert [(x["event"], x["request_id"], x["route"], x["status"], x["method"]) for x in lines] == [
        ("http.request", "abc-42", "api/v1/sdk/ruleset", 401, "GET")
    ]
    assert isinstance(lines[0]["duration_ms"], float)


def test_task_log__task_logs__line_carries_task_name_and_id(envs: Any) -> None:
    from rollout.tasks import warm_ruleset

    with json_lines("turnout.ruleset") as stream:
        result = warm_ruleset.apply(args=(envs["staging"].pk,), task_id="task-77")
    assert result.get() == envs["staging"].ruleset_version
    built = [json.loads(line) for line in stream.getvalue().splitlines() if '"ruleset.built"' in line]
    assert [(x["task"], x["task_id"], x["environment"]) for x in built] == [
        ("rollout.tasks.warm_ruleset", "task-77", "staging")
    ]


def test_task_publish__inside_a_request__request_id_travels_in_headers() -> None:
    from common.celery_signals import REQUEST_ID_HEADER, _before_publish

    headers: dict[str, Any] = {}
    token = request_id_var.set("req-9")
    try:
        _before_publish(headers=headers)
    finally:
        request_id_var.reset(token)
    assert headers == {REQUEST_ID_HEADER: "req-9"}


def test_revoke_sdk_key_command__active_key__revoked_audited_and_refused(
    client: Any, envs: Any, audit_events: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from django.core.management import call_command

    key, secret = sdk_key_create(actor=Actor.system("test"), environment="staging", name="old")
    auth = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/sdk/ruleset", headers=auth).status_code == 200
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("revoke_sdk_key", key.prefix, "--reason", "rotated", stdout=out)
    assert f"SDK key {key.prefix}… for staging revoked." in out.getvalue()
    events = [e for e in audit_events() if e.action == "sdk_key.revoked"]
    assert [(e.actor, e.object_key, e.reason) for e in events] == [
        ("system:manage.py revoke_sdk_key", key.prefix, "rotated")
    ]
    assert client.get("/api/v1/sdk/ruleset", headers=auth).status_code == 401


def test_revoke_sdk_key_command__unknown_prefix__command_error(db: Any) -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="does not exist"):
        call_command("revoke_sdk_key", "sdk_nope")


def test_metrics__sdk_evaluate_ofrep_and_reports__counted_by_api_reason_and_outcome(client: Any, flag: Any) -> None:
    secret = sdk_key_create(actor=Actor.system("test"), environment="staging", name="ev")[1]
    auth = {"Authorization": f"Bearer {secret}"}
    before = scrape(client)
    one = client.post("/api/v1/sdk/evaluate", {"flag": "invoice-engine", "context": {"key": "u1", "attributes": {}}},
                      content_type="application/json", headers=auth)
    bulk = client.post("/ofrep/v1/evaluate/flags", {"context": {"targetingKey": "u1"}},
                       content_type="application/json", headers=auth)
    bad = client.post("/api/v1/sdk/metrics", {"flags": "nope"}, content_type="application/json", headers=auth)
    assert (one.status_code, bulk.status_code, bad.status_code) == (200, 200, 400)
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    reason = one.json()["reason"]
    assert delta("turnout_evaluations_total", api="evaluate", environment="staging", reason=reason) == 1
    ofrep_reasons = [item["reason"] for item in bulk.json()["flags"]]
    assert ofrep_reasons
    for r in set(ofrep_reasons):
        assert delta("turnout_evaluations_total", api="ofrep_bulk", environment="staging",
                     reason=r) == ofrep_reasons.count(r)
    assert delta("turnout_sdk_metric_reports_total", environment="staging", outcome="rejected") == 1


def _guarded_rollout() -> None:
    from rollout.plans.guardrails import guardrail_set
    from rollout.services.flags import flag_state_update

    system = Actor.system("test")
    flag_state_update(actor=system, flag="invoice-engine", environment="staging", version=None, enabled=True,
                      percentage_value=5)
    guardrail_set(actor=system, flag="invoice-engine", environment="staging", version=None, max_error_rate=5,
                  min_sample_size=30, window_seconds=300, action="rollback")


def _signed_in(client: Any) -> Any:
    from rollout.access.users import user_create

    user = user_create(actor=Actor.system("test"), username="ops", password=None, roles=["admin"])
    client.force_login(user)
    return client


def test_ui_banner__guardrails_set_and_no_worker_reporting__every_page_says_so(
        client: Any, flag: Any, settings: Any) -> None:
    settings.REDIS_URL = None
    _guarded_rollout()
    page = _signed_in(client).get("/").content.decode()
    assert 'id="guardrail-watch"' in page
    assert "Guardrails are not being checked." in page and "worker: missing" in page


def test_ui_banner__worker_beat_and_schedule_fresh__no_banner(client: Any, flag: Any, settings: Any) -> None:
    settings.REDIS_URL = None
    _guarded_rollout()
    _beat_all()
    page = _signed_in(client).get("/").content.decode()
    assert response_ok(page) and 'id="guardrail-watch"' not in page


def test_ui_banner__no_rollout_has_guardrails__no_banner_even_without_worker(
        client: Any, flag: Any, settings: Any) -> None:
    settings.REDIS_URL = None
    page = _signed_in(client).get("/").content.decode()
    assert response_ok(page) and 'id="guardrail-watch"' not in page


def response_ok(page: str) -> bool:
    """The dashboard rendered (so a missing banner means no banner, not a broken page)."""
    return "Dashboard" in page and "</html>" in page
