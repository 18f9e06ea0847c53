"""Prometheus metrics (``prometheus_client``), exposed at ``/metrics``.

Other modules record through the objects and small functions here; nothing else creates metrics.

Several processes: gunicorn workers (and Celery processes on the same host) each count in their own
process. With ``PROMETHEUS_MULTIPROC_DIR`` set (an empty directory, wiped before the processes
start), ``prometheus_client`` keeps every process's values in memory-mapped files there and
``/metrics`` sums them, so one scrape of any worker sees the whole host. Without it, ``/metrics``
shows the answering process only (fine for one process). See docs/operations.md.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from common import heartbeats
from common.auth import bearer
from common.conf import get_setting
from common.secrets import digest, matches

logger = logging.getLogger("turnout.metrics")


def multiprocess_dir() -> str | None:
    return getattr(settings, "PROMETHEUS_MULTIPROC_DIR", None) or None


def _ensure_multiprocess_dir() -> None:
    # A process started with the variable set (a management command, say) needs the directory to
    # exist before its first value is written; gunicorn's master creates it empty for the workers.
    directory = multiprocess_dir()
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)


_ensure_multiprocess_dir()

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "turnout_http_requests", "HTTP requests answered, by route pattern and status.", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "turnout_http_request_duration_seconds",
    "Time to produce a response (for a stream: until it starts).",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
EVALUATIONS = Counter(
    "turnout_evaluations",
    "Flag evaluations answered by the server (evaluate API and OFREP), by reason.",
    ["api", "environment", "reason"],
)
BACKGROUND_UP = Gauge(
    "turnout_background_up",
    "1 when the background kind (worker, beat, schedule) has a fresh heartbeat, else 0 (read at scrape).",
    ["kind"], multiprocess_mode="mostrecent",
)
BACKGROUND_AGE = Gauge(
    "turnout_background_heartbeat_age_seconds",
    "Seconds since the newest heartbeat of each background kind (absent: never seen; read at scrape).",
    ["kind"], multiprocess_mode="mostrecent",
)
STREAM_CONNECTIONS = Gauge(
    "turnout_stream_connections", "SDK streams open now.", ["environment"], multiprocess_mode="livesum"
)
STREAM_OPENED = Counter("turnout_stream_connections_opened", "SDK streams opened.", ["environment"])
STREAM_EVENTS = Counter("turnout_stream_events", "Ruleset events sent on SDK streams.", ["environment"])
RULESET_BUILDS = Counter("turnout_ruleset_builds", "Ruleset documents built (once per version).", ["environment"])
RULESET_BUILD_SECONDS = Histogram(
    "turnout_ruleset_build_duration_seconds", "Time to build and cache one ruleset document.", ["environment"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
SDK_METRIC_REPORTS = Counter(
    "turnout_sdk_metric_reports", "SDK metrics batches received, by outcome.", ["environment", "outcome"]
)
GUARDRAIL_ACTIONS = Counter(
    "turnout_guardrail_actions", "Guardrail actions taken (pause, rollback, ...).", ["environment", "action"]
)
TASK_DURATION = Histogram(
    "turnout_task_duration_seconds", "Celery task run time, by task and final state.", ["task", "state"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)


def record_evaluation(*, api: str, environment: str, reason: str, count: int = 1) -> None:
    """``api`` is ``evaluate``, ``evaluate_bulk``, ``ofrep`` or ``ofrep_bulk``; ``reason`` the decision's."""
    EVALUATIONS.labels(api=api, environment=environment, reason=reason).inc(count)


def record_decisions(*, api: str, environment: str, decisions: Iterable[Any]) -> None:
    """Counts a batch of decisions (a bulk evaluation) by reason."""
    for reason, count in Tally(str(d.reason) for d in decisions).items():
        EVALUATIONS.labels(api=api, environment=environment, reason=reason).inc(count)


def record_guardrail_action(*, environment: str, action: str) -> None:
    GUARDRAIL_ACTIONS.labels(environment=environment, action=action).inc()


def record_sdk_report(*, environment: str, outcome: str) -> None:
    """``outcome``: ``accepted`` or ``rejected``."""
    SDK_METRIC_REPORTS.labels(environment=environment, outcome=outcome).inc()


def record_stream_event(*, environment: str, count: int = 1) -> None:
    """``count`` streams were sent a ruleset event (one call per fan-out, not one per stream)."""
    STREAM_EVENTS.labels(environment=environment).inc(count)


def stream_opened(environment: str) -> None:
    """One more open SDK stream (``stream_closed`` when it ends)."""
    STREAM_OPENED.labels(environment=environment).inc()
    STREAM_CONNECTIONS.labels(environment=environment).inc()


def stream_closed(environment: str) -> None:
    STREAM_CONNECTIONS.labels(environment=environment).dec()


def record_ruleset_build(*, environment: str, seconds: float) -> None:
    RULESET_BUILDS.labels(environment=environment).inc()
    RULESET_BUILD_SECONDS.labels(environment=environment).observe(seconds)


def exposition() -> bytes:
    """The text exposition of every metric: summed over processes in multiprocess mode."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def record_background() -> None:
    """The heartbeats' ages into ``/metrics`` (called as it is scraped)."""
    try:
        found = heartbeats.ages()
    except Exception as exc:
        logger.warning("metrics.heartbeats_unreadable", extra={"error": type(exc).__name__})
        return
    for kind, age in found.items():
        BACKGROUND_UP.labels(kind=kind).set(1 if heartbeats.describe(age) == "ok" else 0)
        if age is None:
            try:
                BACKGROUND_AGE.remove(kind)
            except KeyError:
                pass
        else:
            BACKGROUND_AGE.labels(kind=kind).set(age)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``; with ``TURNOUT_METRICS_TOKEN`` set, only for ``Authorization: Bearer <token>``."""
    token = get_setting("METRICS_TOKEN")
    if token and not matches(bearer(request) or "", digest(token)):
        response = HttpResponse("metrics need the scrape token\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    record_background()
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
