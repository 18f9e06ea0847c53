"""Member lists of large cohorts (``turnout.members``; docs/sdk-protocol.md, "Member lists"): exact
decisions from hashed lists, the document format and deltas, and the sync thread fetching lists off
the decision path, keeping the last good one on failure."""

from __future__ import annotations

import copy
import gzip
import random
from typing import Any

import pytest
from fakeserver import FAST, make_client, make_doc, server, wait_for  # noqa: F401  (fixtures)
from turnout import engine
from turnout.members import (
    HASH_BYTES,
    MemberDelta,
    MemberList,
    MemberListError,
    decode,
    diff,
    encode,
    encode_delta,
    member_hash,
)
from turnout.types import ErrorCode, Path, Reason

MILLION = 1_000_000


def _doc(version: int = 1, members_version: int = 1, *, match_on: str | None = None, **flags: Any) -> Any:
    doc: Any = make_doc(version, **(flags or {"pilot-flag": {"include_cohorts": ["big"], "percentage": 0.0},
                                             "guard-flag": {"exclude_cohorts": ["big"], "percentage": 100.0}}))
    doc["schema"] = 2
    doc["cohorts"] = {"big": {"match_on": match_on, "rules": None,
                              "members": {"version": members_version, "count": 3}}}
    return doc


@pytest.fixture(scope="module")
def million() -> tuple[MemberList, list[str]]:
    """A million included members, built as the server builds them."""
    values = [f"user-{i}" for i in range(MILLION)]
    return MemberList.from_values("big", 1, values), values


def test_million_member_cohort__every_member_and_sampled_non_members__decide_exactly_as_the_list_says(million):
    listed, values = million
    ruleset = engine.compile_ruleset(_doc(), {"big": listed})
    decide = ruleset.decide
    parallel = Path.PARALLEL
    # Every member of the list, through the engine's hot path.
    assert sum(1 for v in values if decide("pilot-flag", v).path is parallel) == MILLION
    assert not any(decide("guard-flag", v).path is parallel for v in values[::97])
    member = decide("pilot-flag", "user-424242")
    assert (member.reason, member.rule) == (Reason.TARGETING_MATCH, "cohort:big")
    # Non-members: none is taken for a member (the split is 0% for the include flag, 100% for the exclude one).
    rng = random.Random(14)
    outsiders = [f"user-{MILLION + rng.randrange(10**9)}" for _ in range(15_000)]
    outsiders += [f"{rng.random()}" for _ in range(5_000)] + ["", "USER-1", "user-01", "user-1 ", "user-1000000"]
    for key in outsiders:
        assert decide("pilot-flag", key).path is Path.LEGACY, key
        if key:
            assert decide("guard-flag", key).path is parallel, key
    # The same answers after the document travels (encode → decode).
    loaded = decode(encode(listed))
    assert isinstance(loaded, MemberList)
    again = engine.compile_ruleset(_doc(), {"big": loaded}).decide
    assert all(again("pilot-flag", v).path is parallel for v in values[::101])
    assert not any(again("pilot-flag", k).path is parallel for k in outsiders)
    assert listed.nbytes < 9 * 1024 * 1024  # 8 bytes per member + the bucket index


def test_member_list__exclude_wins_and_match_on_attribute__as_inline_lists():
    listed = MemberList.from_values("big", 4, include=["t-1", "t-2", "42"], exclude=["t-2", "t-9"])
    inline = _doc(match_on="tenant")
    inline["schema"] = 1
    inline["cohorts"]["big"] = {"match_on": "tenant", "rules": {"attr": "plan", "op": "eq", "values": ["pro"]},
                                "include": ["t-1", "t-2", "42"], "exclude": ["t-2", "t-9"]}
    referenced = _doc(match_on="tenant")
    referenced["cohorts"]["big"]["rules"] = inline["cohorts"]["big"]["rules"]
    a = engine.compile_ruleset(inline)
    b = engine.compile_ruleset(referenced, {"big": listed})
    for attrs in ({"tenant": "t-1"}, {"tenant": "t-2"}, {"tenant": "t-9", "plan": "pro"}, {"tenant": 42},
                  {"tenant": "t-3", "plan": "pro"}, {"tenant": "t-3"}, {}, {"plan": "pro"}, None):
        for flag in ("pilot-flag", "guard-flag"):
            assert a.decide(flag, "k", attrs) == b.decide(flag, "k", attrs), (flag, attrs)
    assert engine.explain_cohort(b, "big", "k", {"tenant": "t-2"}) == (False, "excluded: tenant 't-2' is listed in "
                                                                               "exclude")


