"""Watching for what no person's action announces: new divergences of data migrations, newly stale flags.

Run by Celery beat (``notifications.tasks``). Each finding is recorded as one audit event by
``system:notifications`` — the event is what subscribers are told of, through the same outbox, notices
and deliveries as a kill switch — and the last such event is also the watch's memory: what was already
told, and when.

- Divergences (``migration.divergences_detected``, per flag state): unresolved divergence records newer
  than the last notice of that flag state. A burst is one notice: after a notice, the flag state is quiet
  for ``TURNOUT_NOTIFY_DIVERGENCE_INTERVAL`` seconds, and what came meanwhile is counted into the next.
- Stale flags (``flags.stale_detected``): flags the stale-flag report (``rollout.stale``) lists that the
  last notice did not.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Max

from audit.models import AuditEvent
from audit.names import Action
from audit.services import audit_record, audited_atomic
from common import clock
from common.actors import Actor
from common.conf import get_setting
from rollout.models import Divergence, FlagState
from rollout.stale import stale_flags

ACTOR = Actor.system("notifications")


def _last(action: str, object_key: str) -> AuditEvent | None:
    return (AuditEvent.objects.filter(action=action, object_key=object_key).order_by("-sequence").first())


def _after(event: AuditEvent | None) -> dict[str, Any]:
    return event.after if event is not None and isinstance(event.after, dict) else {}


def divergences_watch(*, now: datetime | None = None) -> list[AuditEvent]:
    """One ``migration.divergences_detected`` event per flag state with unresolved divergences newer than
    its last one — unless that was less than the interval ago (they wait, counted, for the next)."""
    now = now or clock.now()
    quiet = timedelta(seconds=float(get_setting("NOTIFY_DIVERGENCE_INTERVAL")))
    newest = dict(Divergence.objects.filter(resolved_at__isnull=True).values("flag_state")
                  .annotate(newest=Max("id")).values_list("flag_state", "newest"))
    recorded: list[AuditEvent] = []
    for state_id, newest_id in sorted(newest.items()):
        with audited_atomic():
            # The state's row lock: two beat runs at once record one notice, not two.
            state = (FlagState.objects.select_for_update(of=("self",)).select_related("flag", "environment")
                     .filter(pk=state_id).first())
            if state is None:
                continue
            key = f"{state.flag.key}@{state.environment.key}"
            last = _after(_last(Action.MIGRATION_DIVERGENCES_DETECTED, key))
            through = int(last.get("through_id") or 0)
            if newest_id <= through:
                continue
            told_at = last.get("at")
            if told_at and now - datetime.fromisoformat(told_at) < quiet:
                continue
            fresh = list(Divergence.objects.filter(flag_state=state, resolved_at__isnull=True, id__gt=through)
                         .values_list("origin", "operation", "count"))
            if not fresh:
                continue
            open_count = Divergence.objects.filter(flag_state=state, resolved_at__isnull=True).count()
            by_origin = Counter(f"{origin} {operation}" for origin, operation, _ in fresh)
            recorded.append(audit_record(
                actor=ACTOR, action=Action.MIGRATION_DIVERGENCES_DETECTED, object_type="flag_state",
                object_key=key, environment=state.environment.key,
                after={"new": len(fresh), "open": open_count, "occurrences": sum(n for _, _, n in fresh),
                       "by_origin": dict(sorted(by_origin.items())), "through_id": newest_id,
                       "at": now.isoformat()}))
    return recorded


def stale_flags_watch(*, now: datetime | None = None, days: int | None = None) -> list[AuditEvent]:
    """One ``flags.stale_detected`` event when the stale-flag report (archived flags left out) lists flags
    its last event did not; nothing otherwise."""
    now = now or clock.now()
    days = days if days is not None else int(get_setting("STALE_FLAG_DAYS"))
    found = stale_flags(days=days, now=now, include_archived=False)
    with audited_atomic():
        known = set(_after(_last(Action.FLAGS_STALE_DETECTED, "report")).get("stale") or [])
        new = [row for row in found if row.key not in known]
        if not new:
            return []
        event = audit_record(
            actor=ACTOR, action=Action.FLAGS_STALE_DETECTED, object_type="stale_flags", object_key="report",
            after={"new": [{"key": row.key, "workload": row.workload, "why": row.why} for row in new],
                   "stale": sorted(row.key for row in found), "days": days, "at": now.isoformat()})
    return [event]
