"""The SDK against a real Turnout server process when things go wrong (issue #4).

One test per fault: the server down at start (with and without a bootstrap), killed mid-run, hung,
answering 500, sending malformed or truncated JSON, and a revoked key. Each checks what the SDK
promises (sdk/README.md, "When things go wrong"):

- nothing reaches the host: ``decide()`` and ``run()`` return normally (nothing here is wrapped in
  a ``try``, and an exception escaping any thread fails the test);
- decisions stay on the last good ruleset (before any ruleset: ``legacy``, ``ERROR``,
  ``PROVIDER_NOT_READY``);
- one warning per problem for the whole episode, however many attempts fail (the attempts are
  counted through ``on_error``, which hears of every one);
- recovery: once the server answers again, a change made through the services reaches the client.

Hung and misbehaving servers are made with ``FaultProxy`` in front of the real server. A change
committed here reaches the server process's streams through Redis pub/sub when Redis is configured,
and otherwise through the stream listener's reads of the versions from the database
(rollout/delivery/broadcast.py), so every case runs with and without Redis except the revoked key (a key
revoked in another process is forgotten by the server's per-process cache only through Redis).
"""

from __future__ import annotations

import logging
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from turnout import Decision, ErrorCode, Path, Reason, Turnout, TurnoutError
from turnout.wire import RULESET_PATH, STREAM_PATH

from common.actors import Actor
from rollout.access.keys import sdk_key_create, sdk_key_revoke
from rollout.models import Environment
from rollout.services.flags import flag_state_update
from tests.conftest import ServerProcess
from tests.integration.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

ACTOR = Actor.system("test")
ENVIRONMENT = "staging"
HEARTBEAT = "0.3"  # the server's stream heartbeat, seconds: well inside the client's read timeout

#: short timings (the defaults are 30 s polls, 5 s timeouts, 1 s..60 s backoff)
FAST: dict[str, Any] = {
    "poll_interval": 0.2,
    "timeout": 0.5,
    "stream_read_timeout": 1.5,
    "backoff_base": 0.05,
    "backoff_max": 0.2,
    "send_metrics": False,  # metrics failures are not what these tests are about
}

#: for clients that see the server start under them: its first answers can be slow on a busy machine,
#: and while nothing listens a connection is refused at once whatever the timeout
PATIENT = 5.0

MODES = ["poll", pytest.param("stream", marks=pytest.mark.services)]


# -- helpers ----------------------------------------------------------------------------------------


