"""The notification outbox: audit events people may have to be told about, waiting for the broker.

``audit.services.audit_record`` writes the row in the change's own transaction and hands it to the
notification task after commit, without ever waiting on a broker that is down or hung; a row the broker
did not take waits here. It is handed over by Celery beat (``drain_notification_outbox``, every
``TURNOUT_OUTBOX_DRAIN_INTERVAL`` seconds) and by any web process whose Redis circuit breaker sees
Redis answer again — so a notification is late during an outage, never lost.
"""

from __future__ import annotations

import logging

from django.db import connection

from audit.models import NotificationOutbox
from audit.services import notification_hand_over
from common.redis import breaker

logger = logging.getLogger("turnout.notifications")

OUTBOX_BATCH = 200


def outbox_drain(*, batch: int = OUTBOX_BATCH) -> int:
    """Hand waiting events to the notification task, oldest first; how many were handed over. Raises when
    the broker does not take one (it and the rest wait for the next drain)."""
    handed = 0
    for sequence in NotificationOutbox.objects.order_by("sequence").values_list("sequence", flat=True)[:batch]:
        if notification_hand_over(sequence, on_request_path=False):
            handed += 1
    if handed:
        logger.info("notification.outbox_drained", extra={"events": handed})
    return handed


def drain_after_recovery() -> None:
    """Redis answers again in this process (run by the breaker in a thread of its own)."""
    try:
        outbox_drain()
    except Exception as exc:  # the next beat run tries again
        logger.warning("notification.outbox_waiting", extra={"error": type(exc).__name__})
    finally:
        connection.close()  # a thread of its own: do not keep a connection there


breaker.on_recovery(drain_after_recovery)