def test_member_list_reference__list_not_loaded__flags_using_it_decide_legacy_not_ready():
    ruleset = engine.compile_ruleset(_doc())
    d = ruleset.decide("guard-flag", "user-1")
    assert (d.path, d.reason, d.error_code) == (Path.LEGACY, Reason.ERROR, ErrorCode.PROVIDER_NOT_READY)
    assert "member list of cohort 'big' not loaded" in (d.detail or "")
    assert ruleset.member_refs == {"big": 1} and ruleset.member_lists == {}
    # A killed flag is still DISABLED; a flag without the cohort is unaffected.
    doc = _doc()
    doc["flags"]["pilot-flag"]["enabled"] = False
    doc["flags"]["other"] = make_doc()["flags"]["checkout"]
    ruleset = engine.compile_ruleset(doc)
    assert ruleset.decide("pilot-flag", "user-1").reason is Reason.DISABLED
    assert ruleset.decide("other", "user-1").reason in (Reason.SPLIT, Reason.DEFAULT)


def test_member_list_reference__old_schema_reader__refuses_the_document():
    """An SDK that predates references accepts schema 1 only: a document with a reference is schema 2, so
    such an SDK refuses it and keeps its last good ruleset (it never reads the cohort as empty)."""
    doc = _doc()
    assert doc["schema"] == 2
    with pytest.raises(engine.RulesetError, match="inline"):
        bad = copy.deepcopy(doc)
        bad["cohorts"]["big"]["include"] = ["x"]
        engine.compile_ruleset(bad)
    with pytest.raises(engine.RulesetError, match=r"members\.version"):
        bad = copy.deepcopy(doc)
        bad["cohorts"]["big"]["members"] = {"version": "7"}
        engine.compile_ruleset(bad)


def test_member_list_document__corrupt_or_foreign__refused_with_a_named_problem():
    body = encode(MemberList.from_values("big", 2, ["a", "b", "c"], ["d"]))
    for bad, problem in [(b"nope", "not a TMBR1"), (body[:-3], "trailing|truncated|sections"),
                         (body.replace(b'"sha256/80"', b'"md5/128xx"'), "unsupported hash"),
                         (body + b"x", "trailing")]:
        with pytest.raises(MemberListError, match=problem):
            decode(bad)


def test_member_list_delta__applied__equals_the_new_list_and_is_small():
    values = [f"user-{i}" for i in range(50_000)]
    old = MemberList.from_values("big", 3, values, ["banned-1"])
    new = MemberList.from_values("big", 4, [*values[10:], "fresh-1", "fresh-2"], ["banned-1", "banned-2"])
    delta = diff(old, new)
    assert delta is not None
    assert (len(delta.add_include), len(delta.remove_include), len(delta.add_exclude), len(delta.remove_exclude)) \
        == (2, 10, 1, 0)
    wire = encode_delta(delta)
    assert len(wire) < 300
    decoded = decode(wire)
    assert isinstance(decoded, MemberDelta)
    assert encode(old.patched(decoded)) == encode(new)
    with pytest.raises(MemberListError):
        new.patched(decoded)  # not the version it starts from
    assert diff(old, MemberList.from_values("big", 5, values, salt="other")) is None


def test_member_hash__collision_among_members__salt_changes_until_none():
    from turnout import members as members_module

    listed = MemberList.from_values("big", 1, ["a", "b"])
    assert listed.salt == "big" and listed.lookup("a") == 1 and listed.lookup("zz") == 0
    assert len(member_hash("big", "a")) == HASH_BYTES
    # Force a collision: two values whose hashes are made equal by a salt that maps them alike.
    original = members_module.hashlib.sha256

    class Colliding:
        def __init__(self, data: bytes = b"") -> None:
            self._data = data

        def copy(self) -> Colliding:
            return Colliding(self._data)

        def update(self, more: bytes) -> None:
            self._data += more

        def digest(self) -> bytes:
            if self._data.startswith(b"big/"):  # the first salt: every value collides
                return b"\x00" * 32
            return original(self._data).digest()

    members_module.hashlib.sha256 = Colliding  # type: ignore[assignment]
    try:
        resalted = MemberList.from_values("big", 1, ["a", "b"])
    finally:
        members_module.hashlib.sha256 = original  # type: ignore[assignment]
    assert resalted.salt == "big#1"
    assert {resalted.lookup("a"), resalted.lookup("b"), resalted.lookup("c")} == {1, 0}


