"""arun() and async switch: the same semantics as run(), with asyncio tasks as shadows."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakeserver import make_doc
from turnout import Turnout

DOC = make_doc(
    1,
    **{
        "to-parallel": {"percentage": 100.0},
        "cmp-legacy": {"percentage": 0.0, "compare_percentage": 100.0},
    },
)


def rows(client: Turnout) -> dict[tuple[str, str], dict[str, Any]]:
    batch = client._recorder.drain(sdk_version="t", code_version=None)
    assert batch is not None
    return {(r["flag"], r["path"]): dict(r) for r in batch["flags"]}


async def settle(client: Turnout) -> None:
    """Let the shadow tasks finish (each ends by its compare_timeout; 10 s is only a guard)."""
    if client._tasks:
        await asyncio.wait(set(client._tasks), timeout=10)


def test_arun__returns_chosen_path_and_compares_in_a_task() -> None:
    client = Turnout.offline(DOC, breaker=None)

    async def main() -> None:
        async def old() -> int:
            return 1

        async def new() -> int:
            return 2

        assert await client.arun("to-parallel", "u1", legacy=old, parallel=new) == 2
        assert await client.arun("cmp-legacy", "u1", legacy=old, parallel=new) == 1
        await settle(client)

    asyncio.run(main())
    r = rows(client)
    assert r[("cmp-legacy", "legacy")]["mismatches"] == 1
    assert r[("to-parallel", "parallel")]["calls"] == 1
    client.close()


def test_arun__slow_shadow__cancelled_at_timeout_caller_not_slowed() -> None:
    client = Turnout.offline(DOC, breaker=None)
    started: list[bool] = []
    cancelled: list[bool] = []

    async def main() -> None:
        async def old() -> int:
            return 1

        async def slow() -> int:
            started.append(True)
            try:
                await asyncio.Event().wait()  # never answers: only the timeout ends it
            except asyncio.CancelledError:
                cancelled.append(True)
                raise
            return 2

        assert await client.arun("cmp-legacy", "u1", legacy=old, parallel=slow, compare_timeout=0.05) == 1
        # The caller has its answer before the shadow even ran: it did not wait for it.
        assert (started, cancelled, len(client._tasks)) == ([], [], 1)
        await settle(client)
        assert (started, cancelled, len(client._tasks)) == ([True], [True], 0)

    asyncio.run(main())
    assert rows(client)[("cmp-legacy", "legacy")]["compare_timeouts"] == 1
    client.close()


def test_arun__bounded_in_flight_shadows__extra_skipped() -> None:
    client = Turnout.offline(DOC, async_shadow_limit=2, breaker=None)

    async def main() -> None:
        async def old() -> int:
            return 1

        async def slow() -> int:
            await asyncio.sleep(0.05)
            return 1

        for i in range(5):
            await client.arun("cmp-legacy", f"u{i}", legacy=old, parallel=slow)
        await settle(client)

    asyncio.run(main())
    r = rows(client)[("cmp-legacy", "legacy")]
    assert (r["comparisons"], r["compare_skipped"]) == (2, 3)
    assert client._async_inflight == 0
    client.close()


def test_arun__parallel_raises__fallback_or_propagate() -> None:
    client = Turnout.offline(DOC, breaker=None)

    async def old() -> str:
        return "old"

    async def broken() -> str:
        raise ValueError("new is broken")

    assert asyncio.run(client.arun("to-parallel", "u", legacy=old, parallel=broken)) == "old"
    with pytest.raises(ValueError):
        asyncio.run(client.arun("to-parallel", "u", legacy=old, parallel=broken, fallback=False))
    r = rows(client)[("to-parallel", "parallel")]
    assert (r["errors"], r["fallbacks"]) == (2, 1)
    client.close()


def test_switch__coroutine_function__routed_through_arun() -> None:
    client = Turnout.offline(DOC, breaker=None)

    async def old_price(sku: str) -> int:
        return 10

    @client.switch("to-parallel", key="sku", legacy=old_price)
    async def new_price(sku: str) -> int:
        return 12

    assert asyncio.iscoroutinefunction(new_price)
    assert asyncio.run(new_price("sku-1")) == 12
    client.close()
