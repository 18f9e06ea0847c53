"""turnout.testing: what a host application uses in its own tests."""

from __future__ import annotations

import asyncio

from turnout import Decision, Path, Reason, Turnout
from turnout.testing import TestClient, client, forced, ruleset


def test_ruleset__short_specs__valid_document() -> None:
    doc = ruleset({"a": "parallel", "b": "legacy", "c": 25, "d": {"enabled": False}}, version=3)
    c = Turnout.offline(doc)
    assert c.version == 3
    assert c.decide("a", "u").parallel
    assert c.decide("b", "u").path is Path.LEGACY
    assert c.decide("d", "u").reason is Reason.DISABLED
    c.close()


def test_client__in_memory__no_network_and_records_decisions() -> None:
    c = client(flags={"invoice-engine": "parallel"})
    assert c.ready and c._transport is None and c._sync_thread is None
    assert c.decide("invoice-engine", "t1").parallel
    assert [d.flag for d in c.decisions] == ["invoice-engine"]


def test_forced__context_manager__pins_and_restores() -> None:
    c = TestClient(flags={"invoice-engine": 0})
    assert not c.decide("invoice-engine", "t1").parallel
    with forced(c, {"invoice-engine": "parallel"}) as same:
        assert same is c
        d = c.decide("invoice-engine", "t1")
        assert d.parallel and d.reason is Reason.STATIC and d.rule == "forced"
        with forced(c, {"invoice-engine": "legacy", "unknown": "parallel"}):
            assert not c.decide("invoice-engine", "t1").parallel
            assert c.decide("unknown", "t1").parallel  # even flags the ruleset lacks
        assert c.decide("invoice-engine", "t1").parallel
    assert not c.decide("invoice-engine", "t1").parallel
    assert c.decide("unknown", "t1").error_code == "FLAG_NOT_FOUND"


def test_forced__decorator__sync_and_async() -> None:
    c = Turnout.offline(ruleset({"f": "legacy"}))

    @forced(c, {"f": "parallel"})
    def check() -> bool:
        return c.decide("f", "k").parallel

    @forced(c, {"f": "parallel"})
    async def acheck() -> bool:
        return c.decide("f", "k").parallel

    assert check() and asyncio.run(acheck())
    assert not c.decide("f", "k").parallel
    c.close()


def test_forced__real_client_survives_ruleset_updates() -> None:
    c = Turnout.offline(ruleset({"f": "legacy"}))
    with forced(c, {"f": "parallel"}):
        c._install(__import__("turnout.engine").engine.compile_ruleset(ruleset({"f": "legacy"}, version=2)), etag=None)
        assert c.decide("f", "k").parallel
    assert c.decide("f", "k").version == 2
    c.close()


def test_forced__with_compare__shadow_runs_inline_and_mismatch_visible() -> None:
    c = TestClient(flags={"f": "legacy"})
    with c.force({"f": "parallel"}, compare=True):
        out = c.run("f", "k", legacy=lambda: {"total": 1}, parallel=lambda: {"total": 2})
    assert out == {"total": 2}
    (m,) = c.mismatches  # inline: no waiting
    assert m["legacy"] == {"total": 1} and m["parallel"] == {"total": 2}
    batch = c.metrics()
    assert batch is not None and batch["flags"][0]["mismatches"] == 1
    assert c.mismatches == []


def test_forced__full_decision__used_as_is() -> None:
    c = TestClient()
    pinned = Decision("f", Path.PARALLEL, Reason.TARGETING_MATCH, rule="override", version=9)
    with c.force({"f": pinned}):
        assert c.decide("f", "anyone") is pinned


def test_testclient__arun_compares_inline() -> None:
    c = TestClient(flags={"f": {"percentage": 0.0, "compare_percentage": 100.0}})

    async def old() -> int:
        return 1

    async def new() -> int:
        return 2

    assert asyncio.run(c.arun("f", "k", legacy=old, parallel=new)) == 1
    assert len(c.mismatches) == 1
