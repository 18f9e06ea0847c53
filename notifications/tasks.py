"""Notification tasks: ids in, one call each, retries here (never in a request)."""

from __future__ import annotations

from celery import Task, shared_task

from common.conf import get_setting
from notifications.dispatch import DeliveryFailed, delivery_attempt, delivery_failed, notices_queue, retry_countdown


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
