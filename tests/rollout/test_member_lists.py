"""Large cohorts' member lists on the server (rollout/delivery/members.py): the ruleset's two forms
(inline for SDKs that do not ask, references for those that do), the member-list endpoint (scope,
ETag / 304, gzip, deltas), server-side evaluation over the lists, and a list built once per version
of the lists — never again for an unrelated change."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from turnout.members import MemberDelta, MemberList, decode

from cohorts.services import cohort_create, cohort_members_add, cohort_members_remove, cohort_update
from rollout.access.keys import sdk_key_create
from rollout.delivery import members as members_module
from rollout.services.flags import flag_state_update

pytestmark = pytest.mark.django_db
RULESET = "/api/v1/sdk/ruleset"
MEMBERS = "/api/v1/sdk/cohorts/pilot/members"


@pytest.fixture
def setup(flag: Any, actor: Any, settings: Any, django_capture_on_commit_callbacks: Any) -> dict[str, str]:
    settings.TURNOUT_MEMBER_LIST_INLINE_MAX = 3
    members_module.clear_local()
    with django_capture_on_commit_callbacks(execute=True):
        cohort_create(actor=actor, key="pilot", name="Pilot")
        cohort_members_add(actor=actor, key="pilot", subjects=["user-1", "user-2", "user-3", "user-4"])
        cohort_members_add(actor=actor, key="pilot", subjects=["user-5"], kind="exclude")
        flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, enabled=True,
                          percentage_value=0, include_cohorts=["pilot"])
    return {"staging": sdk_key_create(actor=actor, environment="staging", name="svc")[1],
            "production": sdk_key_create(actor=actor, environment="production", name="svc")[1]}


def _get(client: Any, path: str, key: str, **headers: str) -> Any:
    return client.get(path, HTTP_AUTHORIZATION=f"Bearer {key}", **headers)


def test_ruleset_forms__old_sdk_inline_lists__new_sdk_reference_in_schema_2(client, setup):
    old = _get(client, RULESET, setup["staging"])
    doc = json.loads(old.content)
    assert doc["schema"] == 1
    assert doc["cohorts"]["pilot"]["include"] == ["user-1", "user-2", "user-3", "user-4"]
    assert doc["cohorts"]["pilot"]["exclude"] == ["user-5"]
    new = _get(client, RULESET + "?members=1", setup["staging"])
    referenced = json.loads(new.content)
    assert referenced["schema"] == 2
    assert referenced["cohorts"]["pilot"] == {"match_on": None, "rules": None, "members": {"version": 2, "count": 5}}
    assert new["ETag"] != old["ETag"] and referenced["flags"] == doc["flags"]
    # Each form answers 304 to its own ETag.
    assert _get(client, RULESET + "?members=1", setup["staging"], HTTP_IF_NONE_MATCH=new["ETag"]).status_code == 304
    assert _get(client, RULESET, setup["staging"], HTTP_IF_NONE_MATCH=old["ETag"]).status_code == 304


def test_member_list_endpoint__etag_304_gzip_scope_and_bad_since(client, setup):
    plain = _get(client, MEMBERS, setup["staging"])
    assert plain.status_code == 200 and plain["Content-Type"] == "application/vnd.turnout.members"
    assert plain["X-Turnout-Members-Version"] == "2"
    listed = decode(plain.content)
    assert isinstance(listed, MemberList) and listed.version == 2
    assert [listed.lookup(v) for v in ("user-1", "user-4", "user-5", "user-6")] == [1, 1, 2, 0]
    packed = _get(client, MEMBERS, setup["staging"], HTTP_ACCEPT_ENCODING="gzip")
    assert packed["Content-Encoding"] == "gzip" and packed["ETag"] == plain["ETag"][:-1] + '-gz"'
    assert gzip.decompress(packed.content) == plain.content
    for etag in (plain["ETag"], packed["ETag"]):
        again = _get(client, MEMBERS, setup["staging"], HTTP_IF_NONE_MATCH=etag)
        assert again.status_code == 304 and again.content == b""
    assert _get(client, MEMBERS, setup["staging"], HTTP_IF_NONE_MATCH='"m-pilot-2-0000"').status_code == 200
    # Another environment's key: the cohort is not in its ruleset.
    foreign = _get(client, MEMBERS, setup["production"])
    assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "not_found"
    assert _get(client, "/api/v1/sdk/cohorts/nope/members", setup["staging"]).status_code == 404
    bad = _get(client, MEMBERS + "?since=-1", setup["staging"])
    assert bad.status_code == 400 and "since" in bad.json()["error"]["fields"]
    assert client.get(MEMBERS).status_code == 401


def test_member_list__members_change__delta_since_the_held_version_equals_the_new_list(
        client, setup, actor, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        cohort_members_add(actor=actor, key="pilot", subjects=[f"bulk-{i}" for i in range(100)])
    first = decode(_get(client, MEMBERS, setup["staging"]).content)
    assert isinstance(first, MemberList) and first.version == 3
    with django_capture_on_commit_callbacks(execute=True):
        cohort_members_remove(actor=actor, key="pilot", subjects=["user-1"])
        cohort_members_add(actor=actor, key="pilot", subjects=["user-9"])
    ref = json.loads(_get(client, RULESET + "?members=1", setup["staging"]).content)["cohorts"]["pilot"]["members"]
    assert ref == {"version": 5, "count": 105}
    answer = _get(client, MEMBERS + "?since=3", setup["staging"])
    assert answer["X-Turnout-Members-Base"] == "3" and answer["X-Turnout-Members-Version"] == "5"
    delta = decode(answer.content)
    assert isinstance(delta, MemberDelta) and (len(delta.add_include), len(delta.remove_include)) == (1, 1)
    whole = decode(_get(client, MEMBERS, setup["staging"]).content)
    assert isinstance(whole, MemberList)
    patched = first.patched(delta)
    assert [patched.lookup(v) for v in ("user-1", "user-9", "user-5")] == [0, 1, 2]
    assert [whole.lookup(v) for v in ("user-1", "user-9", "user-5")] == [0, 1, 2]
    # A version the server no longer has (or never had): the whole list.
    members_module.clear_local()
    from django.core.cache import cache

    cache.delete("members-body:pilot:3")
    cache.delete("members-delta:pilot:3:5")
    full = _get(client, MEMBERS + "?since=3", setup["staging"])
    assert "X-Turnout-Members-Base" not in full and isinstance(decode(full.content), MemberList)


def test_member_list__unrelated_changes__list_not_rebuilt_and_evaluation_uses_it(
        client, setup, flag, actor, django_capture_on_commit_callbacks):
    _get(client, RULESET + "?members=1", setup["staging"])
    etag = _get(client, MEMBERS, setup["staging"])["ETag"]
    built = members_module.built_count()
    for percentage in (10, 20):  # a flag change and a change to the cohort's rules: new ruleset versions
        with django_capture_on_commit_callbacks(execute=True):
            flag_state_update(actor=actor, flag=flag.key, environment="staging", version=None,
                              percentage_value=percentage)
    with django_capture_on_commit_callbacks(execute=True):
        cohort_update(actor=actor, key="pilot", rules={"attr": "plan", "op": "eq", "values": ["pro"]})
    doc = json.loads(_get(client, RULESET + "?members=1", setup["staging"]).content)
    assert doc["flags"][flag.key]["percentage"] == 20.0 and doc["cohorts"]["pilot"]["members"]["version"] == 2
    members_module.clear_local()  # another process: the cached document, not a build
    assert _get(client, MEMBERS, setup["staging"], HTTP_IF_NONE_MATCH=etag).status_code == 304
    assert _get(client, MEMBERS, setup["staging"]).status_code == 200
    # Server-side evaluation decides over the same lists.
    for key, path, reason in (("user-2", "parallel", "TARGETING_MATCH"), ("user-5", "legacy", "DEFAULT"),
                              ("user-7", "legacy", "DEFAULT")):
        answer = client.post("/api/v1/sdk/evaluate", {"flag": flag.key, "context": {"key": key,
                             "attributes": {"tenant_id": "t-1"}}}, content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {setup['staging']}").json()
        assert (answer["path"], answer["reason"]) == (path, reason), key
    assert members_module.built_count() == built
