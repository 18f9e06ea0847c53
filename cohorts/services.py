from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from django.db import IntegrityError

from audit.services import audit_record, audited_atomic
from cohorts.models import Cohort, CohortMember, MemberKind
from cohorts.snapshots import cohort_snapshot
from common.actors import Actor
from common.errors import Conflict, NotFound, ValidationFailed
from common.services import UNSET, check_version, full_clean

MAX_SUBJECT_LENGTH = 255
MAX_MEMBERS_PER_REQUEST = 100_000
INSERT_BATCH = 5_000


def validate_cohort_rules(rules: Any) -> Any:
    """Rules are checked by the engine the SDK runs, so what is saved is what evaluates."""
    if rules in (None, {}):
        return None
    from turnout.engine import RuleError, validate_rules

    try:
        validate_rules(rules)
    except RuleError as exc:
        raise ValidationFailed(f"rules: {exc}", fields={"rules": [str(exc)]}) from None
    return rules


def _affected_environments(cohort: Cohort) -> list[int] | None:
    from rollout.models import FlagState

    ids = set(FlagState.objects.filter(include_cohorts=cohort).values_list("environment_id", flat=True))
    ids |= set(FlagState.objects.filter(exclude_cohorts=cohort).values_list("environment_id", flat=True))
    return sorted(ids)


def _ruleset_changed(cohort: Cohort) -> None:
    from rollout.services.rulesets import ruleset_changed

    env_ids = _affected_environments(cohort)
    if env_ids:
        ruleset_changed(environment_ids=env_ids)


def _get_for_update(key: str) -> Cohort:
    cohort = Cohort.objects.select_for_update().filter(key=key).first()
    if cohort is None:
        raise NotFound(f"cohort '{key}' does not exist")
    return cohort


def cohort_create(*, actor: Actor, key: str, name: str, description: str = "", match_on: str = "",
                  rules: Any = None) -> Cohort:
    with audited_atomic():
        cohort = Cohort(key=key, name=name, description=description, match_on=(match_on or "").strip(),
                        rules=validate_cohort_rules(rules))
        full_clean(cohort)
        try:
            cohort.save(force_insert=True)
        except IntegrityError:
            raise ValidationFailed.field("key", f"a cohort '{key}' already exists") from None
        audit_record(actor=actor, action="cohort.created", object_type="cohort", object_key=cohort.key,
                     after=cohort_snapshot(cohort))
    return cohort


def cohort_update(
    *, actor: Actor, key: str, version: int | None = None, name: str = UNSET,  # type: ignore[assignment]
    description: str = UNSET, match_on: str = UNSET, rules: Any = UNSET,  # type: ignore[assignment]
    reason: str = "",
) -> Cohort:
    with audited_atomic():
        cohort = _get_for_update(key)
        check_version(cohort, version, what=f"cohort '{key}'")
        before = cohort_snapshot(cohort)
        if name is not UNSET:
            cohort.name = name
        if description is not UNSET:
            cohort.description = description
        if match_on is not UNSET:
            cohort.match_on = (match_on or "").strip()
        if rules is not UNSET:
            cohort.rules = validate_cohort_rules(rules)
        full_clean(cohort, validate_unique=False)
        after = cohort_snapshot(cohort)
        if after == before:
            return cohort
        cohort.version += 1
        cohort.save()
        if (after["rules"], after["match_on"]) != (before["rules"], before["match_on"]):
            _ruleset_changed(cohort)
        audit_record(actor=actor, action="cohort.updated", object_type="cohort", object_key=cohort.key,
                     before=before, after=cohort_snapshot(cohort), reason=reason)
    return cohort


def cohort_delete(*, actor: Actor, key: str, version: int | None = None, reason: str = "") -> None:
    with audited_atomic():
        cohort = _get_for_update(key)
        check_version(cohort, version, what=f"cohort '{key}'")
        if _affected_environments(cohort):
            raise Conflict(f"cohort '{key}' is used by a flag; remove it from the flag's cohorts first")
        before = cohort_snapshot(cohort)
        before["members"] = cohort.members.count()
        cohort.delete()
        audit_record(actor=actor, action="cohort.deleted", object_type="cohort", object_key=key, before=before,
                     reason=reason)


