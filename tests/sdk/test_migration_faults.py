"""``migration().read()/write()`` never raise into the host beyond the authoritative origin: any argument
types, any host callable failing, no server at all (issue 15, the SDK fault tests for read/write)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from turnout import Stage, Turnout
from turnout.testing import TestClient

DOC = {"schema": 1, "environment": "t", "version": 1,
       "cohorts": {"pilot": {"include": ["k-1"]}},
       "flags": {f"m-{s.value}": {"enabled": True, "percentage": 0.0, "bucket_by": "tenant",
                                  "migration": {"stage": s.value} if s is Stage.COMPLETE else {
                                      "stage": s.value, "cohorts": [{"cohort": "pilot", "stage": s.value}]}}
                 for s in Stage}}
FLAGS = [f"m-{s.value}" for s in Stage] + ["missing"]
odd = st.one_of(st.none(), st.integers(), st.text(max_size=8), st.lists(st.integers(), max_size=2),
                st.dictionaries(st.text(max_size=4), st.one_of(st.integers(), st.text(max_size=4), st.none()),
                                max_size=3), st.just(float("nan")), st.just(object()))
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
CLIENTS = [TestClient(DOC), Turnout.offline(DOC), Turnout(None, None)]


class HostError(Exception):
    pass


def broken() -> str:
    raise HostError


@SETTINGS
@given(flag=st.sampled_from(FLAGS), key=odd, attributes=odd, compare=odd)
def test_read_write__any_arguments__return_an_origin_result(flag: str, key: Any, attributes: Any,
                                                            compare: Any) -> None:
    for client in CLIENTS:
        m = client.migration(flag, budget=1.0)
        assert m.read(key, attributes, legacy=lambda: "old", parallel=lambda: "new", compare=compare) in (
            "old", "new")
        assert m.write(key, attributes, legacy=lambda: "old", parallel=lambda: "new") in ("old", "new")


@SETTINGS
@given(flag=st.sampled_from(FLAGS), key=odd, attributes=odd)
def test_read_write__host_callables_raise__only_host_exceptions_escape(flag: str, key: Any, attributes: Any) -> None:
    for client in CLIENTS:
        m = client.migration(flag, budget=1.0, identify=lambda value: 1 / 0)
        for legacy, parallel in ((broken, lambda: "new"), (lambda: "old", broken), (broken, broken)):
            for call in (m.read, m.write):
                try:
                    result = call(key, attributes, legacy=legacy, parallel=parallel)
                except HostError:
                    continue
                assert result in ("old", "new")


@SETTINGS
@given(flag=st.sampled_from(FLAGS), key=odd, attributes=odd)
def test_aread_awrite__host_coroutines_raise__only_host_exceptions_escape(flag: str, key: Any,
                                                                          attributes: Any) -> None:
    async def ok() -> str:
        return "ok"

    async def fails() -> str:
        raise HostError

    async def main(m: Any) -> None:
        for legacy, parallel in ((fails, ok), (ok, fails), (ok, ok)):
            for call in (m.aread, m.awrite):
                try:
                    assert await call(key, attributes, legacy=legacy, parallel=parallel) == "ok"
                except HostError:
                    pass

    for client in CLIENTS:
        asyncio.run(main(client.migration(flag, budget=1.0)))


def test_read_write__no_server_listening__legacy_only_and_no_raise() -> None:
    """The decision is local: with the server unreachable and no ruleset yet, every subject is 'off' and
    the call runs legacy alone — nothing waits for the network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = Turnout(f"http://127.0.0.1:{port}", "sdk_test", timeout=0.2, backoff_base=0.1, backoff_max=0.2)
    try:
        m = client.migration("accounts-store")
        ran: list[str] = []
        assert m.write("k", legacy=lambda: ran.append("legacy") or "L", parallel=lambda: ran.append("p")) == "L"
        assert m.read("k", legacy=lambda: "L", parallel=broken) == "L"
        assert ran == ["legacy"] and m.stage("k").stage is Stage.OFF
    finally:
        client.close()
