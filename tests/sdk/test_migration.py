"""``client.migration(flag)``: every stage × operation (which origins run, what returns, what is
recorded), the budget, divergences and their identifiers, and faults of every kind on the
non-authoritative side. Runs without Django."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fakeserver import make_doc
from turnout import Migration, Stage, Turnout
from turnout.wire import key_hash

DOC = make_doc(3, **{f"m-{s.value}": {"percentage": 0.0, "migration": {"stage": s.value}} for s in Stage})

#: stage -> (read origins, read result, write origins, write result)
EXPECTED = {
    Stage.OFF: (["legacy"], "L", ["legacy"], "L"),
    Stage.DUAL_WRITE: (["legacy"], "L", ["legacy", "parallel"], "L"),
    Stage.SHADOW: (["legacy", "parallel"], "L", ["legacy", "parallel"], "L"),
    Stage.LIVE: (["parallel", "legacy"], "P", ["parallel", "legacy"], "P"),
    Stage.RAMPDOWN: (["parallel"], "P", ["parallel", "legacy"], "P"),
    Stage.COMPLETE: (["parallel"], "P", ["parallel"], "P"),
}


@pytest.fixture
def client() -> Iterator[Turnout]:
    c = Turnout.offline(DOC, breaker=None)
    yield c
    c.close()


def drain(client: Turnout) -> dict[str, Any]:
    batch = client._recorder.drain(sdk_version="test", code_version=None)
    assert batch is not None
    return dict(batch)


def rows(batch: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["origin"], r["operation"]): r for r in batch.get("migrations", [])}


class Origins:
    """Two origins that log what ran, in order, and answer 'L' / 'P' (or what they are told)."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.lock = threading.Lock()

    def legacy(self, value: Any = "L") -> Any:
        def run() -> Any:
            with self.lock:
                self.ran.append("legacy")
            return value
        return run

    def parallel(self, value: Any = "P") -> Any:
        def run() -> Any:
            with self.lock:
                self.ran.append("parallel")
            return value
        return run


@pytest.mark.parametrize("stage", list(Stage))
def test_read__each_stage__runs_its_origins_returns_authoritative_and_records(client: Turnout, stage: Stage) -> None:
    origins, result, _, _ = EXPECTED[stage]
    o = Origins()
    m = client.migration(f"m-{stage.value}", budget=5.0)
    assert m.read("tenant-1", legacy=o.legacy(), parallel=o.parallel(), compare=lambda a, b: True) == result
    assert o.ran == origins  # serial: the authoritative origin first
    recorded = rows(drain(client))
    assert sorted(origin for origin, op in recorded if op == "read") == sorted(origins)
    for origin in origins:
        row = recorded[(origin, "read")]
        assert (row["calls"], row["errors"], row["late"], row["stage"], row["version"]) == (1, 0, 0, stage.value, 3)
        assert sum(row["latency_ms"]) == 1
    auth = recorded[(origins[0], "read")]
    assert auth["checks"] == (1 if len(origins) == 2 else 0)


@pytest.mark.parametrize("stage", list(Stage))
def test_write__each_stage__runs_its_origins_returns_authoritative_and_records(client: Turnout, stage: Stage) -> None:
    _, _, origins, result = EXPECTED[stage]
    o = Origins()
    m = client.migration(f"m-{stage.value}", budget=5.0)
    assert m.write("tenant-1", legacy=o.legacy(), parallel=o.parallel()) == result
    assert o.ran == origins
    batch = drain(client)
    recorded = rows(batch)
    assert sorted(origin for origin, op in recorded if op == "write") == sorted(origins)
    assert all(r["calls"] == 1 and r["errors"] == 0 and r["divergences"] == 0 for r in recorded.values())
    assert batch["divergences"] == []


@pytest.mark.parametrize("stage", list(Stage))
def test_aread_awrite__each_stage__same_as_sync(client: Turnout, stage: Stage) -> None:
    read_origins, read_result, write_origins, write_result = EXPECTED[stage]
    o = Origins()
    m = client.migration(f"m-{stage.value}", budget=5.0)

    def aw(fn: Any) -> Any:
        async def run() -> Any:
            return fn()
        return run

    async def main() -> tuple[Any, Any]:
        r = await m.aread("tenant-1", legacy=aw(o.legacy()), parallel=aw(o.parallel()))
        ran_read = list(o.ran)
        o.ran.clear()
        w = await m.awrite("tenant-1", legacy=aw(o.legacy()), parallel=aw(o.parallel()))
        assert ran_read == read_origins
        return r, w

    assert asyncio.run(main()) == (read_result, write_result)
    assert o.ran == write_origins
    recorded = rows(drain(client))
    assert {k for k in recorded if k[1] == "read"} == {(x, "read") for x in read_origins}
    assert {k for k in recorded if k[1] == "write"} == {(x, "write") for x in write_origins}


