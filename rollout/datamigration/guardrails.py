"""Guardrails of a data migration (docs/migrations.md, "Guardrails"), judged by the worker.

A migration flag state's ``Guardrail`` limits are read for its reads and writes since the current stage
began (at most ``window_seconds`` back): ``max_mismatch_rate`` bounds the **inconsistency rate** of reads
that ran both origins (inconsistent / checks, once ``min_sample_size`` checks are in), ``max_error_rate``
the parallel origin's error rate (once ``min_sample_size`` parallel calls are in). ``MigrationState.
max_divergences`` bounds the divergences recorded since the stage began. A breach rolls the migration back
one stage at once, as the system (``system:guardrail``), with the figures in the audit event's reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from actions.submit import submit_state
from audit.names import Action
from common import clock
from common.actors import Actor
from common.errors import ServiceError
from rollout.datamigration.rules import Config
from rollout.models import (
    Divergence,
    FlagKind,
    FlagState,
    Guardrail,
    MigrationMinute,
    MigrationStage,
    MigrationState,
)

logger = logging.getLogger("turnout.migration")
JUDGED = (MigrationStage.SHADOW, MigrationStage.LIVE, MigrationStage.RAMPDOWN)


@dataclass
class MigrationHealth:
    status: str  # healthy, insufficient_data, breached, inactive
    breaches: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def active_migration_ids() -> list[int]:
    """Enabled migration flag states standing beyond ``dual_write`` and not complete, or with a divergence limit."""
    return list(MigrationState.objects.filter(
        flag_state__enabled=True, flag_state__flag__kind=FlagKind.MIGRATION,
    ).exclude(stage=MigrationStage.COMPLETE).values_list("flag_state_id", flat=True))


def judge(state: FlagState, m: MigrationState, *, now: datetime | None = None) -> MigrationHealth:
    now = now or clock.now()
    config = Config.of(m)
    guard = Guardrail.objects.filter(flag_state=state).first()
    if config.furthest not in JUDGED and m.max_divergences is None:
        return MigrationHealth("inactive")
    window = guard.window_seconds if guard is not None else 300
    since = max(filter(None, [m.stage_started_at, now - timedelta(seconds=window)]))
    # Counts are kept per minute: the minute in which the stage began also holds calls made before it, so
    # only whole minutes after it are judged (a check may wait up to a minute after a stage change).
    first_minute = since.replace(second=0, microsecond=0)
    if first_minute < since:
        first_minute += timedelta(minutes=1)
    rows = MigrationMinute.objects.filter(environment_id=state.environment_id, flag_key=state.flag.key,
                                          minute__gte=first_minute)
    checks = inconsistent = parallel_calls = parallel_errors = 0
    for row in rows:
        if row.operation == "read":
            checks += row.checks
            inconsistent += row.inconsistent
        if row.origin == "parallel":
            parallel_calls += row.calls
            parallel_errors += row.errors
    divergences = Divergence.objects.filter(flag_state=state, last_seen__gte=since).count()
    health = MigrationHealth("healthy", figures={
        "since": since.isoformat(), "checks": checks, "inconsistent": inconsistent,
        "parallel_calls": parallel_calls, "parallel_errors": parallel_errors, "divergences": divergences})
    judged = False
    if m.max_divergences is not None:
        judged = True
        if divergences > m.max_divergences:
            health.breaches.append(f"{divergences} divergences since the stage began, above {m.max_divergences}")
    if guard is not None:
        minimum = guard.min_sample_size
        if guard.max_mismatch_rate is not None and checks >= max(minimum, 1):
            judged = True
            rate = 100 * inconsistent / checks
            health.figures["inconsistency_rate"] = round(rate, 4)
            if rate > float(guard.max_mismatch_rate):
                health.breaches.append(f"inconsistency rate {rate:.2f}% of {checks} reads above "
                                       f"{float(guard.max_mismatch_rate):g}%")
        if guard.max_error_rate is not None and parallel_calls >= max(minimum, 1):
            judged = True
            rate = 100 * parallel_errors / parallel_calls
            health.figures["parallel_error_rate"] = round(rate, 4)
            if rate > float(guard.max_error_rate):
                health.breaches.append(f"parallel error rate {rate:.2f}% of {parallel_calls} calls above "
                                       f"{float(guard.max_error_rate):g}%")
    if health.breaches:
        health.status = "breached"
    elif not judged:
        health.status = "insufficient_data"
    return health


def migration_guardrail_check(*, flag_state_id: int, now: datetime | None = None) -> MigrationHealth:
    """Judge one migration; on a breach roll it back one stage through the action layer."""
    state = FlagState.objects.select_related("flag", "environment").filter(pk=flag_state_id).first()
    m = MigrationState.objects.filter(flag_state_id=flag_state_id).first()
    if state is None or m is None:
        return MigrationHealth("inactive")
    health = judge(state, m, now=now)
    if health.status != "breached":
        return health
    reason = "guardrail: " + "; ".join(health.breaches)
    try:
        submit_state(actor=Actor.system("guardrail"), flag=state.flag.key, environment=state.environment.key,
                     action=Action.MIGRATION_ROLLED_BACK, reason=reason, version=state.version)
    except ServiceError as exc:  # moved meanwhile (stale version), or nothing left to roll back: judged again
        logger.info("migration.guardrail_not_applied", extra={"flag_state": flag_state_id, "error": str(exc)})
    else:
        logger.warning("migration.guardrail_rolled_back", extra={"flag_state": flag_state_id})
    return health
