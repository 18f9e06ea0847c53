from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from common import clock
from rollout.models import FlagState
from rollout.plans.guardrails import guardrail_check, guardrail_set
from rollout.plans.stages import rollout_advance
from rollout.services.webhooks import DeliveryFailed, deliver
from tests.rollouts.conftest import add_metrics


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                status = 500 if receiver.fail_first > 0 else 204
                receiver.fail_first -= 1
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_deliver__secret_set__signed_body_posted(receiver, settings):
    settings.TURNOUT_WEBHOOK_SECRET = "s3cret"
    body = json.dumps({"event": "guardrail.breached", "id": "d-1"})
    assert deliver(receiver.url, body) == 204
    [(headers, raw)] = receiver.requests
    assert raw == body.encode()
    expected = "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
    assert headers["X-Turnout-Signature"] == expected
    assert (headers["X-Turnout-Event"], headers["X-Turnout-Delivery"]) == ("guardrail.breached", "d-1")


def test_deliver__server_error__delivery_failed(receiver):
    receiver.fail_first = 1
    with pytest.raises(DeliveryFailed, match="500"):
        deliver(receiver.url, json.dumps({"event": "x"}))


@pytest.mark.django_db
def test_guardrail_breach__webhook_configured__retried_until_delivered_with_documented_payload(
        planned, actor, receiver, settings, django_capture_on_commit_callbacks, monkeypatch):
    from config.celery import app
    from rollout import tasks

    # Eager retries re-run inline and then raise Retry; keep that inside the task's result.
    monkeypatch.setattr(app.conf, "task_eager_propagates", False)
    settings.TURNOUT_WEBHOOK_URLS = [receiver.url]
    settings.TURNOUT_WEBHOOK_SECRET = "s3cret"
    # Eager Celery runs the retries inline; record their countdowns instead of waiting them out.
    countdowns: list[int] = []
    original_retry = tasks.deliver_webhook.retry

    def retry(*args: Any, **kwargs: Any) -> Any:
        countdowns.append(kwargs["countdown"])
        kwargs["countdown"] = 0
        return original_retry(*args, **kwargs)

    monkeypatch.setattr(tasks.deliver_webhook, "retry", retry)
    receiver.fail_first = 2
    t0 = datetime(2026, 11, 26, 10, 0, 30, tzinfo=UTC)
    with clock.frozen(t0):
        for _ in range(4):
            rollout_advance(actor=actor, flag=planned.key, environment="staging")
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_error_rate=5,
                  min_sample_size=10)
    add_metrics("staging", planned.key, t0 + timedelta(minutes=1), "parallel", calls=100, errors=50)
    state = FlagState.objects.get(flag=planned, environment__key="staging")
    with django_capture_on_commit_callbacks(execute=True):
        guardrail_check(flag_state_id=state.pk, now=t0 + timedelta(minutes=1, seconds=30))
    assert len(receiver.requests) == 3 and countdowns == [2, 4]
    body = json.loads(receiver.requests[-1][1])
    assert {k: body[k] for k in ("schema", "event", "flag", "environment", "workload", "actor", "action")} == {
        "schema": 1, "event": "guardrail.breached", "flag": "invoice-engine", "environment": "staging",
        "workload": "billing", "actor": "system:guardrail", "action": "rolled_back"}
    assert body["breaches"] == ["error rate 50.0% > 5.0%"] and body["figures"]["parallel"]["errors"] == 50
    assert body["stage"] == 3 and isinstance(body["audit_sequence"], int)
