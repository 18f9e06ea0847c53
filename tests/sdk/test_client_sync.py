"""The client against a live (fake) server: fetching, streaming, polling, failing, recovering."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fakeserver import (
    SDK_KEY,
    FakeServer,
    MakeClient,
    free_port,
    make_client,
    make_doc,
    server,
    wait_for,
    warnings_matching,
)
from turnout import ErrorCode, Reason, Turnout, TurnoutError
from turnout.engine import evaluate

__all__ = ["make_client", "server"]  # fixtures, imported for pytest

def test_client__server_up__decides_like_the_engine(server: FakeServer, make_client: MakeClient) -> None:
    doc = make_doc(
        3,
        split={"percentage": 37.5, "compare_percentage": 20.0},
        tenants={"percentage": 50.0, "bucket_by": "tenant_id"},
        pinned={"percentage": 0.0, "overrides": {"user-7": "parallel"}},
        off={"enabled": False, "percentage": 100.0},
        done={"retired": True},
    )
    server.set_ruleset(doc)
    client = make_client(server.url)
    assert client.wait_until_ready(3)
    assert client.ready and client.version == 3
    for i in range(300):
        key = f"user-{i}"
        attrs = {"tenant_id": f"t-{i % 17}"} if i % 3 else None
        for flag in ("split", "tenants", "pinned", "off", "done", "missing"):
            assert client.decide(flag, key, attrs) == evaluate(doc, flag, key, attrs)


def test_client__bootstrap_file__ready_offline_at_once(
    tmp_path: Path, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    doc = make_doc(7, checkout={"percentage": 100.0})
    path = tmp_path / "ruleset.json"
    path.write_text(json.dumps(doc))
    client = make_client(f"http://127.0.0.1:{free_port()}", bootstrap=path)
    assert client.ready and client.version == 7  # before any network round trip
    assert client.decide("checkout", "u1").reason is Reason.SPLIT
    assert wait_for(lambda: warnings_matching(caplog, "cannot fetch the ruleset"))
    assert "keeping version 7" in warnings_matching(caplog, "cannot fetch")[0]


def test_offline__dict_bootstrap__no_network_no_threads() -> None:
    client = Turnout.offline(make_doc(2, checkout={"percentage": 100.0}))
    assert client.ready and client.version == 2
    assert client.decide("checkout", "u1").parallel
    assert client._sync_thread is None and client._metrics_thread is None
    client.close()


def test_bootstrap__unusable__warns_and_waits_for_server(
    tmp_path: Path, server: FakeServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    client = make_client(server.url, bootstrap=bad)
    assert warnings_matching(caplog, "bootstrap ruleset unusable")
    assert client.wait_until_ready(3) and client.version == 1


def test_server_down_at_start__no_bootstrap__legacy_not_ready_then_recovers(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    client = make_client(f"http://127.0.0.1:{port}")
    d = client.decide("checkout", "u1")
    assert d.path == "legacy" and d.reason is Reason.ERROR
    assert d.error_code is ErrorCode.PROVIDER_NOT_READY
    assert not client.wait_until_ready(0.3)
    for _ in range(50):
        client.decide("checkout", "u1")
    assert len(warnings_matching(caplog, "before any ruleset")) == 1
    assert len(warnings_matching(caplog, "cannot fetch the ruleset")) == 1

    late = FakeServer(make_doc(4))
    late.port = port
    late.start()
    try:
        assert client.wait_until_ready(3)
        assert client.version == 4
    finally:
        client.close()
        late.stop()


def test_server_killed_mid_run__keeps_last_good_and_recovers(
    server: FakeServer, make_client: MakeClient
) -> None:
    client = make_client(server.url)
    assert client.wait_until_ready(3)
    server.stop()
    time.sleep(0.3)  # a few failed reconnects and polls
    assert client.version == 1
    assert client.decide("checkout", "u1").error_code is None
    server.set_ruleset(make_doc(2))
    server.start()  # same port
    assert wait_for(lambda: client.version == 2, timeout=3)


@pytest.mark.parametrize("bootstrap", [make_doc(5), None], ids=["bootstrapped", "not-ready"])
def test_hanging_server__decide_never_waits_for_the_network(
    bootstrap: dict[str, object] | None, server: FakeServer, make_client: MakeClient
) -> None:
    server.mode = "hang"
    # The client's own timeout is longer than the server's hold guard: the first fetch can only end
    # when the server lets go, which it does not while the test runs.
    client = make_client(server.url, timeout=60.0, bootstrap=bootstrap)
    assert wait_for(lambda: server.held["ruleset"] == 1)  # the first fetch is in, unanswered
    for i in range(200):
        d = client.decide("checkout", f"u{i}")
        assert d.version == (5 if bootstrap else None)
        assert d.error_code is (None if bootstrap else ErrorCode.PROVIDER_NOT_READY)
        # Still the one fetch, still unanswered: this decide neither fetched nor waited for it.
        assert (server.counts["ruleset"], server.held["ruleset"], server.expired) == (1, 1, 0)


def test_hanging_server__fetch_times_out__keeps_bootstrap_and_close_returns(
    server: FakeServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.mode = "hang"
    client = make_client(server.url, timeout=0.2, bootstrap=make_doc(5))
    # The server answers nothing: the client gave up on its own timeout.
    assert wait_for(lambda: warnings_matching(caplog, "no response within"), timeout=2)
    assert client.version == 5
    client.close()
    # close() returned while the server still held every request: it waited for none of them.
    assert server.held["ruleset"] >= 1 and server.expired == 0


def test_server_500s__keep_bootstrap__one_warning(
    server: FakeServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.mode = "500"
    client = make_client(server.url, bootstrap=make_doc(9))
    assert wait_for(lambda: server.counts["ruleset"] >= 4, timeout=3)
    assert client.version == 9
    assert len(warnings_matching(caplog, "HTTP 500")) == 1


@pytest.mark.parametrize("mode", ["malformed", "truncated", "invalid"])
def test_bad_ruleset__keeps_last_good_then_takes_next_good(
    mode: str, server: FakeServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(server.url)
    assert client.wait_until_ready(3)
    server.mode = mode
    server.set_ruleset(make_doc(2))  # announced on the stream, fetched broken
    assert wait_for(lambda: server.counts["ruleset_200"] >= 3, timeout=3)
    assert client.version == 1
    text = "truncated" if mode == "truncated" else "unusable ruleset"
    assert len(warnings_matching(caplog, text)) == 1
    server.mode = "ok"
    server.set_ruleset(make_doc(3))
    assert wait_for(lambda: client.version == 3, timeout=3)


def test_revoked_key__keeps_last_good__one_warning(
    server: FakeServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[TurnoutError] = []
    client = make_client(server.url, on_error=errors.append)
    assert client.wait_until_ready(3)
    server.sdk_key = "rotated"
    server.set_ruleset(make_doc(2))
    assert wait_for(lambda: len(errors) >= 3, timeout=3)
    assert client.version == 1
    assert len(warnings_matching(caplog, "rejected the SDK key")) == 1
    assert {e.problem for e in errors} >= {"fetch:unauthorized"}
    assert all(isinstance(e, TurnoutError) for e in errors)


def test_wrong_key_at_start__legacy_and_never_raises(
    server: FakeServer, make_client: MakeClient
) -> None:
    client = make_client(server.url, sdk_key="wrong")
    assert not client.wait_until_ready(0.3)
    d = client.decide("checkout", "u1")
    assert d.path == "legacy" and d.error_code is ErrorCode.PROVIDER_NOT_READY
    assert client.run("checkout", "u1", legacy=lambda: "old", parallel=lambda: "new") == "old"


def test_stream__new_version__client_updates_within_a_second(
    server: FakeServer, make_client: MakeClient
) -> None:
    client = make_client(server.url, poll_interval=30.0)  # only the stream can do it
    assert client.wait_until_ready(3)
    assert wait_for(lambda: server.counts["stream_connects"] >= 1)
    time.sleep(0.05)
    server.set_ruleset(make_doc(2, checkout={"percentage": 100.0}))
    # The deadline the protocol promises: a published change reaches the client within a second.
    assert wait_for(lambda: client.version == 2, timeout=1.0)
    assert client.decide("checkout", "anyone").parallel


def test_polling__unchanged_ruleset__answers_304(server: FakeServer, make_client: MakeClient) -> None:
    client = make_client(server.url, stream=False, poll_interval=0.05)
    assert client.wait_until_ready(3)
    assert wait_for(lambda: server.counts["ruleset_304"] >= 3, timeout=3)
    assert server.counts["ruleset_200"] == 1
    assert server.counts["stream_connects"] == 0
    server.set_ruleset(make_doc(2))
    assert wait_for(lambda: client.version == 2, timeout=2)
    assert all(h == f"Bearer {SDK_KEY}" for h in server.auth_headers)


def test_stream_unsupported__falls_back_to_polling(
    server: FakeServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.stream_mode = "404"
    client = make_client(server.url, poll_interval=0.1)
    assert client.wait_until_ready(3)
    server.set_ruleset(make_doc(2))
    assert wait_for(lambda: client.version == 2, timeout=2)
    assert server.counts["stream_connects"] == 1
    assert len(warnings_matching(caplog, "polling every")) == 1


def test_silent_stream__detected_dead_and_reconnected(
    server: FakeServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.stream_mode = "silent"  # connects, then never a byte: a hung server or proxy
    client = make_client(server.url, stream_read_timeout=0.3, poll_interval=30.0)
    assert client.wait_until_ready(3)
    server.set_ruleset(make_doc(2))  # no event will say so
    assert wait_for(lambda: server.counts["stream_connects"] >= 2, timeout=3)
    assert wait_for(lambda: client.version == 2, timeout=2)  # refetched on reconnect
    assert len(warnings_matching(caplog, "stream silent")) == 1


def test_stream_heartbeats__keep_a_quiet_stream_alive(
    server: FakeServer, make_client: MakeClient
) -> None:
    server.heartbeat = 0.05
    client = make_client(server.url, stream_read_timeout=0.3, poll_interval=30.0)
    assert client.wait_until_ready(3)
    time.sleep(0.8)
    assert server.counts["stream_connects"] == 1


def test_stream_dropped__reconnects_with_last_event_id(
    server: FakeServer, make_client: MakeClient
) -> None:
    server.stream_mode = "drop"
    client = make_client(server.url, poll_interval=30.0)
    assert client.wait_until_ready(3)
    assert wait_for(lambda: server.counts["stream_connects"] >= 2, timeout=3)
    assert "1" in server.last_event_ids[1:]


def test_unknown_flag__legacy_error__one_warning_per_flag(
    server: FakeServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(server.url)
    assert client.wait_until_ready(3)
    for _ in range(100):
        d = client.decide("nope", "u1")
        client.decide("other-nope", "u1")
    assert d.path == "legacy" and d.error_code is ErrorCode.FLAG_NOT_FOUND
    assert len(warnings_matching(caplog, "'nope' is not in ruleset")) == 1
    assert len(warnings_matching(caplog, "'other-nope' is not in ruleset")) == 1


def test_on_error__raising_callback__swallowed(make_client: MakeClient) -> None:
    calls: list[int] = []

    def bad(err: TurnoutError) -> None:
        calls.append(1)
        raise RuntimeError("host bug")

    client = make_client(f"http://127.0.0.1:{free_port()}", on_error=bad)
    assert wait_for(lambda: len(calls) >= 2, timeout=2)
    assert client.decide("nope", "u") .path == "legacy"
