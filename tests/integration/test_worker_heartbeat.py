"""The watchdog is watched (issue 13): Celery worker and beat heartbeats in the database, reported by
``/readyz`` of a live web process; a worker that loses its broker keeps running and works again when
the broker returns.

Heartbeats every second and "stale" after five here (the defaults are 10 s and 45 s). Deadlines are
the bounded waits themselves (the issue's 90 s for a killed worker to show), never elapsed-time asserts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from common.models import Heartbeat
from rollout.models import Environment
from tests.conftest import ROOT, ServerProcess, subprocess_env
from tests.integration.test_redis_faults import RedisServer, _call, _wait_for

pytestmark = pytest.mark.services

FAST_HEARTBEATS = {"TURNOUT_HEARTBEAT_SECONDS": "1", "TURNOUT_HEARTBEAT_STALE_SECONDS": "5"}
MISSING_DEADLINE = 90.0  # the bound for a killed worker to show in /readyz


def _worker(tmp_name: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "--concurrency=1",
         "--loglevel=WARNING", "--without-heartbeat", "--without-gossip", "--without-mingle",
         "-n", f"{tmp_name}-{os.getpid()}@%h"],
        cwd=ROOT, env=subprocess_env(**FAST_HEARTBEATS, **env),
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _background(server: ServerProcess) -> dict[str, str]:
    status, _, body = _call(server.url, "/readyz")
    assert status == 200, body
    return dict(json.loads(body)["background"])


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.resume()
        server.kill()


def test_readyz__celery_worker_killed_with_sigkill__reports_worker_missing(
        transactional_db: Any, own_redis: RedisServer) -> None:
    server = ServerProcess(REDIS_URL=own_redis.url, **FAST_HEARTBEATS).start()
    worker = _worker("hb", REDIS_URL=own_redis.url)
    try:
        assert _wait_for(lambda: _background(server)["worker"] == "ok", 60.0), "the worker never reported"
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        assert _wait_for(lambda: _background(server)["worker"].startswith("stale "), MISSING_DEADLINE), \
            "a killed worker was not reported"
        status, _, body = _call(server.url, "/readyz")
        assert (status, json.loads(body)["status"]) == (200, "degraded")
    finally:
        _stop(worker)
        server.stop()


def test_worker_and_beat__broker_stopped_then_restarted__keep_running_and_work_again(
        transactional_db: Any, envs: Any, own_redis: RedisServer, tmp_path: Any) -> None:
    worker = _worker("broker", REDIS_URL=own_redis.url)
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel=WARNING",
         "-s", str(tmp_path / "beat-schedule")],
        cwd=ROOT, env=subprocess_env(REDIS_URL=own_redis.url, **FAST_HEARTBEATS),
    )
    app = Celery("probe", broker=own_redis.url, backend=own_redis.url, set_as_current=False)
    try:
        def fresh(kind: str, after: Any) -> bool:
            return Heartbeat.objects.filter(kind=kind, seen_at__gt=after).exists()

        from django.utils import timezone

        start = timezone.now()
        assert _wait_for(lambda: all(fresh(k, start) for k in ("worker", "beat", "schedule")), 60.0), \
            "worker, beat and the schedule never all reported"

        own_redis.kill()
        down = timezone.now()
        # The processes live on through the outage (their heartbeats go to the database).
        assert _wait_for(lambda: fresh("worker", down) and fresh("beat", down), 30.0)
        assert worker.poll() is None and beat.poll() is None

        own_redis.start()
        back = timezone.now()
        # Beat's schedule reaches the worker again through the new broker, and a task sent now runs.
        assert _wait_for(lambda: fresh("schedule", back), 60.0), "the schedule did not resume"
        env = Environment.objects.get(key="staging")
        result = app.send_task("rollout.tasks.warm_ruleset", args=[env.pk])
        assert result.get(timeout=60) == env.ruleset_version
        assert worker.poll() is None and beat.poll() is None
    finally:
        app.close()
        _stop(beat)
        _stop(worker)
