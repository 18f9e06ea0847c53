"""Small updates: a patch applied on top of its base equals the whole document of the new version.

Two property tests: over random documents and random edits (hypothesis, no database), and over
random sequences of real changes through the services (flags, overrides, cohorts and their
members), where each version's patch from the one before, applied by the SDK's ``apply_patch``,
must equal the document a full fetch gives.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from turnout.wire import apply_patch

from cohorts.services import cohort_create, cohort_members_add, cohort_members_remove
from rollout.delivery.patches import diff, ruleset_patch
from rollout.delivery.ruleset import get_ruleset
from rollout.models import Environment
from rollout.services.flags import flag_create, flag_state_update

_keys = st.sampled_from([f"k{i}" for i in range(12)])
_flag = st.fixed_dictionaries({"enabled": st.booleans(), "percentage": st.floats(0, 100), "salt": st.text(max_size=3),
                               "overrides": st.dictionaries(st.text(max_size=3), st.sampled_from(["legacy", "parallel"]),
                                                            max_size=2)})
_cohort = st.fixed_dictionaries({"match_on": st.none(), "rules": st.none(),
                                 "include": st.lists(st.text(max_size=4), max_size=4), "exclude": st.just([])})


def _doc(version: int, flags: dict[str, Any], cohorts: dict[str, Any]) -> dict[str, Any]:
    return {"schema": 1, "environment": "e", "version": version, "cohorts": cohorts, "flags": flags}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _flag), st.dictionaries(_keys, _cohort),
       st.dictionaries(_keys, st.one_of(st.none(), _flag)), st.dictionaries(_keys, st.one_of(st.none(), _cohort)))
def test_patch__random_edits__applied_equals_the_new_document(flags, cohorts, flag_edits, cohort_edits):  # type: ignore[no-untyped-def]
    old = _doc(3, flags, cohorts)
    new_flags = {k: v for k, v in {**flags, **flag_edits}.items() if v is not None}
    new_cohorts = {k: v for k, v in {**cohorts, **cohort_edits}.items() if v is not None}
    new = _doc(7, new_flags, new_cohorts)
    patch = diff(old, new)  # type: ignore[arg-type]
    assert patch is not None
    # Only what changed travels.
    assert set(patch["flags"]) == {k for k in flags.keys() | new_flags.keys() if flags.get(k) != new_flags.get(k)}
    # Through the wire (JSON) and applied by the SDK: exactly the new document; the old one untouched.
    wired = json.loads(json.dumps(patch))
    before = json.dumps(old, sort_keys=True)
    assert apply_patch(old, wired) == new  # type: ignore[arg-type]
    assert json.dumps(old, sort_keys=True) == before


def test_patch__other_fields_differ__no_patch():
    old = _doc(1, {}, {})
    new = {**_doc(2, {}, {}), "stages": {"x": 1}}  # a field a newer server adds
    assert diff(old, new) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [
    {"environment": "e", "base": 2, "version": 3, "flags": {}, "cohorts": {}},  # a gap: base is not the held version
    {"environment": "other", "base": 1, "version": 3, "flags": {}, "cohorts": {}},
    {"environment": "e", "base": 1, "version": 1, "flags": {}, "cohorts": {}},
    {"environment": "e", "base": 1, "version": "2", "flags": {}, "cohorts": {}},
    {"environment": "e", "base": 1, "version": 2, "flags": [], "cohorts": {}},
    [1, 2],
])
def test_apply_patch__not_applicable__value_error(bad):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        apply_patch(_doc(1, {}, {}), bad)  # type: ignore[arg-type]


@pytest.mark.django_db
@pytest.mark.parametrize("seed", range(4))
def test_patch__random_change_sequences__applied_equals_a_full_fetch(seed, envs, actor,
                                                                    django_capture_on_commit_callbacks):
    rng = random.Random(seed)
    from rollout.services.workloads import workload_create

    workload_create(actor=actor, key="w", name="W", risk="low")
    flags = [flag_create(actor=actor, key=f"f{i}", workload="w").key for i in range(6)]
    cohort_create(actor=actor, key="pilot", name="Pilot")
    cohort_create(actor=actor, key="vip", name="VIP")
    env = Environment.objects.get(key="staging")
    held = get_ruleset(env.pk)
    assert held is not None
    doc = held.document()
    patched = raised = 0
    for _ in range(15):
        action = rng.randrange(4)
        with django_capture_on_commit_callbacks(execute=True):
            if action == 0:
                flag_state_update(actor=actor, flag=rng.choice(flags), environment="staging", version=None,
                                  enabled=rng.random() < 0.8, percentage_value=rng.randrange(101))
            elif action == 1:
                flag_state_update(actor=actor, flag=rng.choice(flags), environment="staging", version=None,
                                  include_cohorts=rng.sample(["pilot", "vip"], rng.randrange(3)),
                                  exclude_cohorts=[])
            elif action == 2:
                flag_state_update(actor=actor, flag=rng.choice(flags), environment="staging", version=None,
                                  overrides={f"u{rng.randrange(5)}": rng.choice(["legacy", "parallel"])})
            else:
                cohort = rng.choice(["pilot", "vip"])
                if rng.random() < 0.6:
                    cohort_members_add(actor=actor, key=cohort, subjects=[f"m{rng.randrange(20)}"])
                else:
                    cohort_members_remove(actor=actor, key=cohort, subjects=[f"m{rng.randrange(20)}"])
        result = ruleset_patch(env.pk, doc["version"])
        full = get_ruleset(env.pk)
        assert full is not None
        raised += full.version > doc["version"]
        if result is not None:
            version, event = result
            assert version == full.version
            lines = event.decode().split("\n")
            assert lines[0] == "event: patch" and lines[1] == f"id: {version}"
            patch = json.loads(lines[2].removeprefix("data: "))
            assert patch["etag"] == full.etag
            doc = apply_patch(doc, patch)  # type: ignore[arg-type]
            patched += 1
        else:
            assert full.version == doc["version"]  # only a change that moved nothing goes without a patch
        assert doc == full.document()
    assert patched == raised > 0
