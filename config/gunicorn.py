"""gunicorn settings for the production web process: ``gunicorn -c config/gunicorn.py config.asgi:application``.

ASGI workers (uvicorn's, through the ``uvicorn-worker`` package) so one process serves requests and
holds SDK streams. Environment (see docs/operations.md): ``BIND`` (default ``127.0.0.1:8000``),
``WEB_CONCURRENCY`` (worker processes, default 2: about one per core), ``WEB_BACKLOG``, ``PROMETHEUS_MULTIPROC_DIR``,
``LOG_FORMAT`` / ``LOG_LEVEL``, ``TURNOUT_ENV``, ``TURNOUT_TRUSTED_PROXIES`` and ``FORWARDED_ALLOW_IPS``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from config import env

bind = env.get_list("BIND", ["127.0.0.1:8000"])
workers = env.get_int("WEB_CONCURRENCY", 2)
worker_class = "uvicorn_worker.UvicornWorker"
# Seconds a worker may go silent before the master replaces it (the uvicorn worker heartbeats while
# it holds idle streams, so long-lived SSE connections do not trip it).
timeout = env.get_int("WEB_TIMEOUT", 30)
# On SIGTERM: stop accepting, let requests finish for this long; SDK streams are cut and reconnect elsewhere.
graceful_timeout = env.get_int("WEB_GRACEFUL_TIMEOUT", 20)
keepalive = env.get_int("WEB_KEEPALIVE", 5)
# Connections the kernel queues before a worker accepts them (capped by net.core.somaxconn). A web
# process restarting under thousands of SDK streams gets them all back at once: with gunicorn's
# default of 2,048 the rest were reset while they waited.
backlog = env.get_int("WEB_BACKLOG", 8192)
# Forwarded headers (X-Forwarded-For/-Proto) are trusted only behind a proxy: with TURNOUT_TRUSTED_PROXIES
# unset or 0 no peer is trusted (a client on the same host cannot pick its apparent address); with it set,
# the peers in FORWARDED_ALLOW_IPS (comma-separated, default 127.0.0.1: a proxy on this host).
_trusted_proxies = env.get_int("TURNOUT_TRUSTED_PROXIES", 0)
forwarded_allow_ips = (env.get("FORWARDED_ALLOW_IPS", "127.0.0.1") or "") if _trusted_proxies > 0 else ""
accesslog = None  # the application writes one structured http.request line per request
errorlog = "-"
loglevel = (env.get("LOG_LEVEL", "INFO") or "INFO").lower()
proc_name = "turnout-web"

_log_format = env.get("LOG_FORMAT", "json" if env.get("TURNOUT_ENV") == "production" else "plain")
logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "common.logging.JsonFormatter"},
        "plain": {"()": "common.logging.PlainFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": _log_format}},
    "loggers": {
        "gunicorn.error": {"handlers": ["console"], "level": loglevel.upper(), "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}

_multiproc_dir = env.get("PROMETHEUS_MULTIPROC_DIR")


def on_starting(server: Any) -> None:
    """Master start: Prometheus's multiprocess directory starts empty (values of old pids would add up)."""
    if _multiproc_dir:
        path = Path(_multiproc_dir)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)


def child_exit(server: Any, worker: Any) -> None:
    """A worker ended: drop its live gauges (open streams) from the sum."""
    if _multiproc_dir:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