def clean_subjects(subjects: Iterable[Any]) -> list[str]:
    """Strip, de-duplicate and check member keys; the message names the first bad row (1-based)."""
    if isinstance(subjects, str | bytes):
        raise ValidationFailed.field("subjects", "must be a list of subject keys")
    clean: dict[str, None] = {}
    for index, subject in enumerate(subjects, start=1):
        if not isinstance(subject, str | int) or isinstance(subject, bool):
            raise ValidationFailed.field("subjects", f"row {index}: must be a string")
        value = str(subject).strip()
        if not value:
            raise ValidationFailed.field("subjects", f"row {index}: empty subject key")
        if len(value) > MAX_SUBJECT_LENGTH:
            raise ValidationFailed.field("subjects", f"row {index}: longer than {MAX_SUBJECT_LENGTH} characters")
        clean[value] = None
        if len(clean) > MAX_MEMBERS_PER_REQUEST:
            raise ValidationFailed.field("subjects", f"at most {MAX_MEMBERS_PER_REQUEST} subjects per request")
    return list(clean)


def _digest(subjects: list[str]) -> str:
    h = hashlib.sha256()
    for s in sorted(subjects):
        h.update(s.encode())
        h.update(b"\n")
    return h.hexdigest()


def cohort_members_add(*, actor: Actor, key: str, subjects: Iterable[Any], kind: str = MemberKind.INCLUDE,
                       reason: str = "") -> dict[str, int]:
    """Add (or move) subjects to a cohort's include or exclude list, all or nothing."""
    if kind not in MemberKind.values:
        raise ValidationFailed.field("kind", "must be 'include' or 'exclude'")
    clean = clean_subjects(subjects)
    if not clean:
        raise ValidationFailed.field("subjects", "no subject keys given")
    with audited_atomic():
        cohort = _get_for_update(key)
        existing: dict[str, str] = {}
        for start in range(0, len(clean), INSERT_BATCH):
            chunk = clean[start:start + INSERT_BATCH]
            existing.update(cohort.members.filter(subject__in=chunk).values_list("subject", "kind"))
        new = [s for s in clean if s not in existing]
        moved = [s for s in clean if s in existing and existing[s] != kind]
        CohortMember.objects.bulk_create([CohortMember(cohort=cohort, subject=s, kind=kind) for s in new],
                                         batch_size=INSERT_BATCH)
        for start in range(0, len(moved), INSERT_BATCH):
            cohort.members.filter(subject__in=moved[start:start + INSERT_BATCH]).update(kind=kind)
        result = {"added": len(new), "moved": len(moved), "unchanged": len(clean) - len(new) - len(moved)}
        if new or moved:
            _ruleset_changed(cohort)
            audit_record(actor=actor, action="cohort.members_added", object_type="cohort", object_key=cohort.key,
                         after={"kind": kind, **result, "subjects_sha256": _digest(new + moved),
                                "sample": sorted(new + moved)[:20]},
                         reason=reason)
    return result


def cohort_members_remove(*, actor: Actor, key: str, subjects: Iterable[Any], reason: str = "") -> dict[str, int]:
    clean = clean_subjects(subjects)
    if not clean:
        raise ValidationFailed.field("subjects", "no subject keys given")
    with audited_atomic():
        cohort = _get_for_update(key)
        removed: list[str] = []
        for start in range(0, len(clean), INSERT_BATCH):
            chunk = clean[start:start + INSERT_BATCH]
            found = list(cohort.members.filter(subject__in=chunk).values_list("subject", flat=True))
            cohort.members.filter(subject__in=found).delete()
            removed.extend(found)
        result = {"removed": len(removed), "not_members": len(clean) - len(removed)}
        if removed:
            _ruleset_changed(cohort)
            audit_record(actor=actor, action="cohort.members_removed", object_type="cohort", object_key=cohort.key,
                         before={"removed": len(removed), "subjects_sha256": _digest(removed),
                                 "sample": sorted(removed)[:20]},
                         reason=reason)
    return result
