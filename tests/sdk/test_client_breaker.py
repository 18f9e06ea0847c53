"""The local circuit breaker: opens on errors or latency, half-opens after a cool-down, closes."""

from __future__ import annotations

import time

import pytest
from fakeserver import make_doc, warnings_matching
from turnout import Breaker, ErrorCode, Reason, Turnout

DOC = make_doc(2, invoice={"percentage": 100.0}, other={"percentage": 100.0})
FAST_BREAKER = Breaker(min_calls=5, window=1.0, cooldown=0.2, probes=2)


def fail() -> str:
    raise RuntimeError("parallel down")


def trip(client: Turnout, n: int = 5) -> None:
    for i in range(n):
        assert client.run("invoice", f"u{i}", legacy=lambda: "old", parallel=fail) == "old"


def test_breaker__error_rate_over_budget__opens_and_sends_flag_to_legacy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Turnout.offline(DOC, breaker=FAST_BREAKER)
    trip(client)
    d = client.decide("invoice", "u1")
    assert (d.path, d.reason, d.error_code) == ("legacy", Reason.ERROR, ErrorCode.CIRCUIT_OPEN)
    assert d.version == 2 and not d.compare
    called: list[int] = []
    out = client.run("invoice", "u1", legacy=lambda: "old", parallel=lambda: called.append(1) or "new")  # type: ignore[func-returns-value]
    assert out == "old" and called == []
    assert client.decide("other", "u1").parallel  # other flags unaffected
    for _ in range(20):
        client.decide("invoice", "u1")
    assert len(warnings_matching(caplog, "circuit breaker opened for flag 'invoice'")) == 1
    batch = client._recorder.drain(sdk_version="t", code_version=None)
    assert batch is not None
    assert [e["state"] for e in batch["breaker_events"]] == ["open"]
    legacy_row = next(r for r in batch["flags"] if r["flag"] == "invoice" and r["path"] == "legacy")
    assert legacy_row["error_codes"]["CIRCUIT_OPEN"] == 22
    client.close()


def test_breaker__below_min_calls__stays_closed() -> None:
    client = Turnout.offline(DOC, breaker=FAST_BREAKER)
    trip(client, 4)
    assert client.decide("invoice", "u1").parallel
    client.close()


def test_breaker__cool_down_then_probes_succeed__closes(caplog: pytest.LogCaptureFixture) -> None:
    client = Turnout.offline(DOC, breaker=FAST_BREAKER)
    trip(client)
    assert client.decide("invoice", "u1").error_code is ErrorCode.CIRCUIT_OPEN
    time.sleep(0.25)
    # half-open: two probes go to parallel, the rest stay on legacy until they report
    first = client.decide("invoice", "u1")
    second = client.decide("invoice", "u2")
    third = client.decide("invoice", "u3")
    assert first.parallel and second.parallel
    assert third.error_code is ErrorCode.CIRCUIT_OPEN
    for _ in range(2):
        client._executed(("invoice", True, 2), 1_000_000, error=False)  # the probes report
    d = client.decide("invoice", "u1")
    assert d.parallel and d.reason is Reason.SPLIT
    batch = client._recorder.drain(sdk_version="t", code_version=None)
    assert batch is not None
    assert [e["state"] for e in batch["breaker_events"]] == ["open", "half_open", "closed"]
    trip(client)  # a new episode warns again
    assert len(warnings_matching(caplog, "circuit breaker opened")) == 2
    client.close()


def test_breaker__probe_fails__opens_again() -> None:
    client = Turnout.offline(DOC, breaker=FAST_BREAKER)
    trip(client)
    time.sleep(0.25)
    assert client.run("invoice", "u1", legacy=lambda: "old", parallel=fail) == "old"  # probe fails
    assert client.decide("invoice", "u2").error_code is ErrorCode.CIRCUIT_OPEN
    time.sleep(0.25)
    for i in range(2):
        assert client.run("invoice", f"p{i}", legacy=lambda: "old", parallel=lambda: "new") == "new"
    assert client.decide("invoice", "u3").parallel
    client.close()


def test_breaker__latency_over_budget__opens() -> None:
    client = Turnout.offline(DOC, breaker=Breaker(slow_ms=5, slow_rate=0.5, min_calls=3, window=1.0))

    def slow() -> str:
        time.sleep(0.01)
        return "new"

    for i in range(3):
        assert client.run("invoice", f"u{i}", legacy=lambda: "old", parallel=slow) == "new"
    assert client.decide("invoice", "u1").error_code is ErrorCode.CIRCUIT_OPEN
    client.close()


def test_breaker__errors_outside_window__forgotten() -> None:
    client = Turnout.offline(DOC, breaker=Breaker(min_calls=5, window=0.2, cooldown=1))
    trip(client, 3)
    time.sleep(0.25)
    trip(client, 3)
    assert client.decide("invoice", "u1").parallel
    client.close()


def test_breaker__disabled__never_opens() -> None:
    client = Turnout.offline(DOC, breaker=None)
    trip(client, 50)
    assert client.decide("invoice", "u1").parallel
    client.close()


def test_breaker__invalid_budget__rejected() -> None:
    with pytest.raises(ValueError):
        Breaker(error_rate=2.0)
    with pytest.raises(ValueError):
        Breaker(min_calls=0)


def test_flag_breaker__rolling_window__expires_old_slots() -> None:
    from turnout._breaker import BreakerState, FlagBreaker

    now = [1000.0]
    br = FlagBreaker(Breaker(min_calls=4, window=10.0, error_rate=0.5), clock=lambda: now[0])
    for _ in range(2):
        assert br.record(False, 1.0) is None  # 2 errors at t=1000
    now[0] += 5.0
    assert br.record(True, 1.0) is None  # 3 calls, below min_calls
    now[0] += 4.0
    assert br.record(False, 1.0) is BreakerState.OPEN  # 3 errors / 4 calls within 10 s
    br2 = FlagBreaker(Breaker(min_calls=4, window=10.0, error_rate=0.5), clock=lambda: now[0])
    for _ in range(3):
        br2.record(False, 1.0)
    now[0] += 10.5  # the errors leave the window
    assert br2.record(True, 1.0) is None
    assert br2.record(False, 1.0) is None  # 1 error / 2 calls, below min_calls
    assert br2.state is BreakerState.CLOSED
