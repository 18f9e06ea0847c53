from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from django.db import IntegrityError

from audit.models import AuditEvent
from audit.names import Action
from audit.services import audit_record, audited_atomic
from cohorts.models import Cohort
from common import clock
from common.actors import Actor
from common.errors import Conflict, NotFound, ValidationFailed
from common.services import UNSET, Unset, check_version, full_clean, percentage
from rollout.delivery.rulesets import ruleset_changed
from rollout.models import Environment, Flag, FlagKind, FlagState, ReviewItem, Workload
from rollout.plans.phases import sync_workload_phase
from rollout.policy import (
    NO_EFFECT,
    Approval,
    enforce,
    is_break_glass,
    require_approval_if_needed,
    state_effect,
    states_effect,
)
from rollout.selectors import flag_state_get
from rollout.snapshots import flag_snapshot, flag_state_snapshot

PATHS = ("legacy", "parallel")
BREAK_GLASS_KINDS = {"kill": Action.FLAG_STATE_KILLED, "rollback": Action.FLAG_STATE_ROLLED_BACK}
MAX_OVERRIDES = 10_000


def _workload(key: str) -> Workload:
    workload = Workload.objects.filter(key=key).first()
    if workload is None:
        raise ValidationFailed.field("workload", f"workload '{key}' does not exist")
    return workload


def _attribute_name(value: str, *, field: str) -> str:
    value = (value or "").strip()
    if len(value) > 100:
        raise ValidationFailed.field(field, "is at most 100 characters")
    return value


def flag_create(
    *, actor: Actor, key: str, workload: str, description: str = "", salt: str | None = None, bucket_by: str = "",
    reason: str = "",
    kind: str = FlagKind.RELEASE,
) -> Flag:
    """A new flag, off in every environment. ``kind`` ``migration``: a data migration (read/write stages)."""
    enforce(actor, Action.FLAG_CREATED)
    if kind not in FlagKind.values:
        raise ValidationFailed.field("kind", f"must be one of {', '.join(FlagKind.values)}")
    with audited_atomic():
        flag = Flag(key=key, workload=_workload(workload), description=description, salt=salt or key,
                    bucket_by=_attribute_name(bucket_by, field="bucket_by"), kind=kind)
        full_clean(flag)
        try:
            flag.save(force_insert=True)
        except IntegrityError:
            raise ValidationFailed.field("key", f"a flag '{key}' already exists") from None
        FlagState.objects.bulk_create([FlagState(flag=flag, environment=env) for env in Environment.objects.all()])
        ruleset_changed()
        audit_record(actor=actor, action=Action.FLAG_CREATED, object_type="flag", object_key=flag.key,
                     after=flag_snapshot(flag), reason=reason)
    return flag


def flag_update(
    *, actor: Actor, key: str, description: str | Unset = UNSET, salt: str | Unset = UNSET,
    bucket_by: str | Unset = UNSET, reason: str = "",
    version: int | None = None, approval: Approval | None = None,
) -> Flag:
    """Changing ``salt`` or ``bucket_by`` reshuffles who is in the split in every environment where the
    flag is on, so it needs a reason and the approval those environments and the workload require."""
    with audited_atomic():
        flag = Flag.objects.select_for_update().select_related("workload").filter(key=key).first()
        if flag is None:
            raise NotFound(f"flag '{key}' does not exist")
        reshuffling = (salt is not UNSET and salt != flag.salt) or (
            bucket_by is not UNSET and (bucket_by or "").strip() != flag.bucket_by)
        live = flag.states.filter(enabled=True).select_related("environment", "flag__workload")
        enforce(actor, Action.FLAG_UPDATED, states_effect(live) if reshuffling else NO_EFFECT, approval=approval,
                what=f"changing how flag '{key}' buckets subjects")
        check_version(flag, version, what=f"flag '{key}'")
        before = flag_snapshot(flag)
        if description is not UNSET:
            flag.description = description
        if salt is not UNSET:
            flag.salt = salt
        if bucket_by is not UNSET:
            flag.bucket_by = _attribute_name(bucket_by, field="bucket_by")
        full_clean(flag, validate_unique=False)
        after = flag_snapshot(flag)
        if after == before:
            return flag
        reshuffles = after["salt"] != before["salt"] or after["bucket_by"] != before["bucket_by"]
        if reshuffles and not reason.strip():
            raise ValidationFailed.field("reason", "changing salt or bucket_by moves subjects between paths; "
                                                   "give a reason")
        flag.version += 1
        flag.save()
        if reshuffles:
            ruleset_changed()
        after = flag_snapshot(flag)
        if approval:
            after["approval"] = approval.as_audit()
        audit_record(actor=actor, action=Action.FLAG_UPDATED, object_type="flag", object_key=flag.key,
                     before=before, after=after, reason=reason)
    return flag


