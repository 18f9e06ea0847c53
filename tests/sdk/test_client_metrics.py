"""Metrics: batched in memory, flushed in the background, bounded when the server fails."""

from __future__ import annotations

import time

import pytest
from fakeserver import (
    FakeServer,
    MakeClient,
    make_client,
    make_doc,
    server,
    wait_for,
    warnings_matching,
)
from turnout import TurnoutError, __version__
from turnout.wire import LATENCY_BUCKETS_MS, key_hash, latency_bucket

__all__ = ["make_client", "server"]

DOC = make_doc(
    6,
    fast={"percentage": 100.0},
    slow={"percentage": 100.0, "compare_percentage": 100.0},
)


def test_latency_bucket__bounds_are_inclusive_upper_bounds() -> None:
    assert len(LATENCY_BUCKETS_MS) == 15
    assert latency_bucket(0) == 0
    assert latency_bucket(100_000) == 0  # 0.1 ms
    assert latency_bucket(100_001) == 1
    assert latency_bucket(30_000_000) == LATENCY_BUCKETS_MS.index(50.0)
    assert latency_bucket(10**12) == len(LATENCY_BUCKETS_MS)  # overflow bucket


def test_metrics__flushed_in_background__counts_and_histogram(
    server: FakeServer, make_client: MakeClient
) -> None:
    server.set_ruleset(DOC)
    client = make_client(server.url, code_version="2026.11.3", breaker=None)
    assert client.wait_until_ready(3)
    for i in range(20):
        client.decide("fast", f"u{i}")

    def slow_parallel() -> int:
        time.sleep(0.03)
        return 2

    for i in range(3):
        assert client.run("slow", f"k{i}", legacy=lambda: 1, parallel=slow_parallel) == 2
    client.decide("unknown-flag", "u1")

    def delivered() -> bool:
        rows = server.all_rows()
        return sum(r["calls"] for r in rows) == 24 and sum(r["mismatches"] for r in rows) == 3

    assert wait_for(delivered, timeout=3)
    batch = server.metrics[0]
    assert batch["sdk"] == {"name": "turnout-python", "version": __version__, "code_version": "2026.11.3"}
    assert batch["window"]["start"] <= batch["window"]["end"]
    rows = server.all_rows()
    fast = [r for r in rows if r["flag"] == "fast"]
    assert sum(r["calls"] for r in fast) == 20
    assert {r["path"] for r in fast} == {"parallel"} and {r["version"] for r in fast} == {6}
    slow = [r for r in rows if r["flag"] == "slow" and r["path"] == "parallel"]
    latency = [sum(col) for col in zip(*(r["latency_ms"] for r in slow), strict=True)]
    assert len(latency) == len(LATENCY_BUCKETS_MS) + 1
    assert sum(latency) == 3
    # at least the 30 ms the parallel path slept (no upper bound: a loaded machine may take longer)
    assert sum(latency[LATENCY_BUCKETS_MS.index(25.0) + 1:]) == 3
    assert sum(r["comparisons"] for r in slow) == 3
    unknown = [r for r in rows if r["flag"] == "unknown-flag"]
    assert unknown[0]["path"] == "legacy" and unknown[0]["error_codes"] == {"FLAG_NOT_FOUND": 1}
    all_samples = [s for b in server.metrics for s in b["mismatch_samples"]]
    assert {s["key_hash"] for s in all_samples} == {key_hash(f"k{i}") for i in range(3)}
    assert all(s["legacy"] == 1 and s["parallel"] == 2 for s in all_samples)


def test_metrics__nothing_happened__nothing_sent(server: FakeServer, make_client: MakeClient) -> None:
    client = make_client(server.url)
    assert client.wait_until_ready(3)
    time.sleep(0.35)
    assert server.counts["metrics_posts"] == 0


