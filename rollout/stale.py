"""Stale flags: migrations that finished (or stalled) long ago, whose code paths should be deleted —
with the last SDK evaluation seen per environment (from metrics), and archiving for flags nobody
evaluates any more (archived flags leave every ruleset; restorable).

Archive and restore are actions (``actions.registry``): the UI and the API submit them, policy decides,
and the services below write the change and its audit event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Max

from audit.names import Action
from audit.services import audit_record, audited_atomic
from common import clock
from common.actors import Actor
from common.conf import get_setting
from common.errors import Conflict, NotFound
from common.services import check_version
from rollout.delivery.rulesets import ruleset_changed
from rollout.models import Environment, Flag, MetricHour, MetricMinute
from rollout.policy import Approval, enforce, states_effect


@dataclass
class StaleFlag:
    key: str
    workload: str
    archived: bool
    why: str  # retired / 100% parallel / unchanged
    last_change: datetime | None
    last_evaluated: dict[str, datetime | None] = field(default_factory=dict)  # environment key -> last seen

    @property
    def evaluated_since(self) -> datetime | None:
        seen = [t for t in self.last_evaluated.values() if t is not None]
        return max(seen) if seen else None


def last_evaluations(keys: list[str]) -> dict[str, dict[str, datetime | None]]:
    """flag key -> environment key -> the newest minute (or hour) SDKs reported calls for it."""
    envs = list(Environment.objects.values_list("key", flat=True))
    out: dict[str, dict[str, datetime | None]] = {k: dict.fromkeys(envs) for k in keys}
    for model, column in ((MetricHour, "hour"), (MetricMinute, "minute")):
        rows = (model.objects.filter(flag_key__in=keys, calls__gt=0).values("flag_key", "environment__key")
                .annotate(last=Max(column)))
        for row in rows:
            seen = out[row["flag_key"]]
            previous = seen.get(row["environment__key"])
            if previous is None or (row["last"] is not None and row["last"] > previous):
                seen[row["environment__key"]] = row["last"]
    return out


def stale_flags(*, days: int | None = None, now: datetime | None = None, include_archived: bool = True
                ) -> list[StaleFlag]:
    """Flags whose every environment has been retired, at 100% parallel, or unchanged for ``days``."""
    days = days if days is not None else get_setting("STALE_FLAG_DAYS")
    cutoff = (now or clock.now()) - timedelta(days=days)
    flags = Flag.objects.select_related("workload").prefetch_related("states").order_by("key")
    if not include_archived:
        flags = flags.filter(archived_at__isnull=True)
    found: list[StaleFlag] = []
    for flag in flags:
        states = list(flag.states.all())
        last_change = max((s.updated_at for s in states), default=flag.updated_at)
        if last_change is not None and last_change > cutoff and flag.archived_at is None:
            continue
        live = [s for s in states if s.enabled]
        if live and all(s.retired for s in live):
            why = "legacy retired"
        elif live and all(s.percentage >= 100 for s in live):
            why = "100% parallel"
        else:
            why = "unchanged"
        found.append(StaleFlag(key=flag.key, workload=flag.workload.key, archived=flag.archived_at is not None,
                               why=why, last_change=last_change))
    evaluations = last_evaluations([f.key for f in found])
    for row in found:
        row.last_evaluated = evaluations[row.key]
    return found


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def flag_archive(*, actor: Actor, key: str, version: int | None = None, reason: str = "",
                 approval: Approval | None = None, now: datetime | None = None) -> Flag:
    """Take a flag out of every ruleset. Refused while any SDK still evaluates it (within the stale age):
    an SDK asking for an archived flag gets legacy, which for a retired flag would undo the migration."""
    with audited_atomic():
        flag = Flag.objects.select_for_update().select_related("workload").filter(key=key).first()
        if flag is None:
            raise NotFound(f"flag '{key}' does not exist")
        enforce(actor, Action.FLAG_ARCHIVED, states_effect(flag.states.filter(enabled=True).select_related(
            "environment", "flag__workload")), approval=approval, what=f"archiving flag '{key}'")
        check_version(flag, version, what=f"flag '{key}'")
        if flag.archived_at is not None:
            raise Conflict(f"flag '{key}' is already archived")
        seen = last_evaluations([key])[key]
        recent_since = (now or clock.now()) - timedelta(days=get_setting("STALE_FLAG_DAYS"))
        recent = sorted(env for env, at in seen.items() if at is not None and at > recent_since)
        if recent:
            raise Conflict(f"flag '{key}' is still evaluated in {', '.join(recent)}: delete its code paths first")
        flag.archived_at = now or clock.now()
        flag.version += 1
        flag.save(update_fields=["archived_at", "version", "updated_at"])
        ruleset_changed()
        audit_record(actor=actor, action=Action.FLAG_ARCHIVED, object_type="flag", object_key=key,
                     before={"archived": False, "version": flag.version - 1},
                     after={"archived": True, "version": flag.version,
                            "last_evaluated": {env: _when(at) for env, at in seen.items()},
                            **({"approval": approval.as_audit()} if approval else {})},
                     reason=reason)
    return flag


def flag_restore(*, actor: Actor, key: str, version: int | None = None, reason: str = "",
                 approval: Approval | None = None) -> Flag:
    """Put an archived flag back into every ruleset, its states as they were."""
    with audited_atomic():
        flag = Flag.objects.select_for_update().select_related("workload").filter(key=key).first()
        if flag is None:
            raise NotFound(f"flag '{key}' does not exist")
        enforce(actor, Action.FLAG_RESTORED, states_effect(flag.states.filter(enabled=True).select_related(
            "environment", "flag__workload")), approval=approval, what=f"restoring flag '{key}'")
        check_version(flag, version, what=f"flag '{key}'")
        if flag.archived_at is None:
            raise Conflict(f"flag '{key}' is not archived")
        flag.archived_at = None
        flag.version += 1
        flag.save(update_fields=["archived_at", "version", "updated_at"])
        ruleset_changed()
        audit_record(actor=actor, action=Action.FLAG_RESTORED, object_type="flag", object_key=key,
                     before={"archived": True, "version": flag.version - 1},
                     after={"archived": False, "version": flag.version,
                            **({"approval": approval.as_audit()} if approval else {})},
                     reason=reason)
    return flag
