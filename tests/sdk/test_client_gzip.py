"""The SDK asks for the ruleset gzip-compressed and decodes it (stdlib ``zlib``), bounded by
``max_ruleset_bytes`` after decoding; a body it cannot decode is an unusable ruleset (kept the
current one, reported), never an exception in the host."""

from __future__ import annotations

import gzip

from fakeserver import FakeServer, MakeClient, make_client, make_doc, server, wait_for, warnings_matching
from turnout._sync import decoded_body

__all__ = ["make_client", "server"]  # fixtures, imported for pytest


def test_client__gzip_ruleset__asked_for_and_decoded(server: FakeServer, make_client: MakeClient) -> None:
    server.gzip = lambda body: gzip.compress(body, mtime=0)
    server.set_ruleset(make_doc(4, split={"percentage": 100.0}))
    client = make_client(server.url)
    assert client.wait_until_ready(3)
    assert client.version == 4
    assert client.decide("split", "user-1").path == "parallel"
    assert server.accept_encodings and all("gzip" in (h or "") for h in server.accept_encodings)


def test_client__corrupt_gzip__keeps_its_ruleset_and_reports(server: FakeServer, make_client: MakeClient,
                                                            caplog) -> None:  # type: ignore[no-untyped-def]
    client = make_client(server.url, poll_interval=0.2, stream=False)
    assert client.wait_until_ready(3)
    server.gzip = lambda body: b"\x1f\x8b\x08\x00not gzip at all"
    server.set_ruleset(make_doc(5))
    assert wait_for(lambda: warnings_matching(caplog, "unusable ruleset"), timeout=5)
    assert client.version == 1  # kept


def test_decoded_body__gzip_bomb__refused_beyond_the_limit() -> None:
    bomb = gzip.compress(b"0" * 2_000_000)
    try:
        decoded_body(bomb, "gzip", 1_000_000)
    except ValueError as exc:
        assert "larger than" in str(exc)
    else:
        raise AssertionError("a body over the limit after decoding was accepted")
    assert decoded_body(bomb, "gzip", 2_000_000) == b"0" * 2_000_000


def test_decoded_body__identity_truncated_unknown() -> None:
    assert decoded_body(b"{}", None, 10) == b"{}"
    assert decoded_body(b"{}", "identity", 10) == b"{}"
    for body, coding in ((gzip.compress(b"x" * 1000)[:-12], "gzip"), (b"{}", "br"), (b"garbage", "gzip")):
        try:
            decoded_body(body, coding, 10_000)
        except ValueError:
            continue
        raise AssertionError(f"{coding} {body!r} was accepted")
