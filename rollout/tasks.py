"""Background work for rollouts (thin: ids in, one service or builder call)."""

from __future__ import annotations

import logging

import redis
from celery import Task, shared_task

from common.conf import get_setting
from common.heartbeats import beat_schedule_ran
from rollout.datamigration.guardrails import active_migration_ids, migration_guardrail_check
from rollout.delivery.publish import outbox_drain
from rollout.delivery.ruleset import get_ruleset
from rollout.plans.guardrails import active_rollout_ids, guardrail_check, scheduled_rollout_ids, scheduled_start
from rollout.services.webhooks import DeliveryFailed, deliver
from rollout.telemetry.ingest import metrics_drain, metrics_rollup
from rollout.telemetry.mismatches import mismatch_groups_refresh
from rollout.telemetry.retention import metrics_retention as fold

logger = logging.getLogger("turnout.tasks")


@shared_task(bind=True, max_retries=3, default_retry_delay=2)
def warm_ruleset(self: Task[[int], int | None], environment_id: int) -> int | None:
    """Build (or find) the current ruleset of an environment in the shared cache; returns its version."""
    built = get_ruleset(environment_id)
    return built.version if built else None


@shared_task(bind=True, max_retries=3, default_retry_delay=5)
def rollup_metrics(self: Task[[bool], dict[str, int]], include_open: bool = False) -> dict[str, int]:
    """Everything waiting in Redis into MetricMinute rows (beat: every minute, a safety net for
    ``drain_metrics``)."""
    result = metrics_rollup(include_open=include_open)
    return {"minutes": result.minutes, "rows": result.rows, "samples": result.samples,
            "recovered": result.recovered, "batches": result.batches}


@shared_task(ignore_result=True)
def drain_metrics() -> int:
    """Roll up the metrics batches accepted so far (queued by the endpoint when none is queued; see
    rollout/telemetry/ingest.py). Returns the batches applied. A run queued while another is at it
    waits for it, then takes what came since (at most one run waits: the queued flag stays set until a
    run holds the cursor)."""
    return metrics_drain().batches


@shared_task
def check_guardrails() -> dict[str, int]:
    """Beat (every TURNOUT_GUARDRAIL_INTERVAL s): judge every active rollout; breaches act at once."""
    acted = checked = 0
    for state_id in active_rollout_ids():
        try:
            outcome = guardrail_check(flag_state_id=state_id)
        except Exception:  # one rollout's trouble never stops the others' checks
            logger.exception("guardrail.check_failed", extra={"flag_state": state_id})
            continue
        checked += 1
        acted += outcome.acted is not None
    return {"checked": checked, "acted": acted}


@shared_task(ignore_result=True)
def check_guardrail(flag_state_id: int) -> str | None:
    """A metrics batch showed a breach (rollout/plans/watch.py): judge this rollout now, on every batch
    accepted so far (the one that showed the breach may still wait for the roll-up)."""
    metrics_drain()
    return guardrail_check(flag_state_id=flag_state_id).acted


def enqueue_check(flag_state_id: int) -> None:
    """Hand one check to the broker; no retries on the request path (the periodic check remains)."""
    check_guardrail.apply_async(args=(flag_state_id,), retry=False)


@shared_task
def check_migration_guardrails() -> dict[str, int]:
    """Beat (every TURNOUT_GUARDRAIL_INTERVAL s): judge every data migration under way (docs/migrations.md)."""
    acted = checked = 0
    for state_id in active_migration_ids():
        try:
            health = migration_guardrail_check(flag_state_id=state_id)
        except Exception:  # one migration's trouble never stops the others' checks
            logger.exception("migration.guardrail_check_failed", extra={"flag_state": state_id})
            continue
        checked += 1
        acted += health.status == "breached"
    return {"checked": checked, "acted": acted}


@shared_task
def start_scheduled_stages() -> dict[str, int]:
    """Beat (every 15 s): start stages whose scheduled time has come, when healthy."""
    started = 0
    for state_id in scheduled_rollout_ids():
        try:
            started += scheduled_start(flag_state_id=state_id).acted is not None
        except Exception:
            logger.exception("schedule.start_failed", extra={"flag_state": state_id})
    return {"started": started}


@shared_task
def group_mismatches() -> int:
    """Beat (every minute): count new mismatch samples into their groups."""
    return mismatch_groups_refresh()


@shared_task
def metrics_retention() -> dict[str, int]:
    """Beat (hourly): minute rows past the retention become hourly totals; data-migration telemetry past
    its retention is deleted."""
    result = fold()
    return {"minutes": result.minutes, "hours": result.hours, "samples": result.samples,
            "migration_minutes": result.migration_minutes, "consistency_samples": result.consistency_samples}


@shared_task(bind=True, max_retries=None)
def deliver_webhook(self: Task[[str, str], int], url: str, body: str) -> int:
    """POST one webhook; retried with exponential backoff (2, 4, 8 ... s) up to WEBHOOK_MAX_RETRIES."""
    try:
        return deliver(url, body)
    except DeliveryFailed as exc:
        if self.request.retries >= get_setting("WEBHOOK_MAX_RETRIES"):
            logger.error("webhook.gave_up", extra={"url": url, "error": str(exc)})
            raise
        raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 1)) from None


@shared_task
def drain_outbox() -> int:
    """Beat (every TURNOUT_OUTBOX_DRAIN_INTERVAL s): publish ruleset announcements Redis could not
    take when they were made. Redis still away: nothing is lost, the next run tries again."""
    try:
        return outbox_drain()
    except redis.RedisError as exc:
        logger.warning("ruleset.outbox_waiting", extra={"error": type(exc).__name__})
        return 0


@shared_task
def heartbeat() -> None:
    """Beat (every TURNOUT_HEARTBEAT_SECONDS s): proof that beat's schedule reaches a worker — the
    path every guardrail check takes (common/heartbeats.py)."""
    beat_schedule_ran()
