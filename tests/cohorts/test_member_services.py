from __future__ import annotations

import pytest

from cohorts.models import CohortMember
from cohorts.services import cohort_create, cohort_members_add, cohort_members_change, cohort_members_remove
from common.errors import Conflict, ValidationFailed

pytestmark = pytest.mark.django_db


@pytest.fixture
def pilot(actor):  # type: ignore[no-untyped-def]
    cohort = cohort_create(actor=actor, key="pilot", name="Pilot")
    cohort_members_add(actor=actor, key="pilot", subjects=["a", "b"])
    return cohort


def test_cohort_members_change__add_and_remove__one_exact_audit_event(actor, pilot, audit_events):
    start = len(audit_events())
    result = cohort_members_change(actor=actor, key="pilot", add=["c", "a"], remove=["b", "zz"], kind="include",
                                   version=2, reason="sync")
    assert result == {"added": 1, "moved": 0, "unchanged": 1, "removed": 1, "not_members": 1}
    [event] = audit_events()[start:]
    assert (event.action, event.object_type, event.object_key, event.reason) == (
        "cohort.members_changed", "cohort", "pilot", "sync")
    assert event.before == {"removed": 1, "subjects_sha256": event.before["subjects_sha256"], "sample": ["b"]}
    assert event.after["kind"] == "include" and event.after["added"] == 1 and event.after["sample"] == ["c"]
    assert event.after["version"] == 3
    assert set(CohortMember.objects.values_list("subject", flat=True)) == {"a", "c"}


def test_cohort_members_change__nothing_changes__no_event_no_new_version(actor, pilot, audit_events):
    start = len(audit_events())
    cohort_members_change(actor=actor, key="pilot", add=["a"], remove=["nope"])
    assert audit_events()[start:] == []
    pilot.refresh_from_db()
    assert pilot.version == 2


def test_cohort_members_change__stale_version__conflict_nothing_changes(actor, pilot):
    with pytest.raises(Conflict) as info:
        cohort_members_change(actor=actor, key="pilot", add=["c"], version=1)
    assert info.value.extra["current_version"] == 2
    assert not CohortMember.objects.filter(subject="c").exists()


@pytest.mark.parametrize(("add", "remove"), [(["x"], ["x"]), ([], []), (["ok", "\x00bad"], []), (["a" * 256], [])])
def test_cohort_members_change__bad_lists__rejected(actor, pilot, add, remove):
    with pytest.raises(ValidationFailed):
        cohort_members_change(actor=actor, key="pilot", add=add, remove=remove)
    assert CohortMember.objects.count() == 2


def test_cohort_members_add__moves_kind__bumps_version_and_audits(actor, pilot, audit_events):
    result = cohort_members_add(actor=actor, key="pilot", subjects=["a"], kind="exclude")
    assert result == {"added": 0, "moved": 1, "unchanged": 0}
    assert CohortMember.objects.get(subject="a").kind == "exclude"
    assert audit_events()[-1].after["version"] == 3


def test_cohort_members_remove__some__removed_and_audited(actor, pilot, audit_events):
    assert cohort_members_remove(actor=actor, key="pilot", subjects=["a", "q"]) == {"removed": 1, "not_members": 1}
    assert audit_events()[-1].action == "cohort.members_removed"
