"""Celery signal handlers: task durations for ``/metrics`` and log context inside tasks.

A task published while a request is being served carries that request's id in a message header,
so the worker's log lines for the task share the request's ``request_id``. Connected once by
``config/celery.py``.
"""

from __future__ import annotations

import contextvars
import shutil
import time
from pathlib import Path
from typing import Any

from common.conf import get_setting
from common.metrics import TASK_DURATION, multiprocess_dir
from common.request_context import current_request_id, request_id_var, task_var

REQUEST_ID_HEADER = "turnout_request_id"

_running: dict[str, tuple[float, list[contextvars.Token[Any]]]] = {}


def _before_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    rid = current_request_id()
    if rid and headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, rid)


def _prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if not task_id:
        return
    name = getattr(task, "name", None) or "unknown"
    tokens: list[contextvars.Token[Any]] = [task_var.set((name, task_id))]
    rid = getattr(getattr(task, "request", None), REQUEST_ID_HEADER, None)
    if isinstance(rid, str) and rid:
        tokens.append(request_id_var.set(rid))
    _running[task_id] = (time.perf_counter(), tokens)


def _postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    started = _running.pop(task_id or "", None)
    if started is None:
        return
    start, tokens = started
    name = getattr(task, "name", None) or "unknown"
    TASK_DURATION.labels(task=name, state=state or "UNKNOWN").observe(time.perf_counter() - start)
    for token in reversed(tokens):
        try:
            token.var.reset(token)
        except ValueError:  # set in another context (a thread pool): leave it, the next task replaces it
            token.var.set(None)


def _worker_init(**_: Any) -> None:
    """The worker's main process, before its pool starts: a clean multiprocess directory, and the
    worker's own metrics endpoint when ``TURNOUT_WORKER_METRICS_PORT`` is set."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server

    directory = multiprocess_dir()
    if directory:
        path = Path(directory)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
    port = int(get_setting("WORKER_METRICS_PORT") or 0)
    if port:
        registry = REGISTRY
        if directory:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        start_http_server(port, addr=get_setting("WORKER_METRICS_ADDR"), registry=registry)


def _worker_process_shutdown(pid: int | None = None, **_: Any) -> None:
    if multiprocess_dir() and pid:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def connect() -> None:
    from celery import signals

    signals.worker_init.connect(_worker_init, weak=False, dispatch_uid="turnout-worker-init")
    signals.worker_process_shutdown.connect(_worker_process_shutdown, weak=False,
                                            dispatch_uid="turnout-worker-process-shutdown")
    signals.before_task_publish.connect(_before_publish, weak=False, dispatch_uid="turnout-publish")
    signals.task_prerun.connect(_prerun, weak=False, dispatch_uid="turnout-prerun")
    signals.task_postrun.connect(_postrun, weak=False, dispatch_uid="turnout-postrun")
