from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

from django.db import IntegrityError, connection, models
from django.utils import timezone

from audit.names import Action
from audit.services import audit_record, audited_atomic
from cohorts.models import Cohort, CohortMember, MemberKind, MemberListState
from cohorts.snapshots import cohort_snapshot
from common.actors import Actor
from common.errors import Conflict, NotFound, ValidationFailed
from common.services import UNSET, Unset, check_version, full_clean, reject_control_characters
from rollout.delivery.rulesets import ruleset_changed
from rollout.models import FlagState
from rollout.policy import NO_EFFECT, Approval, Effect, enforce, states_effect

MAX_SUBJECT_LENGTH = 255
MAX_MEMBERS_PER_REQUEST = 100_000
INSERT_BATCH = 5_000
ARRAY_BATCH = 20_000


def validate_cohort_rules(rules: Any) -> Any:
    """Rules are checked by the engine the SDK runs, so what is saved is what evaluates."""
    if rules is None or rules == {}:
        return None
    from turnout.engine import RuleError, validate_rules

    reject_control_characters(rules, field="rules")
    try:
        validate_rules(rules)
    except RuleError as exc:
        raise ValidationFailed(f"rules: {exc}", fields={"rules": [str(exc)]}) from None
    return rules


def cohort_effect(cohort: Cohort) -> Effect:
    """Every flag state that uses the cohort decides differently when its rules or members change."""
    states = (FlagState.objects.filter(models.Q(include_cohorts=cohort) | models.Q(exclude_cohorts=cohort))
              .select_related("environment", "flag__workload").distinct())
    return states_effect(states)


def _approval(approval: Approval | None) -> dict[str, Any]:
    return {"approval": approval.as_audit()} if approval else {}


def _affected_environments(cohort: Cohort) -> list[int] | None:
    ids = set(FlagState.objects.filter(include_cohorts=cohort).values_list("environment_id", flat=True))
    ids |= set(FlagState.objects.filter(exclude_cohorts=cohort).values_list("environment_id", flat=True))
    return sorted(ids)


def _ruleset_changed(cohort: Cohort) -> None:
    env_ids = _affected_environments(cohort)
    if env_ids:
        ruleset_changed(environment_ids=env_ids)


def _get_for_update(key: str) -> Cohort:
    cohort = Cohort.objects.select_for_update().filter(key=key).first()
    if cohort is None:
        raise NotFound(f"cohort '{key}' does not exist")
    return cohort


def cohort_create(*, actor: Actor, key: str, name: str, description: str = "", match_on: str = "",
                  rules: Any = None, reason: str = "") -> Cohort:
    enforce(actor, Action.COHORT_CREATED)
    with audited_atomic():
        cohort = Cohort(key=key, name=name, description=description, match_on=(match_on or "").strip(),
                        rules=validate_cohort_rules(rules))
        full_clean(cohort)
        try:
            cohort.save(force_insert=True)
        except IntegrityError:
            raise ValidationFailed.field("key", f"a cohort '{key}' already exists") from None
        audit_record(actor=actor, action=Action.COHORT_CREATED, object_type="cohort", object_key=cohort.key,
                     after=cohort_snapshot(cohort), reason=reason)
    return cohort


def cohort_update(
    *, actor: Actor, key: str, version: int | None = None, name: str | Unset = UNSET,
    description: str | Unset = UNSET, match_on: str | Unset = UNSET, rules: Any = UNSET,
    reason: str = "", approval: Approval | None = None,
) -> Cohort:
    with audited_atomic():
        cohort = _get_for_update(key)
        decisive = (rules is not UNSET and rules != cohort.rules) or (
            match_on is not UNSET and (match_on or "").strip() != cohort.match_on)
        enforce(actor, Action.COHORT_UPDATED, cohort_effect(cohort) if decisive else NO_EFFECT, approval=approval,
                what=f"changing cohort '{key}'")
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
        audit_record(actor=actor, action=Action.COHORT_UPDATED, object_type="cohort", object_key=cohort.key,
                     before=before, after={**cohort_snapshot(cohort), **_approval(approval)}, reason=reason)
    return cohort


def cohort_delete(*, actor: Actor, key: str, version: int | None = None, reason: str = "") -> None:
    with audited_atomic():
        cohort = _get_for_update(key)
        enforce(actor, Action.COHORT_DELETED)
        check_version(cohort, version, what=f"cohort '{key}'")
        if _affected_environments(cohort):
            raise Conflict(f"cohort '{key}' is used by a flag; remove it from the flag's cohorts first")
        before = cohort_snapshot(cohort)
        before["members"] = cohort.members.count()
        cohort.delete()
        audit_record(actor=actor, action=Action.COHORT_DELETED, object_type="cohort", object_key=key, before=before,
                     reason=reason)


