"""Starting, closing, exiting and forking."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from fakeserver import (
    FAST,
    SDK_KEY,
    FakeServer,
    MakeClient,
    make_client,
    make_doc,
    server,
    wait_for,
    warnings_matching,
)
from turnout import Turnout

__all__ = ["make_client", "server"]


def turnout_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("turnout-")]


def test_close__idempotent_and_decisions_keep_working(server: FakeServer, make_client: MakeClient) -> None:
    client = make_client(server.url)
    assert client.wait_until_ready(3)
    client.close()
    client.close()
    assert client.decide("checkout", "u1").version == 1
    assert client.run("checkout", "u1", legacy=lambda: 1, parallel=lambda: 2) in (1, 2)
    assert "closed" in repr(client)


def test_close__stops_background_threads(server: FakeServer) -> None:
    before = set(turnout_threads())
    # Every thread would otherwise sleep (or read a quiet stream) for a minute: they end only if
    # close() wakes them.
    slow = {"poll_interval": 60.0, "flush_interval": 60.0, "stream_read_timeout": 60.0}
    server.set_ruleset(make_doc(2, checkout={"percentage": 50.0, "compare_percentage": 100.0}))
    client = Turnout(server.url, SDK_KEY, **{**FAST, **slow})
    assert client.wait_until_ready(3)
    client.run("checkout", "u1", legacy=lambda: 1, parallel=lambda: 1)  # compared on a shadow thread
    assert wait_for(lambda: server.counts["stream_connects"] == 1)
    assert {"turnout-sync", "turnout-metrics", "turnout-shadow-0"} <= set(turnout_threads())
    client.close()
    assert wait_for(lambda: set(turnout_threads()) <= before, timeout=10)


def test_close__during_a_hung_fetch__no_failure_reported_and_no_retry(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    # close() hangs up the request the sync thread is blocked in: that is not the server failing,
    # and the transport must not take it for a stale kept-alive connection and send it again.
    caplog.set_level(logging.INFO, logger="turnout")
    errors: list[Exception] = []
    before = set(turnout_threads())
    client = Turnout(server.url, SDK_KEY, **{**FAST, "stream": False, "timeout": 30.0, "send_metrics": False},
                     on_error=errors.append)
    assert client.wait_until_ready(3)
    polls = server.counts["ruleset"]
    server.mode = "hang"
    assert wait_for(lambda: server.counts["ruleset"] > polls)  # a poll on the kept-alive connection, hung
    in_flight = server.counts["ruleset"]
    client.close()
    assert wait_for(lambda: set(turnout_threads()) <= before, timeout=2)
    assert server.counts["ruleset"] == in_flight
    assert errors == []
    assert warnings_matching(caplog, "") == []


def test_close__during_a_hung_metrics_post__no_failure_reported_and_the_batch_sent_at_close(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="turnout")
    errors: list[Exception] = []
    client = Turnout(server.url, SDK_KEY, **{**FAST, "stream": False, "timeout": 30.0}, on_error=errors.append)
    assert client.wait_until_ready(3)
    server.metrics_mode = "hang"
    client.decide("checkout", "u1")
    assert wait_for(lambda: server.counts["metrics_posts"] >= 1)  # the metrics thread waits for an answer
    server.metrics_mode = "ok"
    client.close()  # hangs that post up, then sends the batch once more itself
    assert sum(row["calls"] for row in server.all_rows()) == 1
    assert errors == []
    assert warnings_matching(caplog, "") == []


def test_context_manager__closes(server: FakeServer) -> None:
    with Turnout(server.url, SDK_KEY, **FAST) as client:
        assert client.wait_until_ready(3)
    assert client._closed


def test_ready__false_then_true(server: FakeServer) -> None:
    server.mode = "hang"
    client = Turnout(server.url, SDK_KEY, **{**FAST, "timeout": 0.1})
    assert not client.ready and client.version is None
    assert client.wait_until_ready(0.05) is False
    server.mode = "ok"
    assert client.wait_until_ready(3) is True
    assert client.ready and client.version == 1
    client.close()


def test_constructor__bad_options__raise_value_error_at_once() -> None:
    with pytest.raises(ValueError):
        Turnout("ftp://example.com", "k")
    with pytest.raises(ValueError):
        Turnout("http://example.com", None)
    with pytest.raises(ValueError):
        Turnout.offline(None, poll_interval=0)


def test_offline__no_url__no_network_and_legacy_until_bootstrapped() -> None:
    client = Turnout(None, None)
    d = client.decide("checkout", "u1")
    assert d.path == "legacy" and d.error_code == "PROVIDER_NOT_READY"
    assert client.flush() is True
    client.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork__child_decides_runs_and_reports_its_own_metrics(
    server: FakeServer, make_client: MakeClient
) -> None:
    client = make_client(server.url, flush_interval=60.0)
    assert client.wait_until_ready(3)
    for i in range(5):  # counted in the parent only
        client.decide("checkout", f"parent-{i}")
    client.run("checkout", "p", legacy=lambda: 1, parallel=lambda: 1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(r)
            assert client._sync_thread is None and client._dormant
            assert client.decide("checkout", "child-1").version == 1  # inherited ruleset
            assert client._sync_thread is not None  # restarted lazily on first use
            for i in range(2, 4):
                client.decide("checkout", f"child-{i}")
            assert client.run("checkout", "c", legacy=lambda: "ok", parallel=lambda: "ok") == "ok"
            client.close()
            code = 0
        except BaseException as exc:
            os.write(w, repr(exc).encode())
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    message = os.read(r, 4096).decode()
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0, message
    # the child's close() flushed the child's counts only: 3 decides + 1 run
    assert sum(row["calls"] for row in server.all_rows()) == 4
    client.close()  # the parent's own counts: 5 + 1
    assert sum(row["calls"] for row in server.all_rows()) == 10


def test_atexit__interpreter_exit_flushes_metrics(server: FakeServer, tmp_path: Path) -> None:
    script = tmp_path / "host.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from turnout import Turnout
            client = Turnout({server.url!r}, {SDK_KEY!r}, flush_interval=60.0)
            assert client.wait_until_ready(3)
            for i in range(3):
                client.decide("checkout", f"u{{i}}")
            # no close(): the atexit hook flushes and stops
            """
        )
    )
    # flush_interval=60: the metrics thread would not send before the timeout (a guard) cuts the run
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert sum(row["calls"] for row in server.all_rows()) == 3


