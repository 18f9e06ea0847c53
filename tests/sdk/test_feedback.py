"""client.feedback(): the path recorded, redaction and caps, never raising, never on the decision path."""

from __future__ import annotations

from typing import Any

import pytest
from fakeserver import FakeServer, MakeClient, make_client, make_doc, server, wait_for
from turnout import Turnout, TurnoutError
from turnout.feedback import MAX_ATTRIBUTES, MAX_COMMENT_CHARS, MAX_PENDING, scrub_text
from turnout.wire import key_hash

__all__ = ["make_client", "server"]

DOC = make_doc(4, on={"percentage": 100.0}, off={"percentage": 0.0})


def offline(**options: Any) -> Turnout:
    return Turnout.offline(DOC, **options)


def test_feedback__path_decided_locally__recorded_without_counting_a_decision() -> None:
    client = offline()
    assert client.feedback("on", "u1", score=5, comment="fast") is True
    assert client.feedback("off", "u1", score=2) is True
    assert client.feedback("on", "u2", score=1, path="legacy") is True  # the host knows better
    entries = client._feedback.pending()
    assert [(e["flag"], e["path"], e["path_source"], e["version"], e["score"]) for e in entries] == [
        ("on", "parallel", "decided", 4, 5), ("off", "legacy", "decided", 4, 2), ("on", "legacy", "given", None, 1)]
    assert entries[0]["key_hash"] == key_hash("u1") and "u1" not in str(entries)
    batch = client._recorder.drain(sdk_version="t", code_version=None)
    assert batch is None  # feedback is not a decision: no calls counted


def test_feedback__comment_and_attributes__scrubbed_redacted_and_capped() -> None:
    seen: list[tuple[str, Any]] = []

    def redact(flag: str, value: Any) -> Any:
        seen.append((flag, value))
        return value.replace("Acme GmbH", "[customer]") if isinstance(value, str) else {
            k: v for k, v in value.items() if k != "internal"}

    client = offline(redact=redact)
    attributes = {"plan": "pro", "email": "a@b.example", "api_key": "k", "internal": 1, "list": [1, 2],
                  "note": "call +49 170 1234567", **{f"z{i:02}": i for i in range(MAX_ATTRIBUTES + 5)}}
    assert client.feedback("on", "u1", comment="Acme GmbH: mail bob@example.org, token ab12cd34ef56gh78ij90kl12mn",
                           attributes=attributes) is True
    entry = client._feedback.pending()[0]
    assert entry["comment"] == "[customer]: mail [email], token [token]"
    assert entry["score"] is None and entry["truncated"] is True
    attrs = entry["attributes"]
    assert len(attrs) == MAX_ATTRIBUTES and "internal" not in attrs and "list" not in attrs
    assert attrs["email"] == "[redacted]" and attrs["api_key"] == "[redacted]"
    assert attrs["note"] == "call [number]" and attrs["plan"] == "pro"
    assert [flag for flag, _ in seen] == ["on", "on"]  # the comment, then the attributes

    client.feedback("on", "u2", comment="x" * (MAX_COMMENT_CHARS + 50))
    long = client._feedback.pending()[1]
    assert len(long["comment"] or "") == MAX_COMMENT_CHARS and long["truncated"] is True


def test_scrub_text__personal_data__placeholders_and_plain_words_kept() -> None:
    assert scrub_text("Ann <ann.lee+x@mail.example.com> paid 4111-1111-1111-1111 on 2026") == \
        "Ann <[email]> paid [number] on 2026"
    assert scrub_text("the new page is 3x faster\x00") == "the new page is 3x faster"


