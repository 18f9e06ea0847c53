"""Outgoing webhooks (docs/webhooks.md): JSON POSTs signed with HMAC-SHA256, retried by Celery.

``notify(payload)`` is called after commit; it queues one delivery per configured URL. A delivery
that fails (connection error, timeout, non-2xx) is retried with exponential backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from common.conf import get_setting
from common.jobs import enqueue

logger = logging.getLogger("turnout.webhooks")

SIGNATURE_HEADER = "X-Turnout-Signature"
SCHEMA = 1


class DeliveryFailed(Exception):
    pass


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def envelope(payload: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA, "id": str(uuid.uuid4()), "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **payload}


def notify(payload: dict[str, Any]) -> int:
    """Queue the payload for every configured URL; returns how many deliveries were queued."""
    urls = get_setting("WEBHOOK_URLS")
    if not urls:
        return 0
    body = json.dumps(envelope(payload), separators=(",", ":"), default=str)
    for url in urls:
        enqueue("rollout.tasks.deliver_webhook", url, body)
    return len(urls)


def deliver(url: str, body: str) -> int:
    """POST once; returns the status, raises DeliveryFailed on anything but 2xx."""
    data = body.encode()
    event = json.loads(body)
    headers = {"Content-Type": "application/json", "User-Agent": "turnout-webhooks/1",
               "X-Turnout-Event": str(event.get("event", "")), "X-Turnout-Delivery": str(event.get("id", ""))}
    secret = get_setting("WEBHOOK_SECRET")
    if secret:
        headers[SIGNATURE_HEADER] = sign(data, secret)
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=get_setting("WEBHOOK_TIMEOUT")) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"{url} answered {exc.code}") from None
    except (OSError, urllib.error.URLError) as exc:
        raise DeliveryFailed(f"{url}: {exc}") from None
    if not 200 <= status < 300:
        raise DeliveryFailed(f"{url} answered {status}")
    logger.info("webhook.delivered", extra={"event": event.get("event"), "delivery": event.get("id"),
                                            "status": status})
    return status
