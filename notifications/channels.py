"""Sending one notice down one channel: e-mail through Django's mail, the rest as JSON POSTs.

Slack and Teams incoming webhooks take ``{"text": …}``; the generic webhook gets the signed envelope
of docs/webhooks.md (``X-Turnout-Signature`` with ``TURNOUT_WEBHOOK_SECRET``). Every failure is a
``DeliveryFailed`` naming the channel's answer; the task decides about retrying.
"""

from __future__ import annotations

import json
import smtplib
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import send_mail

from notifications.models import Channel
from rollout.services.webhooks import DeliveryFailed, deliver, envelope

HTTP_CHANNELS = frozenset({Channel.SLACK, Channel.TEAMS, Channel.WEBHOOK})


def shown_address(channel: str, address: str) -> str:
    """What pages and the audit log show of a destination: webhook URLs carry their secret in the path,
    so only the scheme and host are shown."""
    if channel not in HTTP_CHANNELS:
        return address
    parts = urlsplit(address)
    return f"{parts.scheme}://{parts.netloc}/…"


def send(*, channel: str, address: str, subject: str, text: str, payload: dict[str, Any]) -> None:
    if channel == Channel.EMAIL:
        try:
            send_mail(f"[Turnout] {subject}", text, settings.DEFAULT_FROM_EMAIL, [address], fail_silently=False)
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"e-mail to {address}: {type(exc).__name__}: {exc}") from None
        return
    if channel in (Channel.SLACK, Channel.TEAMS):
        body = {"text": f"*{subject}*\n{text}" if channel == Channel.SLACK else f"**{subject}**\n\n{text}"}
    else:
        body = envelope(payload)
    try:
        deliver(address, json.dumps(body, separators=(",", ":"), default=str))
    except DeliveryFailed as exc:
        raise DeliveryFailed(str(exc).replace(address, shown_address(channel, address))) from None