def test_read__inconsistent__counted_on_authoritative_row_with_a_redacted_sample(client: Turnout) -> None:
    m = client.migration("m-live", budget=5.0, redact=lambda side, value: {"total": value["total"]})
    o = Origins()
    out = m.read("tenant-9", legacy=o.legacy({"total": 10, "card": "4111"}),
                 parallel=o.parallel({"total": 11, "card": "4111"}))
    assert out == {"total": 11, "card": "4111"}
    batch = drain(client)
    auth = rows(batch)[("parallel", "read")]
    assert (auth["checks"], auth["inconsistent"], auth["check_errors"]) == (1, 1, 0)
    [sample] = batch["consistency_samples"]
    assert sample["legacy"] == {"total": 10} and sample["parallel"] == {"total": 11}
    assert sample["key_hash"] == key_hash("tenant-9") and sample["authoritative"] == "parallel"
    assert "tenant-9" not in str(batch)


def test_read__compare_raises__check_error_and_result_unchanged(client: Turnout) -> None:
    m = client.migration("m-shadow", budget=5.0, compare=lambda a, b: 1 / 0)
    assert m.read("k", legacy=lambda: "L", parallel=lambda: "P") == "L"
    auth = rows(drain(client))[("legacy", "read")]
    assert (auth["checks"], auth["check_errors"]) == (0, 1)


def test_read__non_authoritative_raises__error_counted_no_check_result_unchanged(client: Turnout) -> None:
    m = client.migration("m-shadow", budget=5.0)

    def broken() -> str:
        raise ConnectionError("parallel db down")

    assert m.read("k", legacy=lambda: "L", parallel=broken) == "L"
    recorded = rows(drain(client))
    assert recorded[("parallel", "read")]["errors"] == 1
    assert recorded[("legacy", "read")]["checks"] == 0


def test_read__authoritative_raises__host_exception_propagates_unchanged(client: Turnout) -> None:
    m = client.migration("m-live", budget=5.0, order="concurrent")
    boom = KeyError("acct-7")

    def broken() -> str:
        raise boom

    with pytest.raises(KeyError) as raised:
        m.read("k", legacy=lambda: "L", parallel=broken)
    assert raised.value is boom
    assert rows(drain(client))[("parallel", "read")]["errors"] == 1


def test_read__non_authoritative_slower_than_budget__late_and_returns(client: Turnout) -> None:
    release = threading.Event()
    m = client.migration("m-shadow", budget=0.05)

    def hanging() -> str:
        release.wait(10)
        return "P"

    try:
        assert m.read("k", legacy=lambda: "L", parallel=hanging) == "L"
        assert rows(drain(client))[("parallel", "read")]["late"] == 1
    finally:
        release.set()


def test_write__non_authoritative_fails__divergence_with_key_hash_and_identifier(client: Turnout) -> None:
    m = client.migration("m-dual_write", budget=5.0, identify=lambda row: row["id"])

    def broken() -> dict[str, int]:
        raise TimeoutError("parallel store timed out")

    assert m.write("tenant-4", legacy=lambda: {"id": 42}, parallel=broken) == {"id": 42}
    batch = drain(client)
    [div] = batch["divergences"]
    assert div["key_hash"] == key_hash("tenant-4") and div["identifier"] == "42"
    assert (div["origin"], div["operation"], div["stage"], div["flag"]) == ("parallel", "write", "dual_write",
                                                                             "m-dual_write")
    assert div["error"].startswith("TimeoutError: parallel store timed out")
    assert rows(batch)[("parallel", "write")]["divergences"] == 1


def test_write__live_legacy_fails__divergence_on_legacy(client: Turnout) -> None:
    m = client.migration("m-live", budget=5.0)

    def broken() -> None:
        raise OSError("legacy gone")

    assert m.write("k", legacy=broken, parallel=lambda: "P") == "P"
    [div] = drain(client)["divergences"]
    assert (div["origin"], div["identifier"]) == ("legacy", None)


