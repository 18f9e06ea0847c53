"""Notifications: a local SMTP server and a local webhook receiver, started by the tests; retries, a dead
channel that blocks nothing, four eyes in who is told, and the admins' delivery log."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from common.actors import Actor
from tests.conftest import free_port
from tests.rollouts.test_webhooks import Receiver
from tests.team.conftest import Mailbox
from tests.ui_support import HTMX, signed_in, text

pytestmark = pytest.mark.django_db

KILL, REVIEW, WAITING, REJECTED = ("kill_switch.pulled", "break_glass.review_waiting", "change_request.waiting",
                                   "change_request.rejected")


@pytest.fixture(autouse=True)
def _fast_retries(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from config.celery import app

    # Eager Celery runs retries inline and then raises Retry: keep that inside the task's result.
    monkeypatch.setattr(app.conf, "task_eager_propagates", False)
    settings.TURNOUT_NOTIFY_RETRY_BASE_SECONDS = 0
    settings.TURNOUT_WEBHOOK_SECRET = "s3cret"


@pytest.fixture
def live(flag: Any, actor: Any) -> Any:
    from rollout.services.flags import flag_state_update

    for env in ("staging", "production"):
        flag_state_update(actor=actor, flag="invoice-engine", environment=env, version=None, enabled=True,
                          percentage_value=20)


def person(username: str, role: str, actor: Any) -> Any:
    from rollout.access.users import user_create

    return user_create(actor=actor, username=username, password=None, roles=[role], email=f"{username}@example.org")


def subscribe(user: Any, channel: str, address: str, kinds: list[str]) -> Any:
    from notifications.services import subscription_create

    return subscription_create(actor=Actor.for_user(user), channel=channel, address=address, kinds=kinds)


def deliveries() -> list[Any]:
    from notifications.models import Delivery

    return list(Delivery.objects.order_by("pk"))


def test_kill__subscribers_told_by_email_and_signed_webhook__not_who_pulled_it(
        live: Any, actor: Any, mailbox: Mailbox, receiver: Receiver, django_capture_on_commit_callbacks: Any) -> None:
    ann = person("ann", "admin", actor)
    subscribe(ann, "email", "ann@example.org", [KILL, REVIEW])
    subscribe(ann, "webhook", receiver.url, [KILL])
    ed = person("ed", "approver", actor)
    subscribe(ed, "email", "ed@example.org", [REVIEW])  # ed pulls it: his own review is not his to do
    from django.test import Client

    client = Client()
    client.force_login(ed)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/flags/invoice-engine/production/kill/", {"reason": "5xx spike"}, **HTMX)
    assert response.status_code == 200
    subjects = sorted(m["Subject"] for m in mailbox.messages)
    assert subjects == ["[Turnout] Break-glass review waiting: invoice-engine@production",
                        "[Turnout] Kill switch pulled: invoice-engine@production"]
    assert all(m["To"] == "ann@example.org" for m in mailbox.messages)
    kill_mail = next(m for m in mailbox.messages if "Kill" in m["Subject"])
    assert "ed pulled the kill switch of invoice-engine@production" in kill_mail.get_payload()
    assert "5xx spike" in kill_mail.get_payload()
    [(headers, body)] = receiver.requests
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Turnout-Signature"] == expected and headers["X-Turnout-Event"] == KILL
    payload = json.loads(body)
    assert {k: payload[k] for k in ("event", "action", "object_key", "actor", "reason")} == {
        "event": KILL, "action": "flag_state.killed", "object_key": "invoice-engine@production", "actor": "ed",
        "reason": "5xx spike"}
    assert [(d.username, d.kind, d.status, d.attempts) for d in deliveries()] == [
        ("ann", KILL, "sent", 1), ("ann", KILL, "sent", 1), ("ann", REVIEW, "sent", 1)]


def test_change_request__approvers_told_it_waits__requester_told_of_the_rejection(
        live: Any, actor: Any, mailbox: Mailbox, django_capture_on_commit_callbacks: Any) -> None:
    from actions.submit import change_request_reject, submit_state

    ed = person("ed", "editor", actor)
    amy = person("amy", "approver", actor)
    vic = person("vic", "viewer", actor)
    for who in (ed, amy, vic):
        subscribe(who, "email", f"{who.username}@example.org", [WAITING, REJECTED])
    with django_capture_on_commit_callbacks(execute=True):
        outcome = submit_state(actor=Actor.for_user(ed), flag="invoice-engine", environment="production",
                               action="flag_state.updated", params={"percentage": "50"}, version=2)
    assert outcome.change_request is not None
    assert [(m["To"], m["Subject"]) for m in mailbox.messages] == [
        ("amy@example.org", f"[Turnout] Change request #{outcome.change_request.pk} waits for approval")]
    with django_capture_on_commit_callbacks(execute=True):
        change_request_reject(actor=Actor.for_user(amy), change_request=outcome.change_request.pk,
                              reason="not before the release")
    assert mailbox.messages[-1]["To"] == "ed@example.org"
    assert "not before the release" in mailbox.messages[-1].get_payload()
    assert len(mailbox.messages) == 2


def test_webhook_channel__fails_twice__retried_until_delivered(
        live: Any, actor: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any) -> None:
    from rollout.services.flags import flag_state_kill

    ann = person("ann", "admin", actor)
    subscribe(ann, "slack", receiver.url, [KILL])
    receiver.fail_first = 2
    with django_capture_on_commit_callbacks(execute=True):
        flag_state_kill(actor=actor, flag="invoice-engine", environment="staging", reason="errors")
    assert len(receiver.requests) == 3
    body = json.loads(receiver.requests[-1][1])
    assert body == {"text": "*Kill switch pulled: invoice-engine@staging*\nsystem:test pulled the kill switch of "
                            "invoice-engine@staging: every subject takes legacy. Reason: errors"}
    [delivery] = deliveries()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 3, "")


def test_dead_channel__gives_up_and_logs_it__the_change_stands_and_others_still_delivered(
        live: Any, actor: Any, settings: Any, mailbox: Mailbox, django_capture_on_commit_callbacks: Any) -> None:
    from rollout.models import FlagState

    settings.TURNOUT_NOTIFY_MAX_RETRIES = 2
    ann = person("ann", "admin", actor)
    dead = f"http://127.0.0.1:{free_port()}/hooks/T000/SECRET"  # nothing listens there
    subscribe(ann, "teams", dead, [KILL])
    subscribe(ann, "email", "ann@example.org", [KILL])
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in("editor").post("/flags/invoice-engine/staging/kill/", {"reason": "x"}, **HTMX)
    assert response.status_code == 200
    assert not FlagState.objects.get(flag__key="invoice-engine", environment__key="staging").enabled
    failed, sent = sorted(deliveries(), key=lambda d: d.channel == "email")
    assert (failed.status, failed.attempts) == ("failed", 3)
    assert "127.0.0.1" in failed.last_error and "SECRET" not in failed.last_error
    assert (sent.status, sent.attempts) == ("sent", 1)
    assert len(mailbox.messages) == 1
    page = text(signed_in("admin", username="root").get("/notifications/deliveries/?status=failed"))
    assert "Failed" in page and "SECRET" not in page and "/hooks/" not in page


def test_smtp_down__delivery_retried_then_failed__never_raised(live: Any, actor: Any, settings: Any,
                                                               django_capture_on_commit_callbacks: Any) -> None:
    from rollout.services.flags import flag_state_kill

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 2
    settings.TURNOUT_NOTIFY_MAX_RETRIES = 1
    subscribe(person("ann", "admin", actor), "email", "ann@example.org", [KILL])
    with django_capture_on_commit_callbacks(execute=True):
        flag_state_kill(actor=actor, flag="invoice-engine", environment="staging")
    [delivery] = deliveries()
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    assert "ConnectionRefusedError" in delivery.last_error


def test_configured_webhooks__a_person_s_kill__posted_like_the_system_s(
        live: Any, actor: Any, settings: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any) -> None:
    settings.TURNOUT_WEBHOOK_URLS = [receiver.url]
    with django_capture_on_commit_callbacks(execute=True):
        assert signed_in("editor", "eve").post("/flags/invoice-engine/staging/kill/", {"reason": "r"},
                                               **HTMX).status_code == 200
    [(headers, body)] = receiver.requests
    payload = json.loads(body)
    assert (headers["X-Turnout-Event"], payload["actor"], payload["schema"]) == (KILL, "eve", 1)


def test_notices__guardrail_rollback__breach_and_rollback_for_everyone() -> None:
    from notifications.kinds import Audience, Kind, notices

    found = notices(action="flag_state.rolled_back", actor="system:guardrail", object_key="invoice-engine@production",
                    environment="production", before={"stage": 4}, after={
                        "stage": 3, "guardrail": {"action": "rollback", "breaches": ["error rate 30.0% > 5.0%"]}},
                    reason="guardrail breach")
    assert [(n.kind, n.audience) for n in found] == [(Kind.GUARDRAIL_BREACHED, Audience.EVERYONE),
                                                     (Kind.ROLLED_BACK, Audience.EVERYONE)]
    assert "error rate 30.0% > 5.0%" in found[0].text


def test_notify_event__run_twice__nothing_delivered_twice(live: Any, actor: Any, mailbox: Mailbox,
                                                          django_capture_on_commit_callbacks: Any) -> None:
    from notifications.dispatch import notices_queue
    from rollout.services.flags import flag_state_kill

    subscribe(person("ann", "admin", actor), "email", "ann@example.org", [KILL])
    with django_capture_on_commit_callbacks(execute=True):
        flag_state_kill(actor=actor, flag="invoice-engine", environment="staging")
    [delivery] = deliveries()
    assert notices_queue(delivery.audit_sequence) == []
    assert len(deliveries()) == 1
    assert len(mailbox.messages) == 1


# -- subscriptions --------------------------------------------------------------------------------------


def test_subscribe__viewer_email__audited_and_listed(envs: Any, audit_events: Any) -> None:
    client = signed_in("viewer", "vic")
    response = client.post("/notifications/new/", {"channel": "email", "address": "vic@example.org",
                                                   "kinds": [KILL]}, **HTMX)
    assert response.status_code == 200
    assert "vic@example.org" in text(response)
    [event] = [e for e in audit_events() if e.actor == "vic"]
    assert (event.action, event.after) == ("notification.subscribed", {
        "user": "vic", "channel": "email", "address": "vic@example.org", "kinds": [KILL]})


def test_subscribe__viewer_webhook__403_nothing_saved(envs: Any) -> None:
    from notifications.models import Subscription

    response = signed_in("viewer").post("/notifications/new/", {"channel": "webhook", "kinds": [KILL],
                                                               "address": "http://10.0.0.1/x"}, **HTMX)
    assert response.status_code == 403
    assert "an admin adds them" in text(response)
    assert not Subscription.objects.exists()


def test_subscribe__slack_url__audit_shows_the_host_only(envs: Any, audit_events: Any) -> None:
    response = signed_in("admin", "root").post("/notifications/new/", {
        "channel": "slack", "address": "https://hooks.slack.example/services/T0/B0/SECRET", "kinds": [KILL]}, **HTMX)
    assert response.status_code == 200
    [event] = [e for e in audit_events() if e.actor == "root"]
    assert event.after["address"] == "https://hooks.slack.example/…"
    assert "SECRET" not in text(response)


@pytest.mark.parametrize(("data", "field"), [
    ({"channel": "email", "address": "not-an-address", "kinds": [KILL]}, "must be an e-mail address"),
    ({"channel": "email", "address": "a@example.org"}, "This field is required"),
    ({"channel": "pigeon", "address": "a@example.org", "kinds": [KILL]}, "Select a valid choice"),
])
def test_subscribe__bad_input__422_and_nothing_saved(envs: Any, data: dict[str, Any], field: str) -> None:
    from notifications.models import Subscription

    response = signed_in("viewer").post("/notifications/new/", data, **HTMX)
    assert response.status_code == 422
    assert field in text(response)
    assert not Subscription.objects.exists()


def test_unsubscribe__someone_else_s__404_and_kept(envs: Any, actor: Any) -> None:
    from notifications.models import Subscription

    sub = subscribe(person("ann", "admin", actor), "email", "ann@example.org", [KILL])
    response = signed_in("viewer").post(f"/notifications/{sub.pk}/delete/", **HTMX)
    assert response.status_code == 404
    assert Subscription.objects.filter(pk=sub.pk).exists()


def test_delivery_log__admins_only(envs: Any) -> None:
    for role, status in (("viewer", 403), ("editor", 403), ("approver", 403), ("compliance", 403), ("admin", 200)):
        assert signed_in(role).get("/notifications/deliveries/").status_code == status
