"""Shared fixtures for the server suite.

Tests that need PostgreSQL, Redis or a Celery worker use the fixtures below: they skip when the
service is not configured, and FAIL instead when TURNOUT_REQUIRE_SERVICES=1 (as in CI).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("TURNOUT_REQUIRE_SERVICES", "").lower() in {"1", "true", "yes"}


def service_missing(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable (TURNOUT_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    forget_process_state()
    yield


def forget_process_state() -> None:
    """What one test (or one rolled-back subtest) leaves in Redis and in this process's memory."""
    from django.core.cache import cache

    from common.redis import breaker
    from rollout import context_processors
    from rollout.access import auth
    from rollout.delivery.evaluation import clear_compiled
    from rollout.delivery.local import clear_local
    from rollout.delivery.patches import patches
    from rollout.delivery.serving import clear_served

    breaker.reset()  # a fault test's outage is not the next test's
    context_processors.forget()
    cache.clear()
    # Test databases roll back, so ruleset versions and row ids repeat from test to test (never in
    # production): forget what this process remembered about them.
    clear_compiled()
    clear_served()
    patches.clear()
    clear_local()
    auth._local_keys.clear()
    auth._touched.clear()


@pytest.fixture
def actor():  # type: ignore[no-untyped-def]
    from common.actors import Actor

    return Actor.system("test")


@pytest.fixture
def postgres(db: Any) -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        service_missing("needs PostgreSQL (set DATABASE_URL=postgres://...)")
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER ALL")


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        service_missing("needs Redis (set REDIS_URL)")
    import redis

    try:
        redis.Redis.from_url(url).ping()
    except redis.RedisError as exc:
        service_missing(f"Redis at REDIS_URL does not answer: {exc}")
    return url  # type: ignore[return-value]


def database_url() -> str:
    """A URL for the test database, for server and worker subprocesses."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url()
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout}s")


class ServerProcess:
    """A real Turnout web process (uvicorn, ASGI) on the test database."""

    def __init__(self, port: int | None = None, **env: str) -> None:
        self.port = port or free_port()
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning",
             # SSE streams never end by themselves: do not wait the full terminate timeout for them.
             "--timeout-graceful-shutdown", "1"],
            cwd=ROOT, env=subprocess_env(**self.env),
        )
        wait_for_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def server_process(transactional_db: Any) -> Iterator[ServerProcess]:
    """Start with ``server_process.start()`` once the test's data is committed."""
    server = ServerProcess()
    yield server
    server.stop()


@pytest.fixture
def celery_worker_process(transactional_db: Any, redis_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process on Redis and the test database."""
    from config.celery import app

    app.conf.task_always_eager = False
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "--concurrency=1",
         "--loglevel=WARNING", "--without-heartbeat", "--without-gossip", "--without-mingle",
         "-n", f"test-{os.getpid()}@%h"],
        cwd=ROOT, env=subprocess_env(),
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"celery worker exited with {proc.returncode}")
            if app.control.ping(timeout=0.5):
                break
        else:
            pytest.fail("celery worker did not answer a ping within 30 s")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(autouse=True)
def _eager_celery() -> Iterator[None]:
    """Tasks run inline in unit tests; ``celery_worker_process`` switches this off."""
    from celery._state import _set_task_join_will_block

    from config.celery import app

    # Celery guards "never wait on a result inside a task" with one flag per process, which an eager task
    # sets while it runs and puts back after. Two eager tasks at once in two threads of this process (a test
    # posting from several threads, a live server's thread) can put it back in the wrong order and leave it
    # set for good: every later test's result.get() would then refuse. Each test starts outside any task.
    _set_task_join_will_block(False)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def audit_events():  # type: ignore[no-untyped-def]
    """Returns a function giving the events written since the fixture was created."""
    from audit.models import AuditEvent

    start = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0

    def new() -> list[Any]:
        return list(AuditEvent.objects.filter(sequence__gt=start).order_by("sequence"))

    return new


@pytest.fixture
def demo(db: Any) -> None:
    from rollout.demo import seed_demo

    seed_demo()


@pytest.fixture
def envs(db: Any, actor: Any) -> dict[str, Any]:
    from rollout.services.environments import environment_create

    return {
        "staging": environment_create(actor=actor, key="staging", name="Staging", order=0),
        "production": environment_create(actor=actor, key="production", name="Production", order=1,
                                          requires_approval=True),
    }


@pytest.fixture
def flag(envs: dict[str, Any], actor: Any):  # type: ignore[no-untyped-def]
    from rollout.services.flags import flag_create
    from rollout.services.workloads import workload_create

    workload_create(actor=actor, key="billing", name="Billing", risk="medium")
    return flag_create(actor=actor, key="invoice-engine", workload="billing", bucket_by="tenant_id")


@pytest.fixture(autouse=True)
def _allow_flush_of_audit_table(request: pytest.FixtureRequest) -> Iterator[None]:
    """Transactional tests end with a TRUNCATE of every table, which the audit table's trigger
    refuses on PostgreSQL; let that one cleanup through (tests of the trigger re-enable it)."""
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or bool(marker and marker.kwargs.get("transaction"))
    if not transactional:
        yield
        return
    request.getfixturevalue("transactional_db")
    yield
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_no_truncate")
