"""Celery tasks of the feedback area (thin: call one service)."""

from __future__ import annotations

from celery import shared_task

from rollout.feedback.services import feedback_retention as delete_old


@shared_task
def feedback_retention() -> dict[str, int]:
    """Beat (hourly): delete feedback older than TURNOUT_FEEDBACK_DAYS (a bounded batch per run)."""
    return {"deleted": delete_old().deleted}