def flag_delete(*, actor: Actor, key: str, reason: str = "") -> None:
    with audited_atomic():
        flag = Flag.objects.select_for_update().select_related("workload").filter(key=key).first()
        if flag is None:
            raise NotFound(f"flag '{key}' does not exist")
        enforce(actor, Action.FLAG_DELETED)
        live = list(flag.states.filter(enabled=True).values_list("environment__key", flat=True))
        if live:
            raise Conflict(f"flag '{key}' is enabled in {', '.join(sorted(live))}; kill it there before deleting")
        before = flag_snapshot(flag)
        flag.delete()
        ruleset_changed()
        audit_record(actor=actor, action=Action.FLAG_DELETED, object_type="flag", object_key=key, before=before,
                     reason=reason)


def get_state_for_update(flag: str, environment: str) -> FlagState:
    """``rollout.selectors.flag_state_get``, locked: every write to a flag state starts here."""
    return flag_state_get(flag, environment, for_update=True)


def _cohorts(keys: Iterable[str], *, field: str) -> list[Cohort]:
    if isinstance(keys, str | bytes) or not isinstance(keys, Iterable):
        raise ValidationFailed.field(field, "must be a list of cohort keys")
    wanted = list(dict.fromkeys(keys))
    if not all(isinstance(k, str) for k in wanted):
        raise ValidationFailed.field(field, "must be a list of cohort keys")
    found = {c.key: c for c in Cohort.objects.filter(key__in=wanted)}
    missing = [k for k in wanted if k not in found]
    if missing:
        raise ValidationFailed.field(field, f"unknown cohort '{missing[0]}'")
    return [found[k] for k in wanted]


def validate_overrides(overrides: Any) -> dict[str, str]:
    if not isinstance(overrides, Mapping):
        raise ValidationFailed.field("overrides", "must be an object mapping subject keys to 'legacy' or 'parallel'")
    if len(overrides) > MAX_OVERRIDES:
        raise ValidationFailed.field("overrides", f"at most {MAX_OVERRIDES} overrides; use a cohort for more")
    clean: dict[str, str] = {}
    for subject, path in overrides.items():
        if not isinstance(subject, str) or not subject.strip() or len(subject) > 255 or "\x00" in subject:
            raise ValidationFailed.field("overrides", f"subject key {subject!r} must be 1-255 characters")
        if path not in PATHS:
            raise ValidationFailed.field(f"overrides.{subject}", f"must be 'legacy' or 'parallel', not {path!r}")
        clean[subject] = path
    return clean


def write_state(
    state: FlagState, *, actor: Actor, action: str, before: Mapping[str, Any], reason: str,
    extra: Mapping[str, Any] | None = None, ruleset: bool = True,
) -> AuditEvent:
    """Save a changed flag state inside the caller's transaction: bump its version, the ruleset
    (when SDK decisions change) and the workload's phase, and write the one audit event."""
    state.version += 1
    state.save()
    if ruleset:
        ruleset_changed(environment_ids=[state.environment_id])
    phase = sync_workload_phase(state.flag.workload)
    after = {**flag_state_snapshot(state), "phase": phase, **(extra or {})}
    return audit_record(actor=actor, action=action, object_type="flag_state",
                        object_key=f"{state.flag.key}@{state.environment.key}", environment=state.environment.key,
                        before=before, after=after, reason=reason)


