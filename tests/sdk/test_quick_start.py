"""The first hour with the SDK (issue 18): the quick start decides as written.

- a client waits for its first ruleset (``start_wait``) so the first call of a short script
  decides with the server's ruleset, and stops waiting at once when the server is down;
- a flag's ``bucket_by`` attribute missing from the attributes is warned about once per flag,
  and the decision's receipt says why (``detail``);
- ``switch(key="tenant_id")`` passes the key as the ``tenant_id`` attribute too.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fakeserver import SDK_KEY, FakeServer, free_port, make_doc, warnings_matching
from turnout import Options, Turnout, TurnoutError
from turnout.types import ErrorCode, Path, Reason

DOC = make_doc(
    7,
    **{
        "checkout": {"percentage": 100.0},
        "invoice-engine": {"percentage": 100.0, "bucket_by": "tenant_id"},
    },
)


@pytest.fixture
def live() -> Iterator[FakeServer]:
    s = FakeServer(DOC).start()
    yield s
    s.stop()


def run_script(code: str, url: str) -> str:
    """Run ``code`` as a short script of its own (a new interpreter, as a reader would)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), url, SDK_KEY],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_quick_start__first_call_of_a_short_script__decides_with_the_servers_ruleset(live: FakeServer) -> None:
    # Before start_wait, the README's "Five lines" decided legacy (PROVIDER_NOT_READY) on the first
    # call: the client had not yet fetched its ruleset.
    out = run_script(
        """
        import sys
        from turnout import Turnout

        client = Turnout(sys.argv[1], sys.argv[2])
        d = client.decide("checkout", "user-1")
        print(d.path, d.reason, d.version)
        """,
        live.url,
    )
    assert out == "parallel SPLIT 7"


def test_start_wait__zero__does_not_wait(live: FakeServer) -> None:
    live.mode = "hang"
    started = time.monotonic()
    client = Turnout(live.url, SDK_KEY, start_wait=0, stream=False)
    try:
        assert client.decide("checkout", "u").error_code is ErrorCode.PROVIDER_NOT_READY
    finally:
        live.unhang()
        client.close()
    # not a timing assertion on speed: the client did not wait the whole 5 s default either
    assert time.monotonic() - started < 5.0


def test_start_wait__server_down__ends_at_once_and_decides_legacy(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="turnout")
    client = Turnout(f"http://127.0.0.1:{free_port()}", SDK_KEY, start_wait=300.0, backoff_base=0.05,
                     backoff_max=0.2)
    try:
        # a refused connection is an outcome: the wait ended (it would otherwise last 300 s)
        d = client.decide("checkout", "u")
        assert (d.path, d.reason, d.error_code) == (Path.LEGACY, Reason.ERROR, ErrorCode.PROVIDER_NOT_READY)
        assert warnings_matching(caplog, "cannot fetch the ruleset")
    finally:
        client.close()


def test_start_wait__server_hanging__waits_then_says_so(live: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="turnout")
    live.mode = "hang"
    errors: list[TurnoutError] = []
    client = Turnout(live.url, SDK_KEY, start_wait=0.2, timeout=30.0, stream=False, on_error=errors.append)
    try:
        assert not client.ready
        assert warnings_matching(caplog, "no answer from the server within start_wait=0.2s")
        assert [e.kind for e in errors] == ["fetch"]
    finally:
        live.unhang()
        client.close()


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "5", True])
def test_start_wait__bad_value__value_error_naming_it(bad: Any) -> None:
    with pytest.raises(ValueError, match="start_wait"):
        Options(start_wait=bad)


def test_start_wait__bootstrap__ready_without_waiting_for_the_server() -> None:
    client = Turnout(f"http://127.0.0.1:{free_port()}", SDK_KEY, bootstrap=DOC, start_wait=300.0)
    try:
        assert client.ready and client.decide("checkout", "u").path is Path.PARALLEL
    finally:
        client.close()


# -- bucket_by attribute missing -----------------------------------------------------------------


def test_decide__bucket_by_attribute_missing__receipt_says_why() -> None:
    client = Turnout.offline(DOC)
    d = client.decide("invoice-engine", "tenant-42", {"country": "DE"})
    assert (d.path, d.reason, d.rule, d.bucket) == (Path.LEGACY, Reason.DEFAULT, "default", None)
    assert d.detail == "bucket_by attribute 'tenant_id' missing from the attributes: not in the split"
    bucketed = client.decide("invoice-engine", "tenant-42", {"tenant_id": "tenant-42", "country": "DE"})
    assert bucketed.path is Path.PARALLEL and bucketed.detail is None


def test_decide__bucket_by_attribute_missing__warned_once_per_flag(caplog: pytest.LogCaptureFixture) -> None:
    # The README's invoice-engine example passed the tenant as the key only: legacy, silently.
    caplog.set_level(logging.WARNING, logger="turnout")
    doc = make_doc(3, a={"percentage": 50.0, "bucket_by": "tenant_id"}, b={"percentage": 50.0, "bucket_by": "org"})
    errors: list[TurnoutError] = []
    client = Turnout.offline(doc, on_error=errors.append)
    for i in range(50):
        client.decide("a", f"t-{i}", {"country": "DE"})
        client.decide("b", f"t-{i}")
        client.run("a", f"t-{i}", None, legacy=lambda: 1, parallel=lambda: 2)
    assert warnings_matching(caplog, "flag 'a': bucket_by attribute 'tenant_id' missing") != []
    assert len(warnings_matching(caplog, "flag 'a'")) == 1
    assert len(warnings_matching(caplog, "flag 'b': bucket_by attribute 'org' missing")) == 1
    assert [e.kind for e in errors] == ["decision", "decision"]
    batch = client._recorder.drain(sdk_version="t", code_version=None)
    assert batch is not None and all(not row.get("errors") for row in batch["flags"])


def test_switch__key_named_tenant_id__bucketed_by_that_tenant() -> None:
    # @switch(key="tenant_id") on a flag bucketed by tenant_id decided legacy/DEFAULT for everyone.
    client = Turnout.offline(DOC)

    def old_total(tenant_id: str, amount: int) -> str:
        return "legacy"

    @client.switch("invoice-engine", key="tenant_id", legacy=old_total)
    def new_total(tenant_id: str, amount: int) -> str:
        return "parallel"

    assert new_total("tenant-42", 10) == "parallel"
    assert new_total(tenant_id="tenant-7", amount=3) == "parallel"


def test_switch__attributes_function_gives_the_attribute__its_value_wins() -> None:
    doc = make_doc(2, f={"percentage": 0.0, "bucket_by": "tenant_id", "include_cohorts": ["pilot"]})
    doc["cohorts"] = {"pilot": {"match_on": "tenant_id", "include": ["t-other"]}}
    client = Turnout.offline(doc)

    @client.switch("f", key="tenant_id", attributes=lambda tenant_id: {"tenant_id": "t-other"},
                   legacy=lambda tenant_id: "legacy")
    def new(tenant_id: str) -> str:
        return "parallel"

    assert new("t-1") == "parallel"  # the pilot cohort saw the attribute given, not the key