def subject_problem(value: Any) -> str | None:
    """What is wrong with one member key (``None`` when it is fine)."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return "must be a string"
    value = str(value).strip()
    if not value:
        return "empty subject key"
    if len(value) > MAX_SUBJECT_LENGTH:
        return f"longer than {MAX_SUBJECT_LENGTH} characters"
    if any(ord(ch) < 32 for ch in value):
        return "contains a control character"
    return None


def clean_subjects(subjects: Iterable[Any], *, field: str = "subjects") -> list[str]:
    """Strip, de-duplicate and check member keys; the message names the first bad row (1-based)."""
    if isinstance(subjects, str | bytes):
        raise ValidationFailed.field(field, "must be a list of subject keys")
    clean: dict[str, None] = {}
    for index, subject in enumerate(subjects, start=1):
        problem = subject_problem(subject)
        if problem:
            raise ValidationFailed.field(field, f"row {index}: {problem}")
        clean[str(subject).strip()] = None
        if len(clean) > MAX_MEMBERS_PER_REQUEST:
            raise ValidationFailed.field(field, f"at most {MAX_MEMBERS_PER_REQUEST} subjects per request")
    return list(clean)


def _digest(subjects: list[str]) -> str:
    h = hashlib.sha256()
    for s in sorted(subjects):
        h.update(s.encode())
        h.update(b"\n")
    return h.hexdigest()


def _batches(subjects: list[str]) -> Iterator[list[str]]:
    """PostgreSQL takes a whole array as one parameter; other databases cap the parameters per query."""
    size = ARRAY_BATCH if connection.vendor == "postgresql" else INSERT_BATCH
    for start in range(0, len(subjects), size):
        yield subjects[start:start + size]


def _table() -> str:
    return connection.ops.quote_name(CohortMember._meta.db_table)


def _existing(cohort: Cohort, subjects: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in _batches(subjects):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT subject, kind FROM {_table()} "
                               "WHERE cohort_id = %s AND subject = ANY(%s::text[])", [cohort.pk, chunk])
                found.update(cursor.fetchall())
        else:
            found.update(cohort.members.filter(subject__in=chunk).values_list("subject", "kind"))
    return found


def _insert_members(cohort: Cohort, subjects: list[str], kind: str) -> None:
    """Bulk insert without a model object per row (100k members must stay quick): COPY on PostgreSQL."""
    if not subjects:
        return
    now = timezone.now()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {_table()} (cohort_id, subject, kind, added_at) FROM STDIN") as copy:
                for subject in subjects:
                    copy.write_row((cohort.pk, subject, kind, now))
            return
        for chunk in _batches(subjects):
            cursor.executemany(
                f"INSERT INTO {_table()} (cohort_id, subject, kind, added_at) VALUES (%s, %s, %s, %s)",
                [(cohort.pk, subject, kind, now) for subject in chunk],
            )


def _move_members(cohort: Cohort, subjects: list[str], kind: str) -> None:
    for chunk in _batches(subjects):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"UPDATE {_table()} SET kind = %s "
                               "WHERE cohort_id = %s AND subject = ANY(%s::text[])", [kind, cohort.pk, chunk])
        else:
            cohort.members.filter(subject__in=chunk).update(kind=kind)


def _delete_members(cohort: Cohort, subjects: list[str]) -> list[str]:
    removed: list[str] = []
    for chunk in _batches(subjects):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"DELETE FROM {_table()} WHERE cohort_id = %s "
                               "AND subject = ANY(%s::text[]) RETURNING subject", [cohort.pk, chunk])
                removed.extend(row[0] for row in cursor.fetchall())
        else:
            found = list(cohort.members.filter(subject__in=chunk).values_list("subject", flat=True))
            cohort.members.filter(subject__in=found).delete()
            removed.extend(found)
    return removed


def _apply_add(cohort: Cohort, clean: list[str], kind: str) -> tuple[dict[str, int], list[str]]:
    existing = _existing(cohort, clean)
    new = [s for s in clean if s not in existing]
    moved = [s for s in clean if s in existing and existing[s] != kind]
    _insert_members(cohort, new, kind)
    _move_members(cohort, moved, kind)
    result = {"added": len(new), "moved": len(moved), "unchanged": len(clean) - len(new) - len(moved)}
    return result, new + moved


def _apply_remove(cohort: Cohort, clean: list[str]) -> tuple[dict[str, int], list[str]]:
    removed = _delete_members(cohort, clean)
    return {"removed": len(removed), "not_members": len(clean) - len(removed)}, removed


def _members_changed(cohort: Cohort) -> None:
    """Member lists are part of the cohort: a change moves its version (stale writes then get 409)."""
    cohort.version += 1
    cohort.save(update_fields=["version", "updated_at"])
    # The lists' own version and count (the cohort's row is locked: no other change runs meanwhile).
    count = CohortMember.objects.filter(cohort=cohort).count()
    if not MemberListState.objects.filter(cohort=cohort).update(version=models.F("version") + 1, count=count):
        MemberListState.objects.create(cohort=cohort, version=1, count=count)
    _ruleset_changed(cohort)


def _check_kind(kind: str) -> None:
    if kind not in MemberKind.values:
        raise ValidationFailed.field("kind", "must be 'include' or 'exclude'")


def cohort_members_add(*, actor: Actor, key: str, subjects: Iterable[Any], kind: str = MemberKind.INCLUDE,
                       version: int | None = None, reason: str = "", approval: Approval | None = None
                       ) -> dict[str, int]:
    """Add (or move) subjects to a cohort's include or exclude list, all or nothing."""
    _check_kind(kind)
    clean = clean_subjects(subjects)
    if not clean:
        raise ValidationFailed.field("subjects", "no subject keys given")
    with audited_atomic():
        cohort = _get_for_update(key)
        enforce(actor, Action.COHORT_MEMBERS_ADDED, cohort_effect(cohort), approval=approval,
                what=f"changing the members of cohort '{key}'")
        check_version(cohort, version, what=f"cohort '{key}'")
        result, changed = _apply_add(cohort, clean, kind)
        if changed:
            _members_changed(cohort)
            audit_record(actor=actor, action=Action.COHORT_MEMBERS_ADDED, object_type="cohort",
                         object_key=cohort.key,
                         after={"kind": kind, **result, "subjects_sha256": _digest(changed),
                                "sample": sorted(changed)[:20], "version": cohort.version, **_approval(approval)},
                         reason=reason)
    return result


