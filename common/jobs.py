"""Queueing background work by task name.

Tasks are thin interfaces that import the services they run; a service that starts background work
therefore names the task instead of importing its module (an import would point the arrow back and close
a loop). Each app's ``AppConfig.ready`` imports its ``tasks`` module, so in every process with Django set
up the name resolves to the registered task and ``delay`` behaves exactly as on the task itself (eager in
tests, the broker otherwise). An unknown name raises ``KeyError`` at once rather than queueing a message
no worker knows.
"""

from __future__ import annotations

from typing import Any

from celery import current_app

from common.redis import breaker


def enqueue(task: str, *args: Any) -> None:
    """``task.delay(*args)`` for the task registered under ``task`` (its dotted name). Call it inside
    ``transaction.on_commit`` when the work reads what the caller's transaction writes."""
    current_app.tasks[task].delay(*args)


def enqueue_or_drop(task: str, *args: Any) -> None:
    """Queue ``task`` on the request path without ever waiting on the broker: refused at once while this
    process has seen Redis fail (its breaker is open), and sent without Celery's publish retries otherwise
    (one attempt, bounded by the broker's connect and socket timeouts). Raises when it could not queue —
    the caller decides what a lost message costs; for work that must not be lost, use the outbox."""
    if breaker.is_open and str(current_app.conf.broker_url or "").startswith(("redis://", "rediss://")):
        raise ConnectionError("broker unavailable: Redis is down for this process")
    current_app.tasks[task].apply_async(args=args, retry=False)
