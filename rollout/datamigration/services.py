"""Changes to a data migration, performed by the action layer (``actions.registry``) on a locked flag state.

* ``set_migration_state`` — ``migration.stage_set``: the base stage (one step forward at a time), the
  splits ahead and the cohorts placed; never moves anyone backward (that is a rollback) and never skips a
  stage. Entering ``complete`` needs ``rampdown`` everywhere and no unresolved divergence, and is final.
* ``rollback_migration_state`` — ``migration.rolled_back``: the furthest tier one stage back, at once
  (break-glass like every rollback); from ``live``/``rampdown`` it records the divergences written since
  parallel became authoritative, and always needs a reason. ``complete`` cannot be rolled back.
* ``resolve_divergences_state`` — ``migration.divergences_resolved``: divergences someone reconciled.

Each writes its one audit event inside the caller's transaction (the action layer's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db.models import Count, Max, Min, Q, Sum
from turnout.wire import StageCohort

from audit.models import AuditEvent
from audit.names import Action
from audit.services import audit_record
from cohorts.models import Cohort
from common import clock
from common.actors import Actor
from common.errors import Conflict, ValidationFailed
from common.services import UNSET, check_version
from rollout.datamigration.rules import (
    PARALLEL_AUTHORITATIVE,
    STAGES,
    Config,
    backward_moves,
    clean_config,
    position,
    skipped_stages,
    state_of,
)
from rollout.models import Divergence, FlagKind, FlagState, MigrationStage, MigrationState
from rollout.policy import Approval, Effect, enforce, migration_stage_effect, require_approval_if_needed, state_effect
from rollout.services.flags import write_state, write_state_break_glass
from rollout.snapshots import flag_state_snapshot

MAX_RESOLVE = 10_000


def _where(state: FlagState) -> str:
    return f"'{state.flag.key}' in {state.environment.key}"


def require_migration(state: FlagState) -> MigrationState:
    """The flag state's migration row (created at ``off`` on first use); a release flag is refused."""
    if state.flag.kind != FlagKind.MIGRATION:
        raise Conflict(f"flag '{state.flag.key}' is not a migration flag (kind '{state.flag.kind}')")
    m = state_of(state)
    if m is None:
        m = MigrationState.objects.create(flag_state=state)
        state.migration = m
    return m


def migration_snapshot(m: MigrationState | None) -> dict[str, Any]:
    config = Config.of(m)
    return {"stage": config.stage, "splits": list(config.splits), "cohorts": list(config.cohorts),
            "authoritative_since": (m.authoritative_since.isoformat() if m is not None and m.authoritative_since
                                    else None),
            "max_divergences": m.max_divergences if m is not None else None}