def update_state(
    state: FlagState,
    *,
    actor: Actor,
    version: int | None,
    enabled: bool | Unset = UNSET,
    percentage_value: Any = UNSET,
    compare_percentage: Any = UNSET,
    include_cohorts: Iterable[str] | Unset = UNSET,
    exclude_cohorts: Iterable[str] | Unset = UNSET,
    overrides: Mapping[str, str] | Unset = UNSET,
    reason: str = "",
    approval: Approval | None = None,
) -> AuditEvent | None:
    """``flag_state_update`` inside the caller's transaction; None when nothing changed."""
    check_version(state, version, what=f"flag state '{state.flag.key}@{state.environment.key}'")
    require_approval_if_needed(state, Action.FLAG_STATE_UPDATED, actor=actor, approval=approval)
    before = flag_state_snapshot(state)
    if enabled is not UNSET:
        if not isinstance(enabled, bool):
            raise ValidationFailed.field("enabled", "must be true or false")
        state.enabled = enabled
    if percentage_value is not UNSET:
        state.percentage = percentage(percentage_value, field="percentage")
    if compare_percentage is not UNSET:
        state.compare_percentage = percentage(compare_percentage, field="compare_percentage")
    if overrides is not UNSET:
        state.overrides = validate_overrides(overrides)
    include = None if include_cohorts is UNSET else _cohorts(include_cohorts, field="include_cohorts")
    exclude = None if exclude_cohorts is UNSET else _cohorts(exclude_cohorts, field="exclude_cohorts")
    inc_keys = {c.key for c in include} if include is not None else set(before["include_cohorts"])
    exc_keys = {c.key for c in exclude} if exclude is not None else set(before["exclude_cohorts"])
    both = sorted(inc_keys & exc_keys)
    if both:
        raise ValidationFailed.field("include_cohorts", f"cohort '{both[0]}' cannot be both included and excluded")
    if include is not None:
        state.include_cohorts.set(include)
    if exclude is not None:
        state.exclude_cohorts.set(exclude)
    after = flag_state_snapshot(state)
    if {k: v for k, v in after.items() if k != "version"} == {k: v for k, v in before.items() if k != "version"}:
        return None
    return write_state(state, actor=actor, action=Action.FLAG_STATE_UPDATED, before=before, reason=reason,
                       extra={"approval": approval.as_audit()} if approval else None)


def flag_state_update(
    *,
    actor: Actor,
    flag: str,
    environment: str,
    version: int | None,
    enabled: bool | Unset = UNSET,
    percentage_value: Any = UNSET,
    compare_percentage: Any = UNSET,
    include_cohorts: Iterable[str] | Unset = UNSET,
    exclude_cohorts: Iterable[str] | Unset = UNSET,
    overrides: Mapping[str, str] | Unset = UNSET,
    reason: str = "",
    approval: Approval | None = None,
) -> FlagState:
    """Change a flag's rollout in one environment; ``version`` is the one the caller read (409 if stale)."""
    with audited_atomic():
        state = get_state_for_update(flag, environment)
        update_state(state, actor=actor, version=version, enabled=enabled, percentage_value=percentage_value,
                     compare_percentage=compare_percentage, include_cohorts=include_cohorts,
                     exclude_cohorts=exclude_cohorts, overrides=overrides, reason=reason, approval=approval)
        return state


def kill_state(state: FlagState, *, actor: Actor, reason: str = "", extra: Mapping[str, Any] | None = None,
               version: int | None = None) -> AuditEvent:
    """Inside the caller's transaction: everyone to legacy. A person's kill where changes need approval
    is break-glass: marked in the event, and a review item is opened for an approver.

    The emergency lever may name no version ("whatever stands now"); the event records the version
    it replaced either way. A named version that is stale gets 409 like any other change."""
    check_version(state, version, what=f"flag state '{state.flag.key}@{state.environment.key}'")
    before = flag_state_snapshot(state)
    extra = {**(extra or {}), "replaced_version": state.version}
    if not state.enabled:
        raise Conflict(f"flag '{state.flag.key}' is already off in {state.environment.key}",
                       current_version=state.version)
    state.enabled = False
    return write_state_break_glass(state, actor=actor, action=Action.FLAG_STATE_KILLED, kind="kill", before=before,
                                   reason=reason, extra=extra)


def write_state_break_glass(state: FlagState, *, actor: Actor, action: str, kind: str, before: Mapping[str, Any],
                            reason: str, extra: Mapping[str, Any] | None = None) -> AuditEvent:
    break_glass = is_break_glass(state, BREAK_GLASS_KINDS[kind], actor=actor)
    bypassed = list(state.change_requests.filter(status="pending").values_list("pk", flat=True))
    marks = {"break_glass": True, "pending_change_requests": bypassed} if break_glass else {}
    event = write_state(state, actor=actor, action=action, before=before, reason=reason,
                        extra={**(extra or {}), **marks})
    if break_glass:
        ReviewItem.objects.create(flag_state=state, action=kind, actor_label=actor.label[:150],
                                  actor_user_id=actor.user_id, reason=reason,
                                  audit_sequence=event.sequence, created_at=clock.now())
    return event


