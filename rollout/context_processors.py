"""The banner every page shows while guardrails are not being checked (base.html includes it)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.http import HttpRequest

from common import heartbeats
from rollout.models import FlagState

logger = logging.getLogger("turnout.heartbeat")

# Asked at most this often per process: a page render should not cost two more queries each time.
CHECK_SECONDS = 5.0

_lock = threading.Lock()
_memo: tuple[float, dict[str, str]] = (0.0, {})


def _missing() -> dict[str, str]:
    """Background kinds that are not ok, when at least one rollout has guardrails to check."""
    if not FlagState.objects.filter(enabled=True, retired=False, guardrail__isnull=False).exists():
        return {}
    return {kind: state for kind, state in heartbeats.status().items() if state != "ok"}


def guardrail_watch(request: HttpRequest) -> dict[str, Any]:
    global _memo
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    now = time.monotonic()
    expires, missing = _memo
    if now >= expires:
        try:
            missing = _missing()
        except Exception as exc:  # never break a page over its banner
            logger.warning("heartbeat.banner_failed", extra={"error": type(exc).__name__})
            missing = {}
        with _lock:
            _memo = (now + CHECK_SECONDS, missing)
    return {"guardrails_unwatched": missing}


def forget() -> None:
    """Drop the memo (tests)."""
    global _memo
    with _lock:
        _memo = (0.0, {})