@pytest.mark.parametrize(("args", "kwargs", "problem"), [
    (("on", None), {"score": 3}, "feedback:key"),
    (("on", ""), {"score": 3}, "feedback:key"),
    ((5, "u"), {"score": 3}, "feedback:flag"),
    (("on", "u"), {"score": 6}, "feedback:score"),
    (("on", "u"), {"score": True}, "feedback:score"),
    (("on", "u"), {"score": 4.5}, "feedback:score"),
    (("on", "u"), {}, "feedback:empty"),
    (("on", "u"), {"comment": "   "}, "feedback:empty"),
    (("on", "u"), {"comment": 42}, "feedback:comment"),
    (("on", "u"), {"score": 3, "path": "sideways"}, "feedback:path"),
    (("on", "u"), {"score": 3, "attributes": ["a"]}, "feedback:attributes"),
])
def test_feedback__bad_input__false_reported_never_raises(args: tuple[Any, ...], kwargs: dict[str, Any],
                                                          problem: str) -> None:
    errors: list[TurnoutError] = []
    client = offline(on_error=errors.append)
    assert client.feedback(*args, **kwargs) is False
    assert [e.problem for e in errors] == [problem] and errors[0].kind == "feedback"
    assert client._feedback.pending() == []


def test_feedback__redact_hook_raises__dropped_fail_closed() -> None:
    errors: list[TurnoutError] = []

    def broken(flag: str, value: Any) -> Any:
        raise RuntimeError("no")

    client = offline(on_error=errors.append)
    assert client.feedback("on", "u", score=3, comment="hi", redact=broken) is False
    assert client.feedback("on", "u", score=3, comment="hi", redact=lambda f, v: 42) is False
    assert [e.kind for e in errors] == ["redact", "feedback"]
    assert client._feedback.pending() == []
    assert client.feedback("on", "u", score=3, redact=broken) is True  # nothing to redact: recorded


def test_feedback__queue_full__bounded_and_dropped_counted() -> None:
    client = offline()
    for i in range(MAX_PENDING + 3):
        client.feedback("on", f"u{i}", score=3)
    assert len(client._feedback.pending()) == MAX_PENDING and client._feedback.dropped == 3


def test_feedback__online__batched_to_the_server_off_the_calling_thread(server: FakeServer,
                                                                      make_client: MakeClient) -> None:
    server.set_ruleset(DOC)
    client = make_client(server.url)
    assert client.wait_until_ready(3)
    server.feedback_mode = "hang"  # the server holds the post: feedback() must not wait for it
    for i in range(3):
        assert client.feedback("on", f"u{i}", score=4, comment="ok") is True
    assert wait_for(lambda: server.held["feedback"] == 1)
    assert client.feedback("on", "late", score=2) is True  # returned while the server holds the post
    assert client.decide("on", "late").parallel  # decisions are untouched by a hung feedback post
    server.feedback_mode = "ok"
    server.unhang()
    assert wait_for(lambda: sum(len(b["feedback"]) for b in server.feedback) == 4, timeout=5)
    batch = server.feedback[0]
    assert batch["sdk"]["name"] == "turnout-python"
    assert {e["key_hash"] for b in server.feedback for e in b["feedback"]} == {
        key_hash(k) for k in ("u0", "u1", "u2", "late")}
    assert wait_for(lambda: client._feedback.pending() == [])  # the 202 read after the server stored it
    assert server.expired == 0


def test_feedback__server_refuses_or_is_down__dropped_after_bounded_tries_never_raises(
        server: FakeServer, make_client: MakeClient) -> None:
    errors: list[TurnoutError] = []
    server.set_ruleset(DOC)
    client = make_client(server.url, on_error=errors.append)
    assert client.wait_until_ready(3)
    server.feedback_mode = "400"  # refused for good: dropped at once, not retried
    assert client.feedback("on", "u", score=3) is True
    assert wait_for(lambda: not client._feedback.pending(), timeout=5)
    assert server.counts["feedback_posts"] == 1 and client._feedback.dropped == 1
    server.feedback_mode = "ok"
    server.stop()  # down: close() tries once more, then gives up without raising
    assert client.feedback("on", "u2", score=3) is True
    client.close()
    assert client._feedback.pending() == [] and client._feedback.dropped == 2
    assert any(e.problem == "feedback:send" for e in errors)


def test_feedback__flush__sends_now(server: FakeServer, make_client: MakeClient) -> None:
    server.set_ruleset(DOC)
    client = make_client(server.url)
    assert client.wait_until_ready(3)
    client.feedback("off", "u", score=5, attributes={"tenant_id": "t1"})
    assert client.flush() is True
    assert [e["path"] for b in server.feedback for e in b["feedback"]] == ["legacy"]
