"""User feedback as readiness evidence: the SDK endpoint, the management read, aggregation, the rule, retention."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient
from turnout.wire import key_hash

from audit.models import AuditEvent
from common import clock
from rollout.feedback.models import Feedback, FeedbackRule
from rollout.models import FlagState

pytestmark = pytest.mark.django_db

URL = "/api/v1/sdk/feedback"
STATE = "/api/v1/flags/invoice-engine/states"


@pytest.fixture
def keys(flag: Any, actor: Any) -> dict[str, str]:
    """An SDK key per environment (the flag exists in both)."""
    from rollout.access.keys import sdk_key_create

    return {env: sdk_key_create(actor=actor, environment=env, name=f"svc-{env}")[1] for env in ("staging", "production")}


def post(client: Any, body: Any, key: str | None, **extra: Any) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(URL, data, content_type="application/json", **headers, **extra)


def entry(**fields: Any) -> dict[str, Any]:
    return {"flag": "invoice-engine", "key_hash": key_hash("t1"), "path": "parallel", "path_source": "decided",
            "version": 3, "score": 4, "comment": "quick", "at": "2026-12-01T10:00:00Z", **fields}


def client_for(username: str) -> APIClient:
    client = APIClient()
    client.force_authenticate(get_user_model().objects.get(username=username))
    return client


def add(state: FlagState, path: str, scores: list[int | None], comment: str = "", days_ago: float = 0) -> None:
    at = clock.now() - timedelta(days=days_ago)
    Feedback.objects.bulk_create([
        Feedback(flag_state=state, path=path, key_hash="0" * 64, score=s, comment=comment or ("" if s else "hm"),
                 at=at, received_at=at) for s in scores])


def staging() -> FlagState:
    return FlagState.objects.select_related("flag__workload", "environment").get(
        flag__key="invoice-engine", environment__key="staging")


# -- the SDK endpoint ------------------------------------------------------------------------------


def test_sdk_feedback__batch_with_key_and_key_hash__stored_scrubbed_and_scoped_to_the_keys_environment(client, keys):
    from actions.submit import submit_state
    from common.actors import Actor

    submit_state(actor=Actor.system("test"), flag="invoice-engine", environment="staging",
                 action="flag_state.updated", params={"enabled": True, "percentage": 100})
    body = {"sdk": {"name": "turnout-python", "version": "0.1.0"}, "feedback": [
        entry(comment="write to ann@example.com, card 4111 1111 1111 1111",
              attributes={"plan": "pro", "email": "ann@example.com", "seats": 4}),
        # a key (hashed on arrival) and no path: the server decides it (100% parallel with a tenant)
        {"flag": "invoice-engine", "key": "t7", "score": 2},
        entry(flag="no-such-flag"),
    ]}
    response = post(client, body, keys["staging"])
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 2, "unknown_flags": ["no-such-flag"]}
    rows = {f.key_hash: f for f in Feedback.objects.all()}
    assert set(rows) == {key_hash("t1"), key_hash("t7")}
    first = rows[key_hash("t1")]
    assert first.flag_state.environment.key == "staging"  # the key's environment, not another
    assert (first.path, first.path_source, first.version, first.score) == ("parallel", "decided", 3, 4)
    assert first.comment == "write to [email], card [number]"
    assert first.attributes == {"plan": "pro", "email": "[redacted]", "seats": 4} and first.truncated
    server = rows[key_hash("t7")]
    assert (server.path_source, server.comment) == ("server", "")
    assert server.path == "legacy"  # invoice-engine buckets by tenant_id: a context without it stays on legacy
    assert not Feedback.objects.filter(key_hash="t7").exists()  # the key itself is never stored


@pytest.mark.parametrize(("body", "field"), [
    ({"feedback": [entry(score=6)]}, "feedback[0].score"),
    ({"feedback": [entry(score=0)]}, "feedback[0].score"),
    ({"feedback": [entry(score=True)]}, "feedback[0].score"),
    ({"feedback": [entry(score=None, comment="  ")]}, "feedback[0].score"),
    ({"feedback": [entry(comment="x" * 2001)]}, "feedback[0].comment"),
    ({"feedback": [entry(path="both")]}, "feedback[0].path"),
    ({"feedback": [entry(path=None)]}, "feedback[0].path"),
    ({"feedback": [entry(key_hash="ABC")]}, "feedback[0].key_hash"),
    ({"feedback": [entry(key="t1")]}, "feedback[0].key"),
    ({"feedback": [entry(attributes={"nested": {"a": 1}})]}, "feedback[0].attributes.nested"),
    ({"feedback": [entry(at="yesterday")]}, "feedback[0].at"),
    ({"feedback": [entry()] * 101}, "feedback"),
    ({"feedback": []}, "feedback"),
    ({"feedback": "nope"}, "feedback"),
    ([], "body"),
])
def test_sdk_feedback__bad_input__400_naming_the_field_and_nothing_stored(client, keys, body, field):
    response = post(client, body, keys["staging"])
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error["fields"], error
    assert not Feedback.objects.exists()


def test_sdk_feedback__auth_size_and_throttle__401_413_429(client, keys, settings):
    assert post(client, {"feedback": [entry()]}, None).status_code == 401
    assert post(client, {"feedback": [entry()]}, "tsdk_nope").status_code == 401
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {keys['staging']}").status_code == 405
    settings.TURNOUT_FEEDBACK_MAX_BODY = 200
    too_large = post(client, {"feedback": [entry(comment="y" * 300)]}, keys["staging"])
    assert too_large.status_code == 413 and too_large.json()["error"]["code"] == "too_large"
    assert post(client, "{not json", keys["staging"]).status_code == 400
    settings.TURNOUT_FEEDBACK_MAX_BODY = 4096
    # the same per-key budget as every SDK endpoint (metrics, ruleset, evaluate)
    base = dict(settings.REST_FRAMEWORK)
    settings.REST_FRAMEWORK = {**base, "DEFAULT_THROTTLE_RATES": {**base["DEFAULT_THROTTLE_RATES"], "sdk": "1/min"}}
    assert post(client, {"feedback": [entry(comment="")]}, keys["production"]).status_code == 202
    throttled = post(client, {"feedback": [entry()]}, keys["production"])
    assert throttled.status_code == 429 and throttled.json()["error"]["code"] == "throttled"
    assert int(throttled["Retry-After"]) >= 1
    assert Feedback.objects.count() == 1


# -- aggregation, the rule, the readiness report ------------------------------------------------------


def test_feedback_report__per_path__counts_average_distribution_and_latest_comments_in_the_window(flag):
    from rollout.feedback.reads import feedback_report

    state = staging()
    add(state, "legacy", [5, 4, 4, None], comment="")
    add(state, "parallel", [3, 2], comment="slow on page 2")
    add(state, "parallel", [1], comment="too old to count", days_ago=30)
    report = feedback_report(state)
    assert report["window_days"] == 14
    assert report["legacy"] == {"responses": 4, "scores": 3, "average_score": 4.33, "comments": 1,
                                "distribution": {"1": 0, "2": 0, "3": 0, "4": 2, "5": 1}}
    assert report["parallel"]["scores"] == 2 and report["parallel"]["average_score"] == 2.5
    assert report["score_drop"] == 1.83
    assert [c["comment"] for c in report["latest_comments"]] == ["slow on page 2", "slow on page 2", "hm"]
    assert report["rule"]["status"] == "unset"


def test_feedback_rule__pass_fail_and_too_few_responses__verdict_follows(planned, people, actor):
    from rollout.feedback.services import feedback_rule_set
    from rollout.plans.readiness import readiness

    state = staging()
    root = client_for("root")
    response = root.put(f"{STATE}/staging/feedback/rule/", {"version": state.version, "max_score_drop": 0.5,
                                                            "min_responses": 3, "reason": "pilot users decide"},
                        format="json")
    assert response.status_code == 200, response.json()
    rule = FeedbackRule.objects.get(flag_state=state)
    assert (float(rule.max_score_drop), rule.min_responses, rule.window_days) == (0.5, 3, 14)

    add(state, "legacy", [4, 4, 4])
    add(state, "parallel", [4, 3])
    report = readiness(staging())
    assert report["feedback"]["rule"]["status"] == "insufficient"
    assert report["verdict"] == "not_yet"
    assert any(r.startswith("not enough user feedback yet") for r in report["reasons"])

    add(state, "parallel", [4])  # parallel 3.67 vs legacy 4.00: a drop of 0.33, within 0.5
    report = readiness(staging())
    assert report["feedback"]["rule"]["status"] == "pass"
    assert not any("user feedback" in r for r in report["reasons"])

    add(state, "parallel", [1, 2])  # parallel 2.8: 1.2 below
    report = readiness(staging())
    assert report["feedback"]["rule"]["status"] == "fail"
    assert report["verdict"] == "failing"
    assert report["reasons"][-1] == ("user feedback: parallel's average score 2.80 is 1.20 below legacy's 4.00 "
                                     "(at most 0.50 allowed; 5 and 3 responses)")
    gate = client_for("vic").get("/api/v1/gates/invoice-engine/staging")
    assert gate.status_code == 503 and "user feedback" in gate.json()["error"]["message"]
    api = client_for("vic").get(f"{STATE}/staging/readiness/").json()
    assert api["feedback"]["rule"]["status"] == "fail" and api["feedback"]["parallel"]["scores"] == 5

    # removing the rule (through the action layer too): shown, no longer judged
    feedback_rule_set(actor=actor, flag="invoice-engine", environment="staging", version=None, max_score_drop=None)
    report = readiness(staging())
    assert report["feedback"]["rule"]["status"] == "unset" and report["verdict"] != "failing"


def test_feedback_rule_put__bad_values_and_production__400_and_change_request(planned, people):
    ed = client_for("ed")
    version = staging().version
    for body, field in [({"max_score_drop": 5}, "max_score_drop"), ({"max_score_drop": -1}, "max_score_drop"),
                        ({"max_score_drop": 1, "min_responses": 0}, "min_responses"),
                        ({"max_score_drop": 1, "window_days": 400}, "window_days")]:
        bad = ed.put(f"{STATE}/staging/feedback/rule/", {"version": version, **body}, format="json")
        assert bad.status_code == 400 and field in bad.json()["error"]["fields"], bad.json()
    missing = ed.put(f"{STATE}/staging/feedback/rule/", {"version": version, "min_responses": 5}, format="json")
    assert missing.status_code == 400 and "max_score_drop" in missing.json()["error"]["fields"]
    assert ed.put(f"{STATE}/staging/feedback/rule/", {"max_score_drop": 1}, format="json").status_code == 428
    # production requires approval: an editor's rule waits for a second person, like guardrails
    prod = FlagState.objects.get(flag__key="invoice-engine", environment__key="production")
    pending = ed.put(f"{STATE}/production/feedback/rule/", {"version": prod.version, "max_score_drop": 1},
                     format="json")
    assert pending.status_code == 202
    assert pending.json()["change_request"]["action"] == "flag_state.feedback_rule_set"
    assert not FeedbackRule.objects.exists()
    cr = pending.json()["change_request"]["id"]
    approved = client_for("ann").post(f"/api/v1/change-requests/{cr}/approve/", {"reason": "agreed"}, format="json")
    assert approved.status_code == 200 and approved.json()["status"] == "applied"
    assert float(FeedbackRule.objects.get(flag_state__environment__key="production").max_score_drop) == 1.0


def test_feedback_rule__failing__holds_an_automatic_advance(planned, actor):
    from actions.submit import submit_state
    from rollout.feedback.services import feedback_rule_set
    from rollout.plans.guardrails import guardrail_check, guardrail_set
    from rollout.plans.stages import rollout_advance
    from tests.rollouts.conftest import add_metrics

    rollout_advance(actor=actor, flag="invoice-engine", environment="staging")
    state = staging()
    stages = list(state.stages.order_by("position"))
    stages[0].gate, stages[0].min_soak_seconds = "auto", 0
    stages[0].save()
    guardrail_set(actor=actor, flag="invoice-engine", environment="staging", version=None, max_error_rate=50,
                  min_sample_size=10, window_seconds=300)
    now = clock.now()
    for minute in range(1, 4):
        add_metrics("staging", "invoice-engine", now - timedelta(minutes=minute), "parallel", calls=20, comparisons=20)
        add_metrics("staging", "invoice-engine", now - timedelta(minutes=minute), "legacy", calls=20)
    state.stage_started_at = now - timedelta(minutes=10)
    state.save()
    feedback_rule_set(actor=actor, flag="invoice-engine", environment="staging", version=None, max_score_drop=0.5,
                      min_responses=2)
    add(state, "legacy", [5, 5])
    add(state, "parallel", [2, 2])
    held = guardrail_check(flag_state_id=state.pk, now=now)
    assert (held.status, held.acted) == ("healthy", None)
    assert staging().stage == 1
    add(state, "parallel", [5, 5, 5, 5, 5, 5])  # parallel 4.0: 1.0 below... still more than 0.5
    assert guardrail_check(flag_state_id=state.pk, now=now).acted is None
    submit_state(actor=actor, flag="invoice-engine", environment="staging", action="flag_state.feedback_rule_set",
                 params={"max_score_drop": 1})
    advanced = guardrail_check(flag_state_id=state.pk, now=now)
    assert advanced.acted == "advanced"
    event = AuditEvent.objects.get(sequence=advanced.audit_sequence)
    assert event.after["readiness"]["feedback"]["status"] == "pass"  # the rule's say, kept with the advance


def test_feedback_view__list_and_filters__entries_newest_first_with_the_report(flag, people):
    state = staging()
    add(state, "legacy", [5])
    add(state, "parallel", [2, 3, 4])
    vic = client_for("vic")
    body = vic.get(f"{STATE}/staging/feedback/?path=parallel&limit=2").json()
    assert [e["score"] for e in body["entries"]] == [4, 3] and body["next_before"] == body["entries"][-1]["id"]
    rest = vic.get(f"{STATE}/staging/feedback/?path=parallel&limit=2&before={body['next_before']}").json()
    assert [e["score"] for e in rest["entries"]] == [2] and rest["next_before"] is None
    assert body["report"]["legacy"]["scores"] == 1 and body["report"]["parallel"]["scores"] == 3
    assert "key_hash" not in body["entries"][0]
    for query, field in [("path=both", "path"), ("limit=0", "limit"), ("before=x", "before")]:
        bad = vic.get(f"{STATE}/staging/feedback/?{query}")
        assert bad.status_code == 400 and field in bad.json()["error"]["fields"]
    assert vic.get("/api/v1/flags/invoice-engine/states/nowhere/feedback/").status_code == 404


def test_feedback_retention__older_than_the_setting__deleted_newer_kept(flag, settings):
    from rollout.feedback.tasks import feedback_retention

    settings.TURNOUT_FEEDBACK_DAYS = 30
    state = staging()
    add(state, "legacy", [4], days_ago=31)
    add(state, "parallel", [3], days_ago=29)
    assert feedback_retention() == {"deleted": 1}
    assert list(Feedback.objects.values_list("path", flat=True)) == ["parallel"]


def test_schema__lists_the_feedback_endpoints(admin_client):
    paths = admin_client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()["paths"]
    assert "post" in paths["/api/v1/sdk/feedback"]
    assert "get" in paths["/api/v1/flags/{key}/states/{env}/feedback/"]
    assert "put" in paths["/api/v1/flags/{key}/states/{env}/feedback/rule/"]


def test_feedback_rule_form__readiness_page__set_refused_and_requested_like_the_api(planned, people, client):
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    url = "/flags/invoice-engine/{env}/feedback-rule/"
    htmx = {"HTTP_HX_REQUEST": "true"}
    client.force_login(users.get(username="vic"))
    page = client.get("/flags/invoice-engine/staging/readiness/")
    assert page.status_code == 200 and b"User feedback" in page.content and b"Add a feedback rule" not in page.content
    assert client.post(url.format(env="staging"), {"max_score_drop": "1", "version": 2}, **htmx).status_code == 403

    client.force_login(users.get(username="ed"))
    assert b"Add a feedback rule" in client.get("/flags/invoice-engine/staging/readiness/").content
    bad = client.post(url.format(env="staging"), {"max_score_drop": "9", "min_responses": 20, "window_days": 14,
                                                  "version": 2}, **htmx)
    assert bad.status_code == 422 and b"feedback-rule-staging-max_score_drop" in bad.content
    saved = client.post(url.format(env="staging"), {"max_score_drop": "0.75", "min_responses": 10, "window_days": 7,
                                                    "version": 2, "reason": "pilot"}, **htmx)
    assert saved.status_code == 200 and b"Feedback rule saved" in saved.content
    assert b"not enough user feedback yet" in saved.content
    rule = FeedbackRule.objects.get(flag_state=staging())
    assert (str(rule.max_score_drop), rule.min_responses, rule.window_days) == ("0.75", 10, 7)
    # production requires approval: the same change request the API opens
    prod = FlagState.objects.get(flag__key="invoice-engine", environment__key="production")
    pending = client.post(url.format(env="production"), {"max_score_drop": "1", "min_responses": 5, "window_days": 14,
                                                         "version": prod.version}, **htmx)
    assert pending.status_code == 200 and b"Waiting for approval" in pending.content
    # without htmx: back to the readiness page
    removed = client.post(url.format(env="staging"), {"max_score_drop": "", "min_responses": 10, "window_days": 7,
                                                      "version": staging().version})
    assert removed.status_code == 302 and removed["Location"].endswith("/flags/invoice-engine/staging/readiness/")
    assert not FeedbackRule.objects.filter(flag_state=staging()).exists()


def test_sdk_entries__hostile_input__always_accepted_by_the_server_parser():
    """The SDK's caps and scrubbing match the server's limits: what it sends is never refused (a refusal
    would drop a whole batch)."""
    from turnout import Turnout

    from rollout.feedback.ingest import parse_feedback

    sdk = Turnout.offline({"schema": 1, "environment": "staging", "version": 1,
                           "flags": {"invoice-engine": {"enabled": True, "percentage": 100}}})
    assert not sdk.feedback("invoice\tengine", "u", score=3)  # a name the server refuses: not recorded
    hostile = {"na\tme\n": "v" * 500, "nan": float("nan"), "inf": float("-inf"), "nested": {"a": 1},
               "x" * 300: "long name", 7: "not a name", **{f"k{i:02}": "z\x00" * 90 for i in range(40)}}
    assert sdk.feedback("invoice-engine", "u\x00\n" * 400, score=5, comment="a\x00b\r\n\t" * 600, attributes=hostile)
    assert sdk.feedback("invoice-engine", 12345, comment="ok", path="legacy")
    sent = json.loads(json.dumps({"sdk": {"name": "turnout-python"}, "feedback": sdk._feedback.pending()}))
    entries = parse_feedback(sent)
    assert len(entries) == 2 and entries[0].truncated and len(entries[0].attributes) <= 20
    assert entries[1].key_hash == key_hash("12345")
