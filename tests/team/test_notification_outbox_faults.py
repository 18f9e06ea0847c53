"""A notification survives a broker outage (the outbox): the test runs its OWN redis-server, a real web
process and a real Celery worker (with its beat) bound to it, a local SMTP server and a local webhook
receiver. Redis is stopped, the kill switch is pulled (2xx, audited, its notification waits in the outbox),
Redis comes back, and beat's outbox drain hands the event to the worker, which delivers the e-mail and the
webhook. Deadlines are bounded waits, never elapsed-time asserts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit.models import AuditEvent, NotificationOutbox
from common.actors import Actor
from notifications.models import Delivery
from notifications.services import subscription_create
from rollout.access.keys import api_token_create
from rollout.access.users import user_create
from rollout.services.flags import flag_state_update
from tests.conftest import ROOT, ServerProcess, subprocess_env
from tests.integration.test_redis_faults import RedisServer, _call, _wait_for
from tests.rollouts.test_webhooks import Receiver
from tests.team.conftest import Mailbox

pytestmark = pytest.mark.services

ACTOR = Actor.system("test")
DELIVERY_DEADLINE = 60.0  # after Redis returns: beat's drain, the worker's reconnect, both deliveries


def worker_process(redis_url: str, var_dir: Path, **env: str) -> subprocess.Popen[bytes]:
    """A real Celery worker with its beat (``-B``), on the given Redis — not REDIS_URL's — and the test
    database; what ``celery_worker_process`` is, bound to a broker of the test's own."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-B", "--pool=solo", "--concurrency=1",
         "--loglevel=WARNING", "--without-heartbeat", "--without-gossip", "--without-mingle",
         "-n", f"outbox-{os.getpid()}@%h", "--schedule", str(var_dir / "beat-schedule")],
        cwd=ROOT, env=subprocess_env(REDIS_URL=redis_url, TURNOUT_VAR_DIR=str(var_dir), **env),
    )


@pytest.fixture
def fault_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.resume()  # never leave a stopped process behind
    server.kill()


def test_notification__redis_down_when_the_kill_commits__delivered_by_a_real_worker_once_it_returns(
        transactional_db: Any, flag: Any, fault_redis: RedisServer, smtp_server: Mailbox, receiver: Receiver,
        tmp_path: Path) -> None:
    flag_state_update(actor=ACTOR, flag="invoice-engine", environment="staging", version=None, enabled=True,
                      percentage_value=100)
    root = user_create(actor=ACTOR, username="root", password=None, roles=["admin"])
    token = api_token_create(actor=ACTOR, username="root", name="ops")[1]
    ann = user_create(actor=ACTOR, username="ann", password=None, roles=["viewer"])
    subscription_create(actor=Actor.for_user(ann), channel="email", address="ann@example.org",
                        kinds=["kill_switch.pulled"])
    subscription_create(actor=Actor.for_user(root), channel="webhook", address=receiver.url,
                        kinds=["kill_switch.pulled"])
    server = ServerProcess(REDIS_URL=fault_redis.url).start()
    worker = worker_process(fault_redis.url, tmp_path, EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(smtp_server.port),
                            TURNOUT_OUTBOX_DRAIN_INTERVAL="0.5", TURNOUT_WEBHOOK_SECRET="s3cret")
    try:
        fault_redis.kill()
        status, _, body = _call(server.url, "/api/v1/flags/invoice-engine/states/staging/kill/", method="POST",
                                token=token, body={"reason": "Redis is down and errors are spiking"})
        assert status == 200, body
        kill = AuditEvent.objects.get(action="flag_state.killed")
        assert list(NotificationOutbox.objects.values_list("sequence", flat=True)) == [kill.sequence]
        assert not Delivery.objects.exists()  # nobody was told yet: the broker never had it

        fault_redis.start()  # the same port, empty
        assert smtp_server.wait(1, DELIVERY_DEADLINE), "the e-mail never arrived"
        assert _wait_for(lambda: receiver.requests, DELIVERY_DEADLINE), "the webhook never arrived"
        assert worker.poll() is None
    finally:
        server.stop()
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    [message] = smtp_server.messages
    assert (message["To"], message["Subject"]) == ("ann@example.org",
                                                   "[Turnout] Kill switch pulled: invoice-engine@staging")
    assert "Redis is down and errors are spiking" in message.get_payload()
    [(headers, raw)] = receiver.requests
    payload = json.loads(raw)
    assert (headers["X-Turnout-Event"], payload["audit_sequence"], payload["actor"]) == (
        "kill_switch.pulled", kill.sequence, kill.actor)
    assert kill.actor.startswith("root via ")
    assert not NotificationOutbox.objects.exists()
    assert sorted(Delivery.objects.values_list("channel", "status")) == [("email", "sent"), ("webhook", "sent")]
