"""Heartbeats of the background processes, in the database (readable with Redis down).

Three kinds (``Heartbeat.Kind``):

- ``worker``: each Celery worker's main process writes one every ``HEARTBEAT_SECONDS`` from a
  thread started when the worker is ready — the process is alive, even with its broker away;
- ``beat``: the same from the Celery beat process;
- ``schedule``: the ``rollout.tasks.heartbeat`` task, sent by beat through the broker and run by a
  worker — the path every guardrail check and scheduled stage takes. It going stale while the
  processes are alive means the broker is away.

A kind whose newest heartbeat is older than ``HEARTBEAT_STALE_SECONDS`` (or that never wrote one)
is reported by ``/readyz``, ``/metrics`` and the UI banner. A process that stops cleanly deletes its
row, so a scaled-down worker is not reported forever; one killed outright goes stale.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from common.conf import get_setting

logger = logging.getLogger("turnout.heartbeat")

SCHEDULE_NAME = "beat-to-worker"
# Heartbeat.Kind's values (this module is imported by the Celery app before Django's apps load).
WORKER, BEAT, SCHEDULE = "worker", "beat", "schedule"
KINDS = (WORKER, BEAT, SCHEDULE)


def record(kind: str, name: str) -> None:
    from common.models import Heartbeat

    Heartbeat.objects.update_or_create(kind=kind, name=name[:200], defaults={"seen_at": timezone.now()})


def forget(kind: str, name: str) -> None:
    from common.models import Heartbeat

    Heartbeat.objects.filter(kind=kind, name=name[:200]).delete()


def beat_schedule_ran() -> None:
    record(SCHEDULE, SCHEDULE_NAME)


def ages(now: datetime | None = None) -> dict[str, float | None]:
    """Seconds since the newest heartbeat of each kind (None: none recorded)."""
    from common.models import Heartbeat

    now = now or timezone.now()
    newest: dict[str, datetime] = {}
    for kind, seen_at in Heartbeat.objects.values_list("kind", "seen_at"):
        if kind not in newest or seen_at > newest[kind]:
            newest[kind] = seen_at
    return {kind: (max(0.0, (now - newest[kind]).total_seconds()) if kind in newest else None) for kind in KINDS}


def describe(age: float | None) -> str:
    """``ok``, ``stale 95s`` or ``missing`` (never seen, or stopped)."""
    if age is None:
        return "missing"
    if age > float(get_setting("HEARTBEAT_STALE_SECONDS")):
        return f"stale {round(age)}s"
    return "ok"


def status(now: datetime | None = None) -> dict[str, str]:
    return {kind: describe(age) for kind, age in ages(now).items()}


class Beater:
    """A daemon thread writing one kind of heartbeat for this process until stopped."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"turnout-heartbeat-{kind}", daemon=True)

    def start(self) -> Beater:
        self._thread.start()
        return self

    def _run(self) -> None:
        interval = max(0.2, float(get_setting("HEARTBEAT_SECONDS")))
        while True:
            try:
                record(self.kind, self.name)
            except Exception as exc:  # the database away: try again next time
                logger.warning("heartbeat.write_failed", extra={"kind": self.kind, "error": type(exc).__name__})
            finally:
                connection.close()
            if self._stop.wait(interval):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            forget(self.kind, self.name)
        except Exception as exc:
            logger.warning("heartbeat.forget_failed", extra={"kind": self.kind, "error": type(exc).__name__})
        finally:
            connection.close()


_beaters: dict[str, Beater] = {}


def _process_name(prefix: str) -> str:
    return f"{prefix}@{socket.gethostname()}:{os.getpid()}"


def _worker_ready(sender: Any = None, **_: Any) -> None:
    name = getattr(sender, "hostname", None) or _process_name("worker")
    _beaters["worker"] = Beater(WORKER, f"{name}:{os.getpid()}").start()


def _worker_shutdown(**_: Any) -> None:
    beater = _beaters.pop("worker", None)
    if beater is not None:
        beater.stop()


def _beat_init(**_: Any) -> None:
    beater = _beaters["beat"] = Beater(BEAT, _process_name("beat")).start()
    atexit.register(beater.stop)


def connect() -> None:
    from celery import signals

    signals.worker_ready.connect(_worker_ready, weak=False, dispatch_uid="turnout-heartbeat-worker")
    signals.worker_shutdown.connect(_worker_shutdown, weak=False, dispatch_uid="turnout-heartbeat-worker-stop")
    signals.beat_init.connect(_beat_init, weak=False, dispatch_uid="turnout-heartbeat-beat")
