"""End to end: simulator → SDK → web process → Redis → Celery beat + worker → guardrail rollback."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from common import clock
from common.actors import Actor
from rollout.models import FlagState
from tests.conftest import ROOT, subprocess_env

INTERVAL = "2"


@pytest.fixture
def celery_beat_process(celery_worker_process: Any, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Celery beat with a short guardrail interval, sending to the worker through Redis."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel=WARNING",
         "-s", str(tmp_path / "beat-schedule")],
        cwd=ROOT, env=subprocess_env(TURNOUT_GUARDRAIL_INTERVAL=INTERVAL),
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_for(condition: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    return None


@pytest.mark.services
def test_guardrail__simulated_parallel_errors__worker_rolls_back_and_audit_says_why(
        server_process, celery_beat_process, flag):
    from audit.models import AuditEvent
    from rollout.access.keys import sdk_key_create
    from rollout.plans.guardrails import guardrail_set
    from rollout.plans.stages import plan_set, plan_template, rollout_advance

    system = Actor.system("test")
    plan_set(actor=system, flag=flag.key, environment="staging", version=None,
             stages=plan_template("standard", soak_seconds=3600))
    with clock.frozen(clock.now() - timedelta(minutes=5)):  # the stage began before the traffic
        for _ in range(5):  # to "25%"
            rollout_advance(actor=system, flag=flag.key, environment="staging")
    guardrail_set(actor=system, flag=flag.key, environment="staging", version=None, max_error_rate=5,
                  min_sample_size=30, window_seconds=300, action="rollback")
    secret = sdk_key_create(actor=system, environment="staging", name="simulator")[1]
    server_process.start()

    call_command("simulate_traffic", url=server_process.url, sdk_key=secret, flag=flag.key, requests=600,
                 subjects=400, tenants=200, parallel_error_rate=0.5, seed=7, flush_interval=0.5)

    def rolled_back() -> FlagState | None:
        state = FlagState.objects.get(flag=flag, environment__key="staging")
        return state if state.stage == 4 else None

    # One check interval after the metrics land; the timeout only bounds a broken run.
    state = _wait_for(rolled_back, timeout=30)
    assert state is not None, "the guardrail did not roll the rollout back"
    assert (state.percentage, state.paused_at is not None) == (Decimal(5), True)
    event = AuditEvent.objects.filter(action="flag_state.rolled_back").get()
    assert (event.actor, event.actor_type) == ("system:guardrail", "system")
    assert event.reason.startswith("guardrail breach: error rate ")
    figures = event.after["guardrail"]["figures"]
    assert figures["parallel"]["calls"] >= 30 and figures["parallel"]["error_rate"] > 5
    assert event.after["from_stage"]["name"] == "25%" and event.after["to_stage"]["name"] == "5%"


@pytest.mark.services
def test_guardrail__breach_while_no_worker_ran__acted_on_when_a_worker_returns(
        transactional_db: Any, redis_url: str, flag: Any, request: pytest.FixtureRequest) -> None:
    """No worker runs: a breach is recorded and the metrics batch's check is queued in the broker;
    nothing acts. A worker starts: the queued check runs and rolls the rollout back."""
    from config.celery import app
    from rollout.plans.guardrails import guardrail_set
    from rollout.plans.stages import plan_set, plan_template, rollout_advance
    from rollout.tasks import enqueue_check
    from tests.rollouts.conftest import add_metrics

    system = Actor.system("test")
    plan_set(actor=system, flag=flag.key, environment="staging", version=None,
             stages=plan_template("standard", soak_seconds=3600))
    with clock.frozen(clock.now() - timedelta(minutes=5)):
        for _ in range(5):  # to "25%"
            rollout_advance(actor=system, flag=flag.key, environment="staging")
    guardrail_set(actor=system, flag=flag.key, environment="staging", version=None, max_error_rate=5,
                  min_sample_size=30, window_seconds=300, action="rollback")
    add_metrics("staging", flag.key, clock.now(), "parallel", calls=200, errors=100)
    state = FlagState.objects.get(flag=flag, environment__key="staging")

    app.conf.task_always_eager = False
    app.control.purge()  # only this test's check waits in the queue
    enqueue_check(state.pk)  # what the metrics endpoint does for a batch that breaches
    assert FlagState.objects.get(pk=state.pk).stage == 5  # no worker: nothing acted

    request.getfixturevalue("celery_worker_process")

    def rolled_back() -> FlagState | None:
        found = FlagState.objects.get(pk=state.pk)
        return found if found.stage == 4 else None

    found = _wait_for(rolled_back, timeout=60)  # bounds a broken run only; acted on the queued check
    assert found is not None, "the check queued while no worker ran was not acted on"
    assert (found.percentage, found.paused_at is not None) == (Decimal(5), True)