def test_atexit__server_down__exits_and_drops_the_batch(tmp_path: Path) -> None:
    script = tmp_path / "host.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from turnout import Turnout
            client = Turnout("http://127.0.0.1:9", "k", bootstrap={make_doc()!r}, timeout=0.5)
            client.decide("checkout", "u1")
            """
        )
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert "cannot send metrics (ConnectionRefusedError" in proc.stderr
    assert "metrics batches dropped" in proc.stderr  # given up at exit, not kept for a retry


def test_atexit__server_hanging__exit_tries_once_within_its_timeout(server: FakeServer, tmp_path: Path) -> None:
    server.mode = server.metrics_mode = "hang"
    script = tmp_path / "host.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from turnout import Turnout
            client = Turnout({server.url!r}, {SDK_KEY!r}, bootstrap={make_doc()!r}, timeout=0.5)
            client.decide("checkout", "u1")
            """
        )
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    # The process exited while the server still held its requests, unanswered: it waited for none
    # of them beyond its own timeout, and tried the metrics batch once, not again.
    assert (server.held["ruleset"], server.held["metrics"], server.expired) == (1, 1, 0)
    assert server.counts["metrics_posts"] == 1
    assert "cannot send metrics (no response within 0.5s)" in proc.stderr
    assert "metrics batches dropped" in proc.stderr
