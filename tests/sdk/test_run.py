"""run() and the switch decorator: served path, shadow comparison, fallback, bounds."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fakeserver import make_doc, wait_for, warnings_matching
from turnout import Turnout
from turnout.engine import evaluate
from turnout.wire import key_hash

DOC = make_doc(
    4,
    **{
        "to-parallel": {"percentage": 100.0},
        "to-legacy": {"percentage": 0.0},
        "cmp-parallel": {"percentage": 100.0, "compare_percentage": 100.0},
        "cmp-legacy": {"percentage": 0.0, "compare_percentage": 100.0},
        "cmp-some": {"percentage": 0.0, "compare_percentage": 30.0},
    },
)


@pytest.fixture
def client() -> Iterator[Turnout]:
    c = Turnout.offline(DOC, compare_timeout=1.0, breaker=None)
    yield c
    c.close()


def rows(client: Turnout) -> dict[tuple[str, str], dict[str, Any]]:
    batch = client._recorder.drain(sdk_version="test", code_version=None)
    assert batch is not None
    return {(r["flag"], r["path"]): dict(r) for r in batch["flags"]}


def samples(client: Turnout) -> list[dict[str, Any]]:
    return [dict(s) for s in client._recorder._samples]


def counted(client: Turnout, field: str, n: int = 1) -> bool:
    """Wait until background comparisons recorded ``n`` in ``field`` (any row)."""
    def seen() -> bool:
        with client._recorder._lock:
            rows = list(client._recorder._rows.values())
        from turnout._metrics import (
            COMPARE_ERRORS,
            COMPARE_TIMEOUTS,
            COMPARISONS,
            MISMATCHES,
            SKIPPED,
        )
        index = {
            "comparisons": COMPARISONS, "mismatches": MISMATCHES, "compare_skipped": SKIPPED,
            "compare_errors": COMPARE_ERRORS, "compare_timeouts": COMPARE_TIMEOUTS,
        }[field]
        return sum(r.counts[index] for r in rows) >= n
    return wait_for(seen, timeout=3)


def fail() -> str:
    raise RuntimeError("parallel is broken")


def test_run__parallel_decision__returns_parallel_result_only(client: Turnout) -> None:
    called: list[str] = []
    out = client.run(
        "to-parallel", "u1",
        legacy=lambda: called.append("legacy") or "old",  # type: ignore[func-returns-value]
        parallel=lambda: "new",
    )
    assert out == "new"
    time.sleep(0.05)
    assert called == []
    r = rows(client)[("to-parallel", "parallel")]
    assert r["calls"] == 1 and sum(r["latency_ms"]) == 1 and r["errors"] == 0


def test_run__legacy_decision__returns_legacy_result(client: Turnout) -> None:
    assert client.run("to-legacy", "u1", legacy=lambda: "old", parallel=fail) == "old"


def test_run__unknown_flag__legacy_never_raises(client: Turnout) -> None:
    assert client.run("nope", "u1", legacy=lambda: "old", parallel=fail) == "old"
    assert client.run("to-parallel", None, legacy=lambda: "old", parallel=fail) == "old"


def test_run__compare__other_path_in_background_and_match_counted(client: Turnout) -> None:
    shadow_threads: list[str] = []

    def legacy() -> int:
        shadow_threads.append(threading.current_thread().name)
        return 42

    assert client.run("cmp-parallel", "u1", legacy=legacy, parallel=lambda: 42) == 42
    assert counted(client, "comparisons")
    assert shadow_threads and shadow_threads[0].startswith("turnout-shadow")
    r = rows(client)[("cmp-parallel", "parallel")]
    assert (r["comparisons"], r["mismatches"]) == (1, 0)


def test_run__compare_sampling__follows_the_decision(client: Turnout) -> None:
    c = Turnout.offline(DOC, shadow_queue=1000, breaker=None)
    ran: list[int] = []
    keys = [f"user-{i}" for i in range(600)]
    for k in keys:
        c.run("cmp-some", k, legacy=lambda: 1, parallel=lambda: ran.append(1) or 1)  # type: ignore[func-returns-value]
    expected = sum(evaluate(DOC, "cmp-some", k).compare for k in keys)
    assert 100 < expected < 260  # ~30 %
    assert wait_for(lambda: len(ran) == expected)
    c.close()


def test_run__mismatch__sample_redacted_with_key_hash_only(client: Turnout) -> None:
    def redact(flag: str, value: Any) -> Any:
        return {k: ("***" if k == "email" else v) for k, v in value.items()}

    out = client.run(
        "cmp-legacy", "alice@example.com",
        legacy=lambda: {"total": 10, "email": "alice@example.com"},
        parallel=lambda: {"total": 11, "email": "alice@example.com"},
        redact=redact,
    )
    assert out["total"] == 10
    assert counted(client, "mismatches")
    (s,) = samples(client)
    assert s["legacy"] == {"total": 10, "email": "***"}
    assert s["parallel"] == {"total": 11, "email": "***"}
    assert s["key_hash"] == key_hash("alice@example.com")
    assert "alice" not in repr(s)
    assert s["served"] == "legacy" and s["version"] == 4 and s["truncated"] is False


def test_run__huge_results__sample_capped(client: Turnout) -> None:
    c = Turnout.offline(DOC, max_sample_bytes=100, breaker=None)
    c.run("cmp-legacy", "u1", legacy=lambda: "a" * 10_000, parallel=lambda: "b" * 10_000)
    assert counted(c, "mismatches")
    (s,) = samples(c)
    assert s["truncated"] and len(s["legacy"]) <= 100 and len(s["parallel"]) <= 100
    c.close()


def test_run__samples__bounded_per_window(client: Turnout) -> None:
    c = Turnout.offline(DOC, max_samples=3, breaker=None)
    for i in range(10):
        c.run("cmp-legacy", f"u{i}", legacy=lambda: 1, parallel=lambda: 2)
    assert counted(c, "mismatches", 10)
    batch = c._recorder.drain(sdk_version="t", code_version=None)
    assert batch is not None
    assert len(batch["mismatch_samples"]) == 3 and batch["dropped"]["samples"] == 7
    c.close()


def test_run__redact_raises__sample_dropped_one_warning(
    client: Turnout, caplog: pytest.LogCaptureFixture
) -> None:
    def redact(flag: str, value: Any) -> Any:
        raise ValueError("host bug")

    for i in range(5):
        assert client.run("cmp-legacy", f"u{i}", legacy=lambda: 1, parallel=lambda: 2, redact=redact) == 1
    assert counted(client, "mismatches", 5)
    assert samples(client) == []
    assert len(warnings_matching(caplog, "redact hook raised")) == 1


def test_run__shadow_raises__caller_unaffected_and_counted(client: Turnout) -> None:
    assert client.run("cmp-legacy", "u1", legacy=lambda: "old", parallel=fail) == "old"
    assert counted(client, "compare_errors")
    r = rows(client)[("cmp-legacy", "legacy")]
    assert r["compare_errors"] == 1 and r["comparisons"] == 0 and r["errors"] == 0


def test_run__compare_function_raises__counted(client: Turnout) -> None:
    def compare(a: object, b: object) -> bool:
        raise TypeError("cannot compare")

    assert client.run("cmp-legacy", "u1", legacy=lambda: 1, parallel=lambda: 1, compare=compare) == 1
    assert counted(client, "compare_errors")


def test_run__custom_compare__used(client: Turnout) -> None:
    client.run(
        "cmp-legacy", "u1", legacy=lambda: 1.0, parallel=lambda: 1.0000001,
        compare=lambda a, b: abs(a - b) < 1e-3,
    )
    assert counted(client, "comparisons")
    assert rows(client)[("cmp-legacy", "legacy")]["mismatches"] == 0


def test_run__slow_shadow__caller_not_slowed_and_timeout_counted(client: Turnout) -> None:
    release = threading.Event()
    finished = threading.Event()

    def slow() -> str:
        release.wait(10)  # held until the test lets go (10 s: only a guard against hanging)
        time.sleep(0.2)  # and then slower than compare_timeout
        finished.set()
        return "new"

    assert client.run("cmp-legacy", "u1", legacy=lambda: "old", parallel=slow, compare_timeout=0.1) == "old"
    # The caller has its answer while the comparison is still held: it did not wait for it.
    assert not finished.is_set()
    release.set()
    assert counted(client, "compare_timeouts")
    assert finished.is_set()
    r = rows(client)[("cmp-legacy", "legacy")]
    assert r["mismatches"] == 0 and r["comparisons"] == 0


def test_run__pool_full__comparison_skipped_and_counted() -> None:
    c = Turnout.offline(DOC, shadow_workers=1, shadow_queue=1, breaker=None)
    release = threading.Event()
    started = threading.Event()

    finished: list[int] = []

    def blocked() -> int:
        started.set()
        release.wait(10)  # held until the test lets go (10 s: only a guard against hanging)
        finished.append(1)
        return 1

    assert c.run("cmp-legacy", "u0", legacy=lambda: 1, parallel=blocked) == 1
    assert started.wait(2)  # the worker is busy
    for i in range(1, 5):  # one more fits in the queue, three are skipped
        assert c.run("cmp-legacy", f"u{i}", legacy=lambda: 1, parallel=blocked) == 1
    # Every caller had its answer while the worker was still held: none waited for room.
    assert finished == []
    release.set()
    assert counted(c, "comparisons", 2)
    r = rows(c)[("cmp-legacy", "legacy")]
    assert r["compare_skipped"] == 3 and r["comparisons"] == 2
    c.close()


def test_run__parallel_raises__falls_back_to_legacy_and_counts(client: Turnout) -> None:
    assert client.run("to-parallel", "u1", legacy=lambda: "old", parallel=fail) == "old"
    r = rows(client)
    assert r[("to-parallel", "parallel")]["errors"] == 1
    assert r[("to-parallel", "parallel")]["fallbacks"] == 1
    assert sum(r[("to-parallel", "legacy")]["latency_ms"]) == 1  # the fallback's own timing


def test_run__parallel_raises_without_fallback__host_exception_propagates(client: Turnout) -> None:
    with pytest.raises(RuntimeError, match="parallel is broken"):
        client.run("to-parallel", "u1", legacy=lambda: "old", parallel=fail, fallback=False)
    assert rows(client)[("to-parallel", "parallel")]["errors"] == 1


def test_run__legacy_raises__host_exception_propagates(client: Turnout) -> None:
    def broken_legacy() -> str:
        raise KeyError("legacy bug")

    with pytest.raises(KeyError):
        client.run("to-legacy", "u1", legacy=broken_legacy, parallel=lambda: "new")
    with pytest.raises(KeyError):  # fallback to a broken legacy: the host's exception too
        client.run("to-parallel", "u1", legacy=broken_legacy, parallel=fail)


def test_run__keyboard_interrupt__not_swallowed_by_fallback(client: Turnout) -> None:
    def interrupted() -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        client.run("to-parallel", "u1", legacy=lambda: "old", parallel=interrupted)


def test_run__shadow__sees_the_callers_context_vars(client: Turnout) -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
    seen: list[str] = []
    request_id.set("req-42")
    client.run("cmp-legacy", "u1", legacy=lambda: 1, parallel=lambda: seen.append(request_id.get()) or 1)  # type: ignore[func-returns-value]
    assert wait_for(lambda: seen == ["req-42"])


# -- the decorator --------------------------------------------------------------------------


def old_total(tenant_id: str, amount: int) -> int:
    return amount


def test_switch__decorated_parallel__key_by_argument_name(client: Turnout) -> None:
    @client.switch("to-parallel", key="tenant_id", legacy=old_total)
    def new_total(tenant_id: str, amount: int) -> int:
        return amount + 1

    assert new_total("t1", 10) == 11
    assert new_total(tenant_id="t1", amount=10) == 11
    assert new_total.__name__ == "new_total"
    assert rows(client)[("to-parallel", "parallel")]["calls"] == 2


def test_switch__decorated_legacy__key_function_and_attributes(client: Turnout) -> None:
    seen: list[Any] = []

    def new_total(tenant_id: str, amount: int) -> int:
        return amount + 1

    @client.switch(
        "cmp-legacy",
        key=lambda tenant_id, amount: f"tenant-{tenant_id}",
        attributes=lambda tenant_id, amount: seen.append(amount) or {"amount": amount},  # type: ignore[func-returns-value]
        parallel=new_total,
    )
    def total(tenant_id: str, amount: int) -> int:
        return amount

    assert total("t1", 10) == 10  # legacy served, parallel shadowed
    assert counted(client, "mismatches")
    assert seen == [10]
    assert samples(client)[0]["key_hash"] == key_hash("tenant-t1")


def test_switch__key_function_raises__legacy_and_one_warning(
    client: Turnout, caplog: pytest.LogCaptureFixture
) -> None:
    @client.switch("to-parallel", key=lambda *a: 1 / 0, legacy=old_total)
    def new_total(tenant_id: str, amount: int) -> int:
        return amount + 1

    assert [new_total("t", 1) for _ in range(3)] == [1, 1, 1]
    assert len(warnings_matching(caplog, "key function raised")) == 1


def test_switch__bad_declaration__fails_at_import_time(client: Turnout) -> None:
    with pytest.raises(TypeError, match="exactly one"):
        client.switch("f", key="tenant_id")
    with pytest.raises(TypeError, match="no argument 'tenant'"):
        client.switch("f", key="tenant", legacy=old_total)(old_total)


def test_run__many_threads__no_errors_and_counts_close(client: Turnout) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(2000):
                client.run("to-parallel", f"u{i}", legacy=lambda: 0, parallel=lambda: 1)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    r = rows(client)[("to-parallel", "parallel")]
    assert sum(r["latency_ms"]) == 16_000  # recorded under a lock: exact
    assert 15_000 <= r["calls"] <= 16_000  # lock-free counter: may lose a rare race


def test_run__logs_nothing_for_healthy_calls(client: Turnout, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="turnout")
    for i in range(50):
        client.run("to-parallel", f"u{i}", legacy=lambda: 0, parallel=lambda: 1)
    assert [r for r in caplog.records if r.name == "turnout"] == []
