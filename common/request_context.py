"""The current request id, carried to audit events and log lines."""

from __future__ import annotations

import contextvars

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("turnout_request_id", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()
