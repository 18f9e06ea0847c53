"""Background work for rollouts (thin: ids in, one service or builder call)."""

from __future__ import annotations

from celery import shared_task

from rollout.ruleset import get_ruleset


@shared_task(bind=True, max_retries=3, default_retry_delay=2)
def warm_ruleset(self, environment_id: int) -> int | None:  # type: ignore[no-untyped-def]
    """Build (or find) the current ruleset of an environment in the shared cache; returns its version."""
    built = get_ruleset(environment_id)
    return built.version if built else None


@shared_task(bind=True, max_retries=3, default_retry_delay=5)
def rollup_metrics(self, include_open: bool = False) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Move closed minutes of SDK metrics from Redis into MetricMinute rows (beat: every minute)."""
    from rollout.services.metrics import metrics_rollup

    result = metrics_rollup(include_open=include_open)
    return {"minutes": result.minutes, "rows": result.rows, "samples": result.samples,
            "recovered": result.recovered}
