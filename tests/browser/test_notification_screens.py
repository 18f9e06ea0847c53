"""A notification as people receive it, in Chromium: the e-mail the local SMTP server (aiosmtpd) received and
the signed webhook the local receiver got, each rendered as a page, and the admins' delivery log showing both
delivered. The screenshots are the docs' (docs/screenshots/notification-*.png)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default
from html import escape
from typing import Any

import pytest

from common.actors import Actor
from tests.browser.conftest import Site, screenshot
from tests.conftest import free_port
from tests.rollouts.test_webhooks import Receiver
from tests.team.conftest import Mailbox

KILL = "kill_switch.pulled"


def _page(title: str, rows: list[tuple[str, str]], body: str) -> str:
    head = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>"
            "body{font:15px/1.5 system-ui,sans-serif;margin:2rem;color:#1d2430;background:#f4f6f9}"
            ".card{background:#fff;border:1px solid #d5dbe3;border-radius:8px;padding:1.2rem 1.5rem;max-width:60rem}"
            "h1{font-size:1.1rem;margin:0 0 .8rem}th{text-align:left;padding-right:1.2rem;color:#5b6675;"
            "font-weight:500;vertical-align:top}pre{white-space:pre-wrap;background:#f8f9fb;padding:1rem;"
            "border-radius:6px;border:1px solid #e3e7ed}</style></head><body><div class='card'>"
            f"<h1>{escape(title)}</h1><table>{head}</table><pre>{escape(body)}</pre></div></body></html>")


def test_notification__kill_in_production__email_and_webhook_received__delivery_log_shows_both_sent(
        site: Site, people: dict[str, Any], inbox: Mailbox, hooks: Receiver, settings: Any) -> None:
    from notifications.models import Delivery
    from notifications.services import subscription_create
    from rollout.services.flags import flag_create, flag_state_kill, flag_state_update
    from rollout.services.workloads import workload_create

    settings.TURNOUT_WEBHOOK_SECRET = "docs-secret"
    seed = Actor.system("test")
    workload_create(actor=seed, key="billing", name="Billing")
    flag_create(actor=seed, key="invoice-engine", workload="billing")
    flag_state_update(actor=seed, flag="invoice-engine", environment="production", version=None, enabled=True,
                      percentage_value=25)
    ada = Actor.for_user(people["ada"])
    subscription_create(actor=ada, channel="email", address="ada@example.org", kinds=[KILL])
    subscription_create(actor=ada, channel="webhook", address=hooks.url, kinds=[KILL])
    flag_state_kill(actor=Actor.for_user(people["eddie"]), flag="invoice-engine", environment="production",
                    reason="5xx spike after the 14:02 deploy")  # committed: its notification goes out at once

    assert sorted(Delivery.objects.values_list("channel", "status")) == [("email", "sent"), ("webhook", "sent")]
    [raw] = inbox.raw
    message = message_from_bytes(raw, policy=default)
    page = site.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.set_content(_page("E-mail received by the SMTP server", [
        (name, str(message[name])) for name in ("From", "To", "Subject", "Date")],
        message.get_content()))  # type: ignore[attr-defined]
    assert page.get_by_text("eddie pulled the kill switch of invoice-engine@production").is_visible()
    screenshot(page, "notification-email")

    [(headers, body)] = hooks.requests
    page.set_content(_page("Webhook received (POST)", [
        (name, headers[name]) for name in ("Content-Type", "X-Turnout-Event", "X-Turnout-Delivery",
                                           "X-Turnout-Signature")], json.dumps(json.loads(body), indent=2)))
    assert page.get_by_text('"event": "kill_switch.pulled"').is_visible()
    screenshot(page, "notification-webhook")

    log = site.session_for("ada")
    log.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    log.goto(f"{site.url}/notifications/deliveries/")
    rows = log.locator("#delivery-table tbody tr")
    assert rows.count() == 2
    assert log.locator("#delivery-table .badge.ok").all_inner_texts() == ["Sent", "Sent"]
    assert "Signed webhook (JSON)" in rows.all_inner_texts()[0] + rows.all_inner_texts()[1]
    screenshot(log, "notification-deliveries")
    assert errors == []


@pytest.fixture
def inbox(settings: Any) -> Iterator[Mailbox]:
    """The team tests' SMTP server, with this process's mail (the live server's thread too) pointed at it."""
    from aiosmtpd.controller import Controller

    box = Mailbox()
    box.port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", box.port
    yield box
    controller.stop()


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()