def test_metrics__server_500__retried_bounded_then_dropped_one_warning(
    server: FakeServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.metrics_mode = "500"
    client = make_client(
        server.url, flush_interval=0.05, flush_retries=1, max_pending_batches=2
    )
    assert client.wait_until_ready(3)
    for round_ in range(6):
        client.decide("checkout", f"u{round_}")
        time.sleep(0.06)
    assert wait_for(lambda: server.counts["metrics_posts"] >= 5)
    assert len(client._sender.pending) <= 2
    assert client._sender.dropped_batches >= 1
    assert len(warnings_matching(caplog, "cannot send metrics")) == 1
    assert len(warnings_matching(caplog, "metrics batches dropped")) == 1
    server.metrics_mode = "ok"
    client.decide("checkout", "last")
    assert wait_for(lambda: any(r["calls"] for r in server.all_rows()))


def test_metrics__server_refuses_batch_400__dropped_not_retried(
    server: FakeServer, make_client: MakeClient
) -> None:
    server.metrics_mode = "400"
    client = make_client(server.url, flush_interval=0.05, flush_retries=5)
    assert client.wait_until_ready(3)
    client.decide("checkout", "u1")
    assert wait_for(lambda: client._sender.dropped_batches == 1)
    assert len(client._sender.pending) == 0


def test_metrics__hanging_server__flush_gives_up_at_its_timeout(
    server: FakeServer, make_client: MakeClient
) -> None:
    server.metrics_mode = "hang"
    errors: list[TurnoutError] = []
    client = make_client(server.url, timeout=0.2, flush_interval=60.0, on_error=errors.append)
    assert client.wait_until_ready(3)
    client.decide("checkout", "u1")
    assert client.flush() is False
    # flush() returned while the server still held its post, unanswered: it gave up on its own timeout.
    assert (server.counts["metrics_posts"], server.held["metrics"], server.expired) == (1, 1, 0)
    assert [e.problem for e in errors if e.kind == "metrics"] == ["metrics:timeout"]
    assert len(client._sender.pending) == 1  # kept for the next flush


def test_metrics__hanging_server__decide_unaffected(server: FakeServer, make_client: MakeClient) -> None:
    server.metrics_mode = "hang"
    # The client's own timeout is longer than the server's hold guard: the post can only end when
    # the server lets go, which it does not while the test runs.
    client = make_client(server.url, timeout=60.0)
    assert client.wait_until_ready(3)
    client.decide("checkout", "u0")
    assert wait_for(lambda: server.held["metrics"] == 1)  # the metrics thread waits for an answer
    for i in range(1, 101):
        assert client.decide("checkout", f"u{i}").version == 1
        # Still the one post, still unanswered: this decide neither sent nor waited for anything.
        assert (server.counts["metrics_posts"], server.held["metrics"], server.expired) == (1, 1, 0)
    server.metrics_mode = "ok"
    client.close()  # hangs the held post up and sends everything once more
    assert sum(r["calls"] for r in server.all_rows()) == 101


def test_close__flushes_what_is_left(server: FakeServer, make_client: MakeClient) -> None:
    client = make_client(server.url, flush_interval=60.0)
    assert client.wait_until_ready(3)
    for i in range(7):
        client.decide("checkout", f"u{i}")
    client.close()
    assert sum(r["calls"] for r in server.all_rows()) == 7


def test_metrics__disabled__nothing_sent(server: FakeServer, make_client: MakeClient) -> None:
    client = make_client(server.url, send_metrics=False)
    assert client.wait_until_ready(3)
    client.decide("checkout", "u1")
    client.close()
    assert server.counts["metrics_posts"] == 0


def test_metrics__many_threads_deciding__every_decision_counted_exactly(
    server: FakeServer, make_client: MakeClient
) -> None:
    """Each thread counts into its own shard: forced thread switches cannot lose an increment."""
    import sys
    import threading

    server.set_ruleset(DOC)
    client = make_client(server.url, breaker=None, flush_interval=3600)
    assert client.wait_until_ready(3)
    threads, per_thread = 8, 20_000
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            client.decide("fast", f"t{n}-{i}")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython allows
    try:
        pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert client.flush()
    fast = [r for r in server.all_rows() if r["flag"] == "fast"]
    assert sum(r["calls"] for r in fast) == threads * per_thread


def test_metrics__threads_that_ended__folded_and_dropped_counts_kept() -> None:
    import threading

    from turnout._metrics import Recorder

    recorder = Recorder()
    epoch = recorder.epoch(3)

    def decide_once() -> None:
        recorder.shard(epoch).setdefault("f", [0, 0])[1] += 1

    for _ in range(50):
        t = threading.Thread(target=decide_once)
        t.start()
        t.join()
    batch = recorder.drain(sdk_version="x", code_version=None)
    assert batch is not None
    assert [(r["flag"], r["path"], r["version"], r["calls"]) for r in batch["flags"]] == [("f", "parallel", 3, 50)]
    assert epoch.shards == [] and epoch.ended == {"f": [0, 50]}
    assert recorder.drain(sdk_version="x", code_version=None) is None  # shipped once, not again


def test_metrics__decide_only_calls_beside_run__runs_count_only_what_ran(
    server: FakeServer, make_client: MakeClient
) -> None:
    """Reproduction (#13): 50% of run()'s parallel calls failed, but 450 bare decide() calls made
    the rate 9% of ``calls``. ``runs`` counts what ran, so the rate a guardrail judges is 50%."""
    server.set_ruleset(DOC)
    client = make_client(server.url, breaker=None)
    assert client.wait_until_ready(3)
    for i in range(450):
        client.decide("fast", f"u{i}")

    def flaky(i: int) -> int:
        if i % 2:
            raise RuntimeError("parallel failed")
        return 2

    for i in range(100):
        client.run("fast", f"k{i}", legacy=lambda: 1, parallel=lambda i=i: flaky(i))
    assert client.flush()
    [parallel] = [r for r in server.all_rows() if r["flag"] == "fast" and r["path"] == "parallel"]
    assert (parallel["calls"], parallel.get("runs"), parallel["errors"]) == (550, 100, 50)
    assert parallel["runs"] == sum(parallel["latency_ms"])
    [legacy] = [r for r in server.all_rows() if r["flag"] == "fast" and r["path"] == "legacy"]
    assert (legacy["calls"], legacy.get("runs"), legacy["errors"]) == (0, 50, 0)  # the fallbacks ran legacy


def test_metrics__parallel_errors__flushed_early_not_at_the_interval(
    server: FakeServer, make_client: MakeClient
) -> None:
    """Adaptive flush: with an hour's flush interval, failing parallel runs still reach the server
    (URGENT_FLUSH_DELAY after the first error); successes alone wait for the interval."""
    server.set_ruleset(DOC)
    client = make_client(server.url, breaker=None, flush_interval=3600.0)
    assert client.wait_until_ready(3)
    for i in range(20):
        client.run("fast", f"ok{i}", legacy=lambda: 1, parallel=lambda: 2)
    assert not wait_for(lambda: server.metrics, timeout=1.0)  # nothing urgent: no flush yet

    def failing() -> int:
        raise RuntimeError("parallel failed")

    client.run("fast", "bad", legacy=lambda: 1, parallel=failing)

    def errors_delivered() -> bool:
        return sum(r["errors"] for r in server.all_rows() if r["path"] == "parallel") == 1

    assert wait_for(errors_delivered, timeout=10)
    # A burst rides the next early flushes, never one post per error.
    for i in range(200):
        client.run("fast", f"bad{i}", legacy=lambda: 1, parallel=failing)
    assert wait_for(lambda: sum(r["errors"] for r in server.all_rows() if r["path"] == "parallel") == 201,
                    timeout=10)
    assert len(server.metrics) <= 4


def test_report__outcomes_of_paths_the_host_ran__counted_as_runs_and_errors(
    server: FakeServer, make_client: MakeClient
) -> None:
    """decide() then run the path yourself, then report(): a run (timed when ``elapsed`` is given),
    an error when not ok. A decision never reported stays a decision, not a run."""
    server.set_ruleset(DOC)
    client = make_client(server.url, breaker=None)
    assert client.wait_until_ready(3)
    for i in range(10):
        d = client.decide("fast", f"k{i}")
        if i < 6:
            client.report(d, ok=i % 2 == 0, elapsed=0.003 if i < 3 else None)
    client.report("not a decision", ok=False)  # type: ignore[arg-type]  # reported as a problem, ignored
    assert client.flush()
    [parallel] = [r for r in server.all_rows() if r["flag"] == "fast" and r["path"] == "parallel"]
    assert (parallel["calls"], parallel["runs"], parallel["errors"], sum(parallel["latency_ms"])) == (10, 6, 3, 3)
