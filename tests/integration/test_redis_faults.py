"""Redis stopped, hung and restarted under a live Turnout server and a running SDK (issue 13).

Each test starts its OWN redis-server on a free port and a real web process (uvicorn) pointed at it,
then stops it (SIGKILL), hangs it (SIGSTOP) and brings it back (a new redis-server on the same port,
or SIGCONT). What must hold:

- the kill switch answers 2xx within the request's 5 s deadline, is audited, and its announcement
  waits in the outbox;
- every other call during the outage answers within its deadline with JSON — 2xx, or 503 naming
  ``redis_unavailable`` — never an HTML 500 (UI pages: a page, never a 500);
- once Redis is back the outbox drains and the running SDK decides ``legacy`` within 15 s.

Deadlines are the waits themselves (a request's timeout, a bounded wait), never elapsed-time asserts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from turnout import Turnout

from audit.models import AuditEvent
from common.actors import Actor
from rollout.access.keys import api_token_create, sdk_key_create
from rollout.access.users import user_create
from rollout.models import Environment, OutboxMessage
from rollout.services.flags import flag_state_update
from tests.conftest import ServerProcess, free_port

pytestmark = [pytest.mark.services, pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")]

ACTOR = Actor.system("test")
STATE = "/api/v1/flags/invoice-engine/states/staging/"
REQUEST_DEADLINE = 5.0  # each call during an outage must answer within this
RECOVERY_DEADLINE = 15.0  # after Redis returns: outbox drained, SDK on legacy


class RedisServer:
    """A redis-server of the test's own, on a free loopback port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        import redis

        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            assert _wait_for(lambda: _pings(client), 10.0), "redis-server did not start"
        finally:
            client.close()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def hang(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


def _pings(client: Any) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _wait_for(predicate: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def _call(url: str, path: str, *, method: str = "GET", token: str | None = None, body: Any = None,
          accept: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if accept:
        headers["Accept"] = accept
    request = urllib.request.Request(url + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_DEADLINE) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


@pytest.fixture
def fault_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.resume()  # never leave a stopped process behind
        server.kill()


@pytest.fixture
def world(transactional_db: Any, flag: Any) -> dict[str, str]:
    """The flag on at 100% in staging, an SDK key and an admin's API token."""
    flag_state_update(actor=ACTOR, flag=flag.key, environment="staging", version=1, enabled=True,
                      percentage_value=100)
    user_create(actor=ACTOR, username="root", password=None, roles=["admin"])
    return {"sdk": sdk_key_create(actor=ACTOR, environment="staging", name="svc")[1],
            "token": api_token_create(actor=ACTOR, username="root", name="ops")[1]}


@pytest.fixture
def server(fault_redis: RedisServer, world: dict[str, str]) -> Iterator[ServerProcess]:
    process = ServerProcess(REDIS_URL=fault_redis.url).start()
    yield process
    process.stop()


@pytest.fixture
def sdk(server: ServerProcess, world: dict[str, str]) -> Iterator[Turnout]:
    # Streaming (the default), polling every 2 s as its fallback, metrics flushed every second.
    with Turnout(server.url, world["sdk"], poll_interval=2.0, flush_interval=1.0, timeout=2.0,
                 backoff_max=2.0) as client:
        assert client.wait_until_ready(10)
        assert client.decide("invoice-engine", "u1", {"tenant_id": "t1"}).path == "parallel"
        yield client


def _kill_during_outage(server: ServerProcess, token: str) -> int:
    """Pull the kill switch; it must answer 2xx within the deadline and be audited. The version."""
    status, _, body = _call(server.url, STATE + "kill/", method="POST", token=token,
                            body={"reason": "Redis is down and errors are spiking"})
    assert 200 <= status < 300, body
    assert json.loads(body)["enabled"] is False
    event = AuditEvent.objects.get(action="flag_state.killed")
    assert event.reason == "Redis is down and errors are spiking"
    version = Environment.objects.get(key="staging").ruleset_version
    assert OutboxMessage.objects.filter(environment="staging", version=version).exists()
    return version


def _other_calls_answer_json(server: ServerProcess, world: dict[str, str]) -> None:
    """Every other kind of call answers within the deadline: JSON 2xx, or 503 redis_unavailable."""
    token, sdk_key = world["token"], world["sdk"]
    api_calls: list[tuple[str, str, str, Any]] = [
        ("GET", STATE, token, None),
        ("GET", STATE + "guardrails/", token, None),
        ("GET", "/api/v1/flags/", token, None),
        ("GET", "/api/v1/audit/events/", token, None),
        ("POST", STATE + "resume/", token, {"reason": "checking"}),
        ("POST", STATE + "kill/", token, {"reason": "again"}),
        ("GET", "/api/v1/sdk/ruleset", sdk_key, None),
        ("POST", "/api/v1/sdk/evaluate", sdk_key, {"flag": "invoice-engine", "context": {"key": "u1"}}),
        ("POST", "/ofrep/v1/evaluate/flags/invoice-engine", sdk_key, {"context": {"targetingKey": "u1"}}),
    ]
    for method, path, credential, body in api_calls:
        status, headers, content = _call(server.url, path, method=method, token=credential, body=body)
        assert status != 500 and headers.get("content-type", "").startswith("application/json"), \
            (method, path, status, content[:200])
        if status == 503:
            assert json.loads(content)["error"]["code"] == "redis_unavailable", (path, content)
    status, _, content = _call(server.url, "/readyz")
    assert status == 200 and json.loads(content)["checks"]["redis"].startswith("error: ")
    status, _, content = _call(server.url, "/login/")
    assert status == 200 and b"Sign in" in content
    status, _, content = _call(server.url, "/login/", method="POST", body={})
    assert status in (403, 503) and status != 500  # CSRF refuses it first, or Redis is named


def _recovers(sdk: Turnout) -> None:
    """Once Redis is back: the outbox drains and the SDK decides legacy within the deadline."""
    assert _wait_for(lambda: not OutboxMessage.objects.exists(), RECOVERY_DEADLINE), "the outbox did not drain"
    assert _wait_for(lambda: sdk.decide("invoice-engine", "u1", {"tenant_id": "t1"}).path == "legacy",
                     RECOVERY_DEADLINE), "the SDK never decided legacy"


def test_kill_switch__redis_stopped__2xx_audited_then_announced_when_redis_returns(
        fault_redis: RedisServer, server: ServerProcess, sdk: Turnout, world: dict[str, str]) -> None:
    fault_redis.kill()
    _kill_during_outage(server, world["token"])
    _other_calls_answer_json(server, world)
    fault_redis.start()  # the same port, empty: what was cached is gone
    _recovers(sdk)


def test_kill_switch__redis_hung__2xx_audited_then_announced_when_redis_resumes(
        fault_redis: RedisServer, server: ServerProcess, sdk: Turnout, world: dict[str, str]) -> None:
    fault_redis.hang()
    try:
        _kill_during_outage(server, world["token"])
        _other_calls_answer_json(server, world)
    finally:
        fault_redis.resume()
    _recovers(sdk)


def test_redis_fault_helpers__own_server__not_the_shared_one(fault_redis: RedisServer) -> None:
    """The faults above are injected into a redis-server of the test's own, never REDIS_URL's."""
    assert fault_redis.url != os.environ.get("REDIS_URL")
    assert fault_redis.proc is not None and fault_redis.proc.poll() is None