def _limit(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10**9:
        raise ValidationFailed.field("max_divergences", "must be a whole number from 0, or null")
    return value


def divergence_summary(state: FlagState, *, since: Any = None) -> dict[str, Any]:
    """Counts of a flag state's divergences (unresolved, and in all), with first and last seen."""
    rows = Divergence.objects.filter(flag_state=state)
    if since is not None:
        rows = rows.filter(last_seen__gte=since)
    agg = rows.aggregate(records=Count("id"), unresolved=Count("id", filter=Q(resolved_at__isnull=True)),
                         writes=Sum("count"), first=Min("first_seen"), last=Max("last_seen"))
    return {"records": agg["records"], "unresolved": agg["unresolved"], "failed_writes": agg["writes"] or 0,
            "first_seen": agg["first"].isoformat() if agg["first"] else None,
            "last_seen": agg["last"].isoformat() if agg["last"] else None,
            "since": since.isoformat() if since is not None else None}


def unresolved_divergences(state: FlagState) -> int:
    return Divergence.objects.filter(flag_state=state, resolved_at__isnull=True).count()


def set_migration_state(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None,
                        reason: str = "", stage: Any = UNSET, splits: Any = UNSET, cohorts: Any = UNSET,
                        max_divergences: Any = UNSET) -> AuditEvent | None:
    """Move a migration forward (inside the caller's transaction); None when nothing changes."""
    check_version(state, version, what=f"flag state '{state.flag.key}@{state.environment.key}'")
    m = require_migration(state)
    old = Config.of(m)
    if old.stage == MigrationStage.COMPLETE:
        raise Conflict(f"the migration of {_where(state)} is complete: it cannot change any more",
                       current_version=state.version)
    new = _new_config(old, stage=stage, splits=splits, cohorts=cohorts)
    enforce(actor, Action.MIGRATION_STAGE_SET, _effect(state, old, new), approval=approval,
            what=f"{Action.MIGRATION_STAGE_SET} of '{state.flag.key}' in {state.environment.key}")
    limit = m.max_divergences if max_divergences is UNSET else _limit(max_divergences)
    if new == old and limit == m.max_divergences:
        return None
    problems = backward_moves(old, new)
    if problems:
        raise ValidationFailed.field("stage", "; ".join(problems) + " — moving subjects back is a rollback")
    problems = skipped_stages(old, new)
    if problems:
        raise ValidationFailed.field("stage", "; ".join(problems))
    extra: dict[str, Any] = {}
    if new.stage == MigrationStage.COMPLETE:
        behind = [c["cohort"] for c in old.cohorts if position(c["stage"]) < position(MigrationStage.RAMPDOWN)]
        if behind:
            raise ValidationFailed.field("stage", f"cohort(s) {', '.join(behind)} are not at 'rampdown' yet: "
                                                  "everyone reaches 'rampdown' before 'complete'")
        open_rows = unresolved_divergences(state)
        if open_rows:
            raise Conflict(f"{_where(state)} has {open_rows} unresolved divergence(s): resolve them before "
                           "'complete' (legacy stops being written)", current_version=state.version)
        new = Config(MigrationStage.COMPLETE)
        extra["irreversible"] = True
    before = {**_state_before(state), "migration": migration_snapshot(m)}
    now = clock.now()
    if new.stage != old.stage:
        m.stage_started_at = now
    if new.parallel_authoritative and not old.parallel_authoritative:
        m.authoritative_since = now
    m.stage, m.splits, m.cohort_stages = new.stage, list(new.splits), list(new.cohorts)
    m.max_divergences = limit
    m.save()
    if new.stage != MigrationStage.OFF and not state.enabled and old.stage == MigrationStage.OFF:
        state.enabled = True  # a migration under way is switched on; kill still turns every subject off
        extra["enabled"] = True
    if approval:
        extra["approval"] = approval.as_audit()
    return write_state(state, actor=actor, action=Action.MIGRATION_STAGE_SET, before=before, reason=reason,
                       extra={"migration": migration_snapshot(m), **extra})


def _new_config(old: Config, *, stage: Any, splits: Any, cohorts: Any) -> Config:
    return clean_config(stage=old.stage if stage is UNSET else stage,
                        splits=list(old.splits) if splits is UNSET else splits,
                        cohorts=list(old.cohorts) if cohorts is UNSET else cohorts,
                        known_cohorts=Cohort.objects.values_list("key", flat=True))


def _authoritative_for_more(old: Config, new: Config) -> bool:
    if new.reach(MigrationStage.LIVE) > old.reach(MigrationStage.LIVE):
        return True
    was = {c["cohort"]: c["stage"] for c in old.cohorts}
    for entry in new.cohorts:
        if entry["stage"] in PARALLEL_AUTHORITATIVE:
            before = was.get(entry["cohort"], old.stage)
            if before not in PARALLEL_AUTHORITATIVE:
                return True
    return False


def _effect(state: FlagState, old: Config, new: Config) -> Effect:
    return migration_stage_effect(state, authoritative_for_more=_authoritative_for_more(old, new),
                                  completes=new.stage == MigrationStage.COMPLETE and old.stage != new.stage)


def stage_change_effect(state: FlagState, params: Mapping[str, Any]) -> Effect:
    """What a ``migration.stage_set`` with ``params`` does, for policy (the action layer asks before
    performing it; the service asks again, the same way)."""
    old = Config.of(state_of(state))
    try:
        new = _new_config(old, stage=params.get("stage", UNSET), splits=params.get("splits", UNSET),
                          cohorts=params.get("cohorts", UNSET))
    except ValidationFailed:  # refused when performed; until then, judged like any change of the state
        return state_effect(state, Action.MIGRATION_STAGE_SET)
    return _effect(state, old, new)


def _state_before(state: FlagState) -> dict[str, Any]:
    return dict(flag_state_snapshot(state))


def rollback_target(old: Config) -> Config:
    """One stage back for the furthest tier: splits at the furthest stage dropped, cohorts there moved
    back one stage, or (when the base is the furthest) the base one stage back."""
    furthest = old.furthest
    if furthest == old.stage:
        back = STAGES[position(old.stage) - 1]
        # splits and cohorts cannot stay ahead by more than one stage of anyone: they follow the base back
        return Config(back, tuple(s for s in old.splits if position(s["stage"]) > position(back)),
                      tuple(c for c in old.cohorts if position(c["stage"]) <= position(old.stage)))
    back = STAGES[position(furthest) - 1]
    splits = tuple(s for s in old.splits if s["stage"] != furthest)
    cohorts = tuple(StageCohort(cohort=c["cohort"], stage=back) if c["stage"] == furthest else c for c in old.cohorts)
    return Config(old.stage, splits, cohorts)


def rollback_migration_state(state: FlagState, *, actor: Actor, version: int | None, reason: str = "",
                             extra: Mapping[str, Any] | None = None) -> AuditEvent:
    """The furthest tier one stage back, at once (never waits for approval; break-glass where approval
    applies). Always with a reason; leaving ``live``/``rampdown`` records the divergences since parallel
    became authoritative."""
    where = _where(state)
    check_version(state, version, what=f"flag state '{state.flag.key}@{state.environment.key}'")
    m = require_migration(state)
    old = Config.of(m)
    if old.stage == MigrationStage.COMPLETE:
        raise Conflict(f"the migration of {where} is complete: 'complete' is irreversible (legacy is no longer "
                       "written)", current_version=state.version)
    if old.furthest == MigrationStage.OFF:
        raise Conflict(f"the migration of {where} is off: nothing to roll back", current_version=state.version)
    if not reason.strip():
        raise ValidationFailed.field("reason", "say why the migration is rolled back")
    new = rollback_target(old)
    marks: dict[str, Any] = {"from_stage": old.furthest, "to_stage": new.furthest, **(extra or {})}
    if old.furthest in PARALLEL_AUTHORITATIVE:
        marks["divergences_since_authoritative"] = divergence_summary(state, since=m.authoritative_since)
    before = {**_state_before(state), "migration": migration_snapshot(m)}
    m.stage, m.splits, m.cohort_stages = new.stage, list(new.splits), list(new.cohorts)
    m.stage_started_at = clock.now()
    if not new.parallel_authoritative:
        m.authoritative_since = None
    m.save()
    return write_state_break_glass(state, actor=actor, action=Action.MIGRATION_ROLLED_BACK, kind="rollback",
                                   before=before, reason=reason, extra={"migration": migration_snapshot(m), **marks})


def resolve_divergences_state(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None,
                              reason: str = "", divergences: Any = ()) -> AuditEvent:
    """Mark divergences reconciled (``divergences``: their ids, or ``"all"`` for every unresolved one)."""
    require_approval_if_needed(state, Action.MIGRATION_DIVERGENCES_RESOLVED, actor=actor, approval=approval)
    require_migration(state)
    if not reason.strip():
        raise ValidationFailed.field("reason", "say how the divergences were reconciled")
    rows = Divergence.objects.select_for_update().filter(flag_state=state, resolved_at__isnull=True)
    if divergences != "all":
        if (not isinstance(divergences, list) or not divergences or len(divergences) > MAX_RESOLVE
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in divergences)):
            raise ValidationFailed.field("divergences", f"must be 'all' or a list of 1 to {MAX_RESOLVE} divergence ids")
        rows = rows.filter(pk__in=divergences)
        found = set(rows.values_list("pk", flat=True))
        missing = sorted(set(divergences) - found)
        if missing:
            raise ValidationFailed.field("divergences", f"divergence {missing[0]} is not an unresolved divergence "
                                                        f"of {_where(state)}")
    ids = sorted(rows.values_list("pk", flat=True))
    if not ids:
        raise Conflict(f"{_where(state)} has no unresolved divergence to resolve")
    resolved_by = (approval.requested_by if approval else actor.label)[:150]
    Divergence.objects.filter(pk__in=ids).update(resolved_at=clock.now(), resolved_by=resolved_by,
                                                 resolution=reason.strip())
    after: dict[str, Any] = {"flag": state.flag.key, "resolved": ids, "count": len(ids),
                             "unresolved_left": unresolved_divergences(state)}
    if approval:
        after["approval"] = approval.as_audit()
    return audit_record(actor=actor, action=Action.MIGRATION_DIVERGENCES_RESOLVED, object_type="flag_state",
                        object_key=f"{state.flag.key}@{state.environment.key}", environment=state.environment.key,
                        before={"unresolved": len(ids) + after["unresolved_left"]}, after=after, reason=reason)