# -- the sync thread ------------------------------------------------------------------------------


def test_sync__member_list_referenced__fetched_plain_and_decisions_exact(server, make_client):  # noqa: F811
    listed = MemberList.from_values("big", 1, ["user-1", "user-2"], ["user-3"])
    server.member_lists["big"] = encode(listed)
    server.gzip = gzip.compress
    server.set_ruleset(_doc())
    client = make_client(server.url, **FAST)
    assert wait_for(lambda: client.decide("pilot-flag", "user-1").path is Path.PARALLEL)
    assert client.decide("pilot-flag", "user-9").path is Path.LEGACY
    assert client.decide("guard-flag", "user-1").reason is Reason.TARGETING_MATCH  # a member: excluded from it
    assert client.decide("guard-flag", "user-3").reason is Reason.SPLIT  # excluded from the cohort: not a member
    assert "members=1" in server.ruleset_queries[0]
    assert server.member_queries[0] == ("big", "")
    assert server.counts["members_gzip"] == 0  # hashes do not compress: the SDK does not ask for gzip


def test_sync__member_list_fetch_fails__last_good_list_kept_then_new_one_installed(server, make_client):  # noqa: F811
    v1 = MemberList.from_values("big", 1, ["user-1"])
    server.member_lists["big"] = encode(v1)
    server.set_ruleset(_doc(1, 1))
    client = make_client(server.url, **FAST)
    assert wait_for(lambda: client.decide("pilot-flag", "user-1").path is Path.PARALLEL)
    # The list moves to version 2 (user-1 out, user-2 in) while its endpoint fails.
    server.members_mode = "500"
    server.member_lists["big"] = encode(MemberList.from_values("big", 2, ["user-2"]))
    server.set_ruleset(_doc(2, 2))
    assert wait_for(lambda: client.version == 2)
    assert wait_for(lambda: server.counts["members"] >= 3)
    assert client.decide("pilot-flag", "user-1").path is Path.PARALLEL  # the last good list (version 1)
    assert client.decide("pilot-flag", "user-2").path is Path.LEGACY
    server.members_mode = "ok"
    assert wait_for(lambda: client.decide("pilot-flag", "user-2").path is Path.PARALLEL)
    assert client.decide("pilot-flag", "user-1").path is Path.LEGACY
    assert ("big", "since=1") in server.member_queries


def test_sync__no_list_ever_loaded__legacy_not_ready_until_it_arrives(server, make_client):  # noqa: F811
    server.members_mode = "500"
    server.member_lists["big"] = encode(MemberList.from_values("big", 1, ["user-1"]))
    server.set_ruleset(_doc())
    client = make_client(server.url, **FAST)
    assert wait_for(lambda: client.version == 1)
    assert wait_for(lambda: server.counts["members"] >= 2)
    d = client.decide("pilot-flag", "user-1")
    assert (d.path, d.error_code) == (Path.LEGACY, ErrorCode.PROVIDER_NOT_READY)
    server.members_mode = "ok"
    assert wait_for(lambda: client.decide("pilot-flag", "user-1").path is Path.PARALLEL)


def test_sync__member_list_changes__only_the_delta_is_fetched(server, make_client):  # noqa: F811
    values = [f"user-{i}" for i in range(20_000)]
    v1 = MemberList.from_values("big", 1, values)
    v2 = MemberList.from_values("big", 2, [*values[1:], "user-new"])
    server.member_lists["big"] = encode(v1)
    server.set_ruleset(_doc(1, 1))
    client = make_client(server.url, **FAST)
    assert wait_for(lambda: client.decide("pilot-flag", "user-0").path is Path.PARALLEL)
    delta = diff(v1, v2)
    assert delta is not None
    server.member_deltas[("big", 1)] = encode_delta(delta)
    server.member_lists["big"] = encode(v2)
    server.set_ruleset(_doc(2, 2))
    assert wait_for(lambda: client.decide("pilot-flag", "user-new").path is Path.PARALLEL)
    assert client.decide("pilot-flag", "user-0").path is Path.LEGACY
    assert server.counts["members_delta"] == 1
