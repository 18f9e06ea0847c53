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


def enqueue(task: str, *args: Any) -> None:
    """``task.delay(*args)`` for the task registered under ``task`` (its dotted name). Call it inside
    ``transaction.on_commit`` when the work reads what the caller's transaction writes."""
    current_app.tasks[task].delay(*args)