def test_write__authoritative_fails__raises_and_other_origin_not_written(client: Turnout) -> None:
    m = client.migration("m-shadow", budget=5.0)
    o = Origins()

    def broken() -> None:
        raise ValueError("constraint")

    with pytest.raises(ValueError, match="constraint"):
        m.write("k", legacy=broken, parallel=o.parallel())
    assert o.ran == []
    assert drain(client)["divergences"] == []


def test_write__identify_raises__divergence_without_identifier_and_no_raise(client: Turnout) -> None:
    m = client.migration("m-shadow", budget=5.0, identify=lambda row: row.missing)

    def broken() -> None:
        raise OSError("down")

    assert m.write("k", legacy=lambda: "saved", parallel=broken) == "saved"
    [div] = drain(client)["divergences"]
    assert div["identifier"] is None


def test_write__pool_full__divergence_not_run(client: Turnout) -> None:
    small = Turnout.offline(DOC, breaker=None, shadow_workers=1, shadow_queue=1)
    release = threading.Event()
    try:
        m = small.migration("m-shadow", budget=0.0)

        def hanging() -> None:
            release.wait(10)

        for _ in range(2):  # one running, one queued
            m.write("k", legacy=lambda: "L", parallel=hanging)
        assert m.write("k3", legacy=lambda: "L", parallel=hanging) == "L"
        divs = small._recorder.migration.pending_divergences()
        assert [d["error"] for d in divs] == ["not run: the migration pool is full"]
        assert divs[0]["key_hash"] == key_hash("k3")
    finally:
        release.set()
        small.close()


def test_awrite__non_authoritative_fails__divergence(client: Turnout) -> None:
    m = client.migration("m-live", budget=5.0, identify=str)

    async def ok() -> int:
        return 7

    async def broken() -> int:
        raise RuntimeError("legacy write failed")

    assert asyncio.run(m.awrite("k", legacy=broken, parallel=ok)) == 7
    [div] = drain(client)["divergences"]
    assert (div["origin"], div["identifier"]) == ("legacy", "7")


def test_aread__non_authoritative_hangs__late_and_returns(client: Turnout) -> None:
    m = client.migration("m-live", budget=0.05)

    async def ok() -> str:
        return "P"

    async def hanging() -> str:
        await asyncio.sleep(30)
        return "L"

    async def main() -> str:
        out = await m.aread("k", legacy=hanging, parallel=ok)
        for task in list(client._core.tasks):
            task.cancel()
        return out

    assert asyncio.run(main()) == "P"
    assert rows(drain(client))[("legacy", "read")]["late"] == 1


def test_migration__unknown_flag_or_no_ruleset__legacy_only() -> None:
    empty = Turnout.offline(None)
    try:
        o = Origins()
        m = empty.migration("nowhere")
        assert m.read("k", legacy=o.legacy(), parallel=o.parallel()) == "L"
        assert m.write("k", legacy=o.legacy(), parallel=o.parallel()) == "L"
        assert o.ran == ["legacy", "legacy"]
        assert m.stage("k").stage is Stage.OFF
    finally:
        empty.close()


@pytest.mark.parametrize("bad", [{"order": "random"}, {"budget": -1}, {"budget": float("nan")},
                                 {"compare": 3}, {"identify": "id"}])
def test_migration__bad_option__value_error(client: Turnout, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        client.migration("m-live", **bad)


def test_migration__batch_without_migrations__carries_no_new_fields(client: Turnout) -> None:
    client.decide("m-live", "k")
    assert "migrations" not in drain(client)


def test_migration__handle_type(client: Turnout) -> None:
    assert isinstance(client.migration("m-live"), Migration)


def test_testing_client__migration__inline_and_divergences_listed() -> None:
    from turnout.testing import TestClient

    client = TestClient(flags={"m": {"percentage": 0.0, "migration": {"stage": "live"}}})

    def down() -> None:
        raise OSError("legacy down")

    m = client.migration("m", identify=lambda row: row)
    assert m.write("k", legacy=down, parallel=lambda: "row-1") == "row-1"
    assert [(d["identifier"], d["origin"]) for d in client.divergences] == [("row-1", "legacy")]