def flag_state_kill(*, actor: Actor, flag: str, environment: str, reason: str = "",
                    version: int | None = None) -> FlagState:
    """Everyone to legacy, at once. Never waits for approval; ``version`` None means "any"."""
    with audited_atomic():
        state = get_state_for_update(flag, environment)
        enforce(actor, Action.FLAG_STATE_KILLED, state_effect(state, Action.FLAG_STATE_KILLED))
        kill_state(state, actor=actor, reason=reason, version=version)
        return state


def resume_state(state: FlagState, *, actor: Actor, version: int | None = None, reason: str = "",
                 approval: Approval | None = None) -> AuditEvent:
    """Inside the caller's transaction: switch a killed rollout back on (its stage's soak restarts),
    or lift a pause."""
    check_version(state, version, what=f"flag state '{state.flag.key}@{state.environment.key}'")
    require_approval_if_needed(state, Action.FLAG_STATE_RESUMED, actor=actor, approval=approval)
    before = flag_state_snapshot(state)
    if state.enabled and state.paused_at is None:
        raise Conflict(f"flag '{state.flag.key}' is already on in {state.environment.key}",
                       current_version=state.version)
    was_enabled = state.enabled
    state.enabled = True
    state.paused_at = None
    state.paused_reason = ""
    if state.stage:
        state.stage_started_at = clock.now()
    extra = {"approval": approval.as_audit()} if approval else None
    if was_enabled:
        return write_state(state, actor=actor, action=Action.FLAG_STATE_UNPAUSED, before=before, reason=reason,
                           extra=extra, ruleset=False)
    return write_state(state, actor=actor, action=Action.FLAG_STATE_RESUMED, before=before, reason=reason, extra=extra)


def flag_state_resume(*, actor: Actor, flag: str, environment: str, version: int | None = None,
                      reason: str = "", approval: Approval | None = None) -> FlagState:
    """Switch a killed flag state back on, or lift a rollout's pause."""
    with audited_atomic():
        state = get_state_for_update(flag, environment)
        resume_state(state, actor=actor, version=version, reason=reason, approval=approval)
        return state


def retire_state(state: FlagState, *, actor: Actor, version: int | None = None, reason: str = "",
                 approval: Approval | None = None, extra: Mapping[str, Any] | None = None) -> AuditEvent:
    """Inside the caller's transaction: legacy retired, everyone on the parallel path. When the plan
    ends in a "retire legacy" stage, the rollout stands on it afterwards."""
    flag, environment = state.flag.key, state.environment.key
    check_version(state, version, what=f"flag state '{flag}@{environment}'")
    require_approval_if_needed(state, Action.FLAG_STATE_RETIRED, actor=actor, approval=approval)
    before = flag_state_snapshot(state)
    if state.retired:
        raise Conflict(f"legacy is already retired for '{flag}' in {environment}", current_version=state.version)
    if not state.enabled or state.percentage != Decimal(100):
        raise Conflict(f"'{flag}' in {environment} must be enabled at 100% before legacy is retired",
                       current_version=state.version)
    if state.flag.kind == FlagKind.MIGRATION:  # the reconciliation trail first (docs/migrations.md)
        unresolved = state.divergences.filter(resolved_at__isnull=True).count()
        if unresolved:
            raise Conflict(f"'{flag}' in {environment} has {unresolved} unresolved divergence(s): resolve them "
                           "before legacy is retired", current_version=state.version)
    state.retired = True
    state.compare_percentage = Decimal(0)
    retire_stage = state.stages.filter(retires_legacy=True).order_by("position").first()
    if retire_stage is not None and retire_stage.position != state.stage:
        state.stage = retire_stage.position
        state.stage_started_at = clock.now()
    if approval:
        extra = {**(extra or {}), "approval": approval.as_audit()}
    return write_state(state, actor=actor, action=Action.FLAG_STATE_RETIRED, before=before, reason=reason, extra=extra)


def flag_state_retire(*, actor: Actor, flag: str, environment: str, version: int | None = None,
                      reason: str = "", approval: Approval | None = None) -> FlagState:
    """Legacy retired: everyone takes the parallel path. Only from a full (100%) enabled rollout."""
    with audited_atomic():
        state = get_state_for_update(flag, environment)
        retire_state(state, actor=actor, version=version, reason=reason, approval=approval)
        return state
