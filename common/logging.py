"""Structured log lines: an event name, ids, and the request id; never personal data.

``LOG_FORMAT=json`` (the production default) writes one JSON object per line with ``time``,
``level``, ``logger``, ``event``, ``request_id`` (inside a request, or a task started by one),
``task``/``task_id`` (inside a Celery task) and the ``extra`` fields of the call;
``LOG_FORMAT=plain`` writes the same fields as ``key=value`` text for a terminal.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from common.request_context import current_request_id, current_task

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "color_message"}


def _context(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    rid = current_request_id()
    if rid:
        fields["request_id"] = rid
    task = current_task()
    if task:
        fields["task"], fields["task_id"] = task
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%d %H:%M:%S")
        fields = " ".join(f"{key}={value}" for key, value in _context(record).items())
        line = f"{stamp} {record.levelname} {record.name} {record.getMessage()}"
        if fields:
            line = f"{line} {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line
