"""The current request id (and, in a Celery worker, the running task), carried to audit events and
log lines."""

from __future__ import annotations

import contextvars

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("turnout_request_id", default=None)
# (task name, task id) while a Celery task runs in this context.
task_var: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("turnout_task", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()


def current_task() -> tuple[str, str] | None:
    return task_var.get()
