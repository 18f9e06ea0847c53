"""Problems are announced once and their resolution once: the host's log tells a story, not a flood."""

from __future__ import annotations

import logging

import pytest
from fakeserver import FakeServer, MakeClient, free_port, make_client, make_doc, wait_for, warnings_matching
from turnout import ErrorCode

__all__ = ["make_client"]  # fixture, imported for pytest


def test_not_ready__warned_once__resolved_once_when_a_ruleset_arrives(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="turnout")
    port = free_port()
    client = make_client(f"http://127.0.0.1:{port}")
    for _ in range(20):
        assert client.decide("checkout", "u1").error_code is ErrorCode.PROVIDER_NOT_READY
    assert len(warnings_matching(caplog, "before any ruleset")) == 1
    late = FakeServer(make_doc(4))
    late.port = port
    late.start()
    try:
        assert client.wait_until_ready(3)
        assert client.decide("checkout", "u1").error_code is None

        def resolved() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.getMessage() == "turnout.resolved: decision:not-ready"]

        assert wait_for(lambda: len(resolved()) == 1)
        for _ in range(20):
            client.decide("checkout", "u1")
        assert len(resolved()) == 1 and len(warnings_matching(caplog, "before any ruleset")) == 1
    finally:
        client.close()
        late.stop()