def _wait_for(predicate: Callable[[], object], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def _set(flag: Any, percentage: float) -> int:
    """Move the flag in staging (a new ruleset version), and return that version."""
    flag_state_update(actor=ACTOR, flag=flag.key, environment=ENVIRONMENT, version=None, enabled=True,
                      percentage_value=percentage)
    return Environment.objects.get(key=ENVIRONMENT).ruleset_version


def _decide(client: Turnout, flag: Any) -> Decision:
    return client.decide(flag.key, "u1", {"tenant_id": "t1"})


def _steady(client: Turnout, flag: Any, expected: Decision, calls: int = 200) -> None:
    """Many calls, all answered at once with ``expected`` (and ``run()`` taking its path)."""
    for _ in range(calls):
        assert _decide(client, flag) == expected
        served = client.run(flag.key, "u1", {"tenant_id": "t1"}, legacy=lambda: "legacy",
                            parallel=lambda: "parallel")
        assert served == expected.path.value


def _reaches(client: Turnout, flag: Any, version: int) -> bool:
    """Wait until the client decides with ruleset ``version``; fail saying where it is instead."""
    if _wait_for(lambda: _decide(client, flag).version == version):
        return True
    pytest.fail(f"the client did not reach version {version}: it decides {_decide(client, flag)}")


def _fetch_ruleset(url: str, secret: str) -> bytes:
    request = urllib.request.Request(url + RULESET_PATH, headers={"Authorization": f"Bearer {secret}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def _start(server: ServerProcess, secret: str) -> bytes:
    """Start the server and fetch its ruleset once, so that a client with a short ``timeout`` does not
    meet a process still warming up (its first request loads the URLs and builds the ruleset)."""
    server.start()
    return _fetch_ruleset(server.url, secret)


class Problems:
    """What the client reported: every ``on_error`` call, and the ``turnout`` logger's records."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.errors: list[TurnoutError] = []
        self._caplog = caplog

    def on_error(self, err: TurnoutError) -> None:
        self.errors.append(err)

    def reported(self, problem: str) -> int:
        return sum(1 for e in list(self.errors) if e.problem == problem)

    def _records(self) -> list[logging.LogRecord]:
        return [r for r in list(self._caplog.records) if r.name == "turnout"]

    def warnings(self) -> Counter[str]:
        return Counter(getattr(r, "turnout_problem", r.getMessage())
                       for r in self._records() if r.levelno >= logging.WARNING)

    def resolved(self) -> set[str]:
        return {getattr(r, "turnout_problem", "") for r in self._records()
                if getattr(r, "turnout_event", None) == "resolved"}


@pytest.fixture
def problems(caplog: pytest.LogCaptureFixture) -> Problems:
    caplog.set_level(logging.INFO, logger="turnout")
    return Problems(caplog)


@pytest.fixture
def server(server_process: ServerProcess) -> ServerProcess:
    server_process.env["TURNOUT_STREAM_HEARTBEAT_SECONDS"] = HEARTBEAT
    return server_process


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[FaultProxy]:
    with FaultProxy(server.port) as p:
        yield p


@pytest.fixture
def sdk_key(flag: Any) -> tuple[Any, str]:
    return sdk_key_create(actor=ACTOR, environment=ENVIRONMENT, name="sdk")


def _client(url: str, secret: str, problems: Problems, *, mode: str = "poll", **options: Any) -> Turnout:
    return Turnout(url, secret, stream=mode == "stream", on_error=problems.on_error, **{**FAST, **options})


def _ready(client: Turnout, proxy: FaultProxy | None = None, *, mode: str = "poll") -> None:
    assert client.wait_until_ready(15)
    if proxy is not None and mode == "stream":
        assert _wait_for(lambda: proxy.requests[STREAM_PATH] >= 1)


# -- the server is not there when the client starts ------------------------------------------------


def test_server_down_at_start__legacy_not_ready_until_the_server_comes_up(server, flag, sdk_key, problems):
    version = _set(flag, 100)
    with _client(server.url, sdk_key[1], problems, timeout=PATIENT) as client:  # nothing listens there yet
        assert _wait_for(lambda: problems.reported("fetch:network") >= 3)
        not_ready = _decide(client, flag)
        assert (not_ready.path, not_ready.reason, not_ready.error_code, not_ready.version) == (
            Path.LEGACY, Reason.ERROR, ErrorCode.PROVIDER_NOT_READY, None)
        _steady(client, flag, not_ready)
        assert not client.ready
        assert problems.warnings() == {"fetch:network": 1, "decision:not-ready": 1}

        server.start()
        assert client.wait_until_ready(15)
        now = _decide(client, flag)
        assert (now.path, now.version, now.error_code) == (Path.PARALLEL, version, None)
        assert "fetch:network" in problems.resolved()

        newer = _set(flag, 0)
        assert _reaches(client, flag, newer)
        assert _decide(client, flag).path is Path.LEGACY
    assert problems.warnings() == {"fetch:network": 1, "decision:not-ready": 1}


def test_server_down_at_start_with_bootstrap__decides_from_it_then_moves_to_the_newer_version(
        server, flag, sdk_key, problems, tmp_path):
    bootstrapped = _set(flag, 100)
    bootstrap = tmp_path / "ruleset.json"
    bootstrap.write_bytes(_start(server, sdk_key[1]))
    server.stop()
    newer = _set(flag, 0)  # made while the server is down: the bootstrap is now behind

    with _client(server.url, sdk_key[1], problems, bootstrap=bootstrap, timeout=PATIENT) as client:
        assert client.ready  # at once: no waiting for a server
        good = _decide(client, flag)
        assert (good.path, good.version, good.error_code) == (Path.PARALLEL, bootstrapped, None)
        assert _wait_for(lambda: problems.reported("fetch:network") >= 3)
        _steady(client, flag, good)
        assert problems.warnings() == {"fetch:network": 1}

        server.start()  # same port
        assert _reaches(client, flag, newer)
        assert _decide(client, flag).path is Path.LEGACY
        assert "fetch:network" in problems.resolved()

        newest = _set(flag, 100)
        assert _reaches(client, flag, newest)
    assert problems.warnings() == {"fetch:network": 1}


# -- the server goes away while the client runs ----------------------------------------------------


@pytest.mark.parametrize("mode", ["poll", "stream"])
def test_server_killed_mid_run__last_good_ruleset_then_the_change_made_meanwhile(server, flag, sdk_key, problems,
                                                                                 mode):
    _set(flag, 100)
    _start(server, sdk_key[1])
    with _client(server.url, sdk_key[1], problems, mode=mode, timeout=PATIENT) as client:
        _ready(client)
        good = _decide(client, flag)
        server.kill()  # SIGKILL: no goodbye, the stream (in stream mode) is cut
        newer = _set(flag, 0)

        assert _wait_for(lambda: problems.reported("fetch:network") >= 3)
        _steady(client, flag, good)
        warnings = problems.warnings()
        assert warnings["fetch:network"] == 1
        assert set(warnings.values()) == {1}, warnings  # a cut stream is one more problem, once
        assert set(warnings) <= {"fetch:network", "stream:network"}

        server.start()  # same port; the change was committed while nothing served it
        assert _reaches(client, flag, newer)
        assert "fetch:network" in problems.resolved()
    assert set(problems.warnings().values()) == {1}


# -- a server that hangs ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["poll", "stream"])
def test_server_hangs__every_request_bounded_decisions_unaffected_then_recovers(server, proxy, flag, sdk_key,
                                                                                problems, mode):
    _set(flag, 100)
    _start(server, sdk_key[1])
    with _client(proxy.url, sdk_key[1], problems, mode=mode) as client:
        _ready(client, proxy, mode=mode)
        good = _decide(client, flag)
        proxy.hold()  # connections stay open, nothing is answered; the stream goes silent
        newer = _set(flag, 0)

        # Each held request is given up after ``timeout`` and tried again: the sync thread is never stuck.
        assert _wait_for(lambda: problems.reported("fetch:timeout") >= 3)
        assert proxy.held >= 1 or proxy.abandoned >= 3
        _steady(client, flag, good)
        expected = {"fetch:timeout": 1} | ({"stream:timeout": 1} if mode == "stream" else {})
        assert problems.warnings() == expected

        proxy.release()
        assert _reaches(client, flag, newer)
        assert _wait_for(lambda: set(expected) <= problems.resolved())
    assert problems.warnings() == expected


def test_server_hangs__decide_does_not_wait_for_the_request_in_flight(server, proxy, flag, sdk_key, problems):
    _set(flag, 100)
    _start(server, sdk_key[1])
    # A timeout far longer than the test: while the proxy holds its poll, the sync thread is blocked in it.
    client = _client(proxy.url, sdk_key[1], problems, timeout=60.0)
    with client:
        _ready(client)
        good = _decide(client, flag)
        proxy.hold()
        assert _wait_for(lambda: proxy.held >= 1)
        _steady(client, flag, good)
        assert proxy.held >= 1 and proxy.abandoned == 0  # the sync thread is still waiting for its answer
    # close() does not wait out the 60 s: it hangs up the request in flight.
    assert _wait_for(lambda: proxy.abandoned >= 1, timeout=10)
    assert _decide(client, flag) == good  # decisions keep working after close()
    assert problems.warnings() == {}


# -- a server that answers, badly ------------------------------------------------------------------


def _bad_ruleset_responses(server: ServerProcess, proxy: FaultProxy, flag: Any, secret: str, problems: Problems,
                           *, fault: Fault, problem: str, mode: str) -> None:
    """The ruleset request answered with ``fault`` while everything else passes through."""
    _set(flag, 100)
    _start(server, secret)
    # The stream announces the change and the client fetches it: the stream's query is dropped, so
    # the server sends a ruleset event, never a patch (which would need no fetch at all).
    proxy.strip_queries = True
    with _client(proxy.url, secret, problems, mode=mode) as client:
        _ready(client, proxy, mode=mode)
        good = _decide(client, flag)
        proxy.tamper(RULESET_PATH, fault)
        # Poll: found at the next poll. Stream: announced, then fetched. The client's ETag stays the old
        # one, so every attempt gets the new version — damaged.
        newer = _set(flag, 0)

        assert _wait_for(lambda: proxy.tampered[RULESET_PATH] >= 3 and problems.reported(problem) >= 3)
        _steady(client, flag, good)
        assert problems.warnings() == {problem: 1}

        proxy.pass_through()
        # The damaged answers carried the new version's ETag: had the client kept it, the server would
        # now answer 304 and it would never get that version.
        assert _reaches(client, flag, newer)
        assert problem in problems.resolved()
        newest = _set(flag, 100)
        assert _reaches(client, flag, newest)
    assert problems.warnings() == {problem: 1}


@pytest.mark.parametrize("mode", MODES)
def test_server_answers_500__last_good_ruleset_then_recovers(server, proxy, flag, sdk_key, problems, mode):
    _bad_ruleset_responses(server, proxy, flag, sdk_key[1], problems, fault=Fault.ERROR_500,
                           problem="fetch:http-500", mode=mode)


def test_server_sends_malformed_json__last_good_ruleset_then_recovers(server, proxy, flag, sdk_key, problems):
    _bad_ruleset_responses(server, proxy, flag, sdk_key[1], problems, fault=Fault.MALFORMED,
                           problem="ruleset:invalid", mode="poll")


@pytest.mark.parametrize(("fault", "problem"), [
    # HTTP sees a complete response: only parsing the JSON can tell.
    (Fault.TRUNCATED, "ruleset:invalid"),
    # The connection ends before the declared length: the transport tells.
    (Fault.TRUNCATED_CLOSE, "fetch:truncated"),
])
def test_server_sends_truncated_json__last_good_ruleset_then_recovers(server, proxy, flag, sdk_key, problems,
                                                                      fault, problem):
    _bad_ruleset_responses(server, proxy, flag, sdk_key[1], problems, fault=fault, problem=problem, mode="poll")


# -- the key is revoked ----------------------------------------------------------------------------


def _most_requests(window: float, base: float, cap: float) -> int:
    """The most requests a client backing off as documented (``base·2ⁿ`` capped at ``cap``, times a
    random 0.5–1) can send in ``window`` seconds, counting from its first failure."""
    count, elapsed, failures = 1, 0.0, 1
    while True:
        elapsed += 0.5 * min(cap, base * 2 ** (failures - 1))
        if elapsed > window:
            return count + 1  # and one already on its way when the window opened
        count += 1
        failures += 1


@pytest.mark.services
def test_key_revoked__last_good_ruleset_one_warning_backs_off_reports_unauthorized(server, proxy, redis_url, flag,
                                                                                  sdk_key, problems):
    # Redis: the revocation, committed here, must reach the server process's key cache.
    _set(flag, 100)
    _start(server, sdk_key[1])
    base, cap, window = 0.2, 1.0, 3.0
    with _client(proxy.url, sdk_key[1], problems, mode="stream", backoff_base=base, backoff_max=cap) as client:
        _ready(client, proxy, mode="stream")
        good = _decide(client, flag)
        sdk_key_revoke(actor=ACTOR, prefix=sdk_key[0].prefix, reason="test")
        # The server ends the key's stream at a heartbeat once its own short-lived copy of the key
        # lookup expires; the fetch that follows is refused.
        assert _wait_for(lambda: problems.reported("fetch:unauthorized") >= 1, timeout=30)
        assert proxy.statuses[(RULESET_PATH, 401)] >= 1
        newer = _set(flag, 0)  # the server has news, but not for this key

        before, streams = proxy.requests[RULESET_PATH], proxy.requests[STREAM_PATH]
        time.sleep(window)  # a measuring window, not a synchronisation
        during = proxy.requests[RULESET_PATH] - before
        assert 2 <= during <= _most_requests(window, base, cap), during
        assert proxy.requests[STREAM_PATH] == streams  # and no stream reconnections either

        _steady(client, flag, good)
        assert good.version != newer
        assert problems.warnings() == {"fetch:unauthorized": 1}
        unauthorized = [e for e in problems.errors if e.problem == "fetch:unauthorized"]
        assert len(unauthorized) >= during and {e.kind for e in unauthorized} == {"fetch"}
