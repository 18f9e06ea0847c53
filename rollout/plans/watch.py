"""A metrics batch that shows a breach asks for a guardrail check at once (not at the next beat).

Called by the SDK metrics endpoint after the batch is counted. Cheap on the request path: a batch
without a parallel error or a mismatch costs nothing (no query); otherwise one query for the
guardrails of the flags it names, a judgement of the batch's own figures (the same ``judge`` the
check uses, minimum sample size aside: the check applies it to the whole window), and for each
flag state the batch breaches, an enqueue of ``rollout.tasks.check_guardrail`` — at most one per
flag state every ``TURNOUT_GUARDRAIL_TRIGGER_DEBOUNCE`` seconds (a Redis ``SET NX PX``, or this
process's memory without Redis). Nothing here can fail the ingest: a broker or Redis that is down
is logged, and the periodic check still runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from common.conf import get_setting
from common.redis import get_redis
from rollout.models import Guardrail
from rollout.plans.health import judge
from rollout.telemetry.batches import Batch
from rollout.telemetry.reads import PathStats

logger = logging.getLogger("turnout.guardrails")

DEBOUNCE_PREFIX = "turnout:guardrail:triggered:"
_local_lock = threading.Lock()
_local_last: dict[int, float] = {}


def batch_breaches(environment_id: int, batch: Batch) -> list[int]:
    """Flag states (ids) with a guardrail whose limits this batch's own figures exceed."""
    suspects = {row.flag for row in batch.rows
                if (row.path == "parallel" and row.counts["errors"]) or row.counts["mismatches"]}
    if not suspects:
        return []
    stats: dict[str, dict[str, PathStats]] = {}
    for row in batch.rows:
        if row.flag in suspects:
            paths = stats.setdefault(row.flag, {"legacy": PathStats(), "parallel": PathStats()})
            paths[row.path].add(calls=row.counts["calls"], runs=row.counts["runs"], errors=row.counts["errors"],
                                comparisons=row.counts["comparisons"], mismatches=row.counts["mismatches"],
                                histogram=row.latency)
    guardrails = (Guardrail.objects.filter(flag_state__environment_id=environment_id, flag_state__enabled=True,
                                           flag_state__retired=False, flag_state__flag__key__in=sorted(suspects))
                  .select_related("flag_state__flag"))
    breached = []
    for g in guardrails:
        paths = stats[g.flag_state.flag.key]
        if any(c.ok is False for c in judge(g, paths["legacy"], paths["parallel"]).checks):
            breached.append(g.flag_state_id)
    return breached


def _first_in_a_while(flag_state_id: int, seconds: float) -> bool:
    """True for the first trigger of a flag state in ``seconds`` (all processes with Redis)."""
    client = get_redis()
    if client is not None:
        return bool(client.set(f"{DEBOUNCE_PREFIX}{flag_state_id}", "1", nx=True, px=max(1, int(seconds * 1000))))
    now = time.monotonic()
    with _local_lock:
        if now - _local_last.get(flag_state_id, -seconds - 1) < seconds:
            return False
        _local_last[flag_state_id] = now
        return True


def trigger_checks(environment_id: int, batch: Batch, enqueue: Callable[[int], object]) -> list[int]:
    """Enqueue a check (``enqueue(flag_state_id)``) for every flag state this batch breaches,
    debounced. Returns the ones enqueued. Never raises."""
    try:
        breached = batch_breaches(environment_id, batch)
    except Exception:
        logger.warning("guardrail.trigger_failed", exc_info=True, extra={"environment_id": environment_id})
        return []
    seconds = get_setting("GUARDRAIL_TRIGGER_DEBOUNCE")
    enqueued = []
    for flag_state_id in breached:
        try:
            if _first_in_a_while(flag_state_id, seconds):
                enqueue(flag_state_id)
                enqueued.append(flag_state_id)
        except Exception as exc:  # the broker or Redis is away: the periodic check still runs
            logger.warning("guardrail.trigger_failed", extra={"flag_state": flag_state_id,
                                                              "error": type(exc).__name__})
    if enqueued:
        logger.info("guardrail.check_triggered", extra={"flag_states": enqueued})
    return enqueued