def cohort_members_remove(*, actor: Actor, key: str, subjects: Iterable[Any], version: int | None = None,
                          reason: str = "", approval: Approval | None = None) -> dict[str, int]:
    clean = clean_subjects(subjects)
    if not clean:
        raise ValidationFailed.field("subjects", "no subject keys given")
    with audited_atomic():
        cohort = _get_for_update(key)
        enforce(actor, Action.COHORT_MEMBERS_REMOVED, cohort_effect(cohort), approval=approval,
                what=f"changing the members of cohort '{key}'")
        check_version(cohort, version, what=f"cohort '{key}'")
        result, removed = _apply_remove(cohort, clean)
        if removed:
            _members_changed(cohort)
            audit_record(actor=actor, action=Action.COHORT_MEMBERS_REMOVED, object_type="cohort",
                         object_key=cohort.key,
                         before={"removed": len(removed), "subjects_sha256": _digest(removed),
                                 "sample": sorted(removed)[:20]},
                         after={"version": cohort.version, **_approval(approval)},
                         reason=reason)
    return result


def cohort_members_change(*, actor: Actor, key: str, add: Iterable[Any] = (), remove: Iterable[Any] = (),
                          kind: str = MemberKind.INCLUDE, version: int | None = None,
                          reason: str = "", approval: Approval | None = None) -> dict[str, int]:
    """Add and remove in one step, all or nothing, as one audit event; a subject may not be in both lists."""
    _check_kind(kind)
    clean_add = clean_subjects(add, field="add")
    clean_remove = clean_subjects(remove, field="remove")
    if not clean_add and not clean_remove:
        raise ValidationFailed.field("add", "give subject keys to add or to remove")
    if len(clean_add) + len(clean_remove) > MAX_MEMBERS_PER_REQUEST:
        raise ValidationFailed.field("add", f"at most {MAX_MEMBERS_PER_REQUEST} subjects per request")
    both = set(clean_add) & set(clean_remove)
    if both:
        raise ValidationFailed.field("remove", f"subject '{min(both)}' is both added and removed")
    with audited_atomic():
        cohort = _get_for_update(key)
        enforce(actor, Action.COHORT_MEMBERS_CHANGED, cohort_effect(cohort), approval=approval,
                what=f"changing the members of cohort '{key}'")
        check_version(cohort, version, what=f"cohort '{key}'")
        added, changed = _apply_add(cohort, clean_add, kind) if clean_add else ({"added": 0, "moved": 0,
                                                                                "unchanged": 0}, [])
        removed, gone = _apply_remove(cohort, clean_remove) if clean_remove else ({"removed": 0,
                                                                                   "not_members": 0}, [])
        result = {**added, **removed}
        if changed or gone:
            _members_changed(cohort)
            audit_record(actor=actor, action=Action.COHORT_MEMBERS_CHANGED, object_type="cohort",
                         object_key=cohort.key,
                         before={"removed": len(gone), "subjects_sha256": _digest(gone), "sample": sorted(gone)[:20]},
                         after={"kind": kind, "added": added["added"], "moved": added["moved"],
                                "subjects_sha256": _digest(changed), "sample": sorted(changed)[:20],
                                "version": cohort.version, **_approval(approval)},
                         reason=reason)
    return result
