"""Notification tasks: ids in, one call each, retries here (never in a request)."""

from __future__ import annotations

import logging

from celery import Task, shared_task

from common.conf import get_setting
from notifications.dispatch import DeliveryFailed, delivery_attempt, delivery_failed, notices_queue, retry_countdown
from notifications.outbox import outbox_drain
from notifications.watch import divergences_watch, stale_flags_watch

logger = logging.getLogger("turnout.notifications")


@shared_task
def notify_event(sequence: int) -> int:
    """After an audit event commits: queue its deliveries (``audit.services`` names this task)."""
    return len(notices_queue(sequence))


@shared_task(bind=True, max_retries=None)
def deliver_notification(self: Task[[int], str], delivery_id: int) -> str:
    """Send one delivery; a failure is retried with exponential backoff up to NOTIFY_MAX_RETRIES, then the
    delivery is marked failed (the log says why) and the task ends quietly: a dead channel is not an error
    of anything else."""
    try:
        return "sent" if delivery_attempt(delivery_id) else "skipped"
    except DeliveryFailed as exc:
        final = self.request.retries >= get_setting("NOTIFY_MAX_RETRIES")
        delivery_failed(delivery_id, str(exc), final=final)
        if final:
            return "failed"
        raise self.retry(exc=exc, countdown=retry_countdown(self.request.retries)) from None


@shared_task
def drain_notification_outbox() -> int:
    """Beat (every TURNOUT_OUTBOX_DRAIN_INTERVAL s): hand over the audit events whose notification the
    broker could not take when they were made. Broker still away: nothing is lost, the next run tries."""
    try:
        return outbox_drain()
    except Exception as exc:  # kombu's and redis's errors alike: the rows wait
        logger.warning("notification.outbox_waiting", extra={"error": type(exc).__name__})
        return 0


@shared_task
def watch_divergences() -> int:
    """Beat (every minute): one notice per flag state with new unresolved divergences, at most once per
    TURNOUT_NOTIFY_DIVERGENCE_INTERVAL; how many flag states were reported."""
    return len(divergences_watch())


@shared_task
def watch_stale_flags() -> int:
    """Beat (hourly): one notice when the stale-flag report finds flags that were not stale before."""
    return len(stale_flags_watch())
