"""From an audit event to deliveries: who is told (subscriptions, roles, four eyes), and the delivery log.

Runs in the worker (``notifications.tasks``), never in a request: the change was committed before any
of this starts, and nothing here can undo or block it. The delivery log is bookkeeping (not audited):
the event it tells of is.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from audit.models import AuditEvent
from audit.names import Action
from common.conf import get_setting
from common.jobs import enqueue
from common.permissions import Capability, can
from notifications.channels import send
from notifications.kinds import Audience, Notice, notices
from notifications.models import Channel, Delivery, DeliveryStatus, Subscription
from rollout.models import ChangeRequest, ReviewItem
from rollout.services.webhooks import DeliveryFailed, notify

logger = logging.getLogger("turnout.notifications")

DELIVER_TASK = "notifications.tasks.deliver_notification"
INVITATION = "user.invitation"  # the kind of an invitation's delivery (nobody subscribes to it)


def _excluded_user(notice: Notice, event: AuditEvent) -> int | None:
    """Who must not be asked to approve or review: the requester, or who broke the glass (by id)."""
    if notice.change_request is not None:
        return ChangeRequest.objects.filter(pk=notice.change_request).values_list("requested_by_id", flat=True).first()
    return ReviewItem.objects.filter(audit_sequence=event.sequence).values_list("actor_user_id", flat=True).first()


def _recipients(notice: Notice, event: AuditEvent, subscriptions: list[Subscription]) -> list[Subscription]:
    wanted = [s for s in subscriptions if notice.kind in s.kinds]
    if notice.audience is Audience.EVERYONE:
        return [s for s in wanted if can(s.user, Capability.READ)]
    if notice.audience is Audience.APPROVERS:
        excluded = _excluded_user(notice, event)
        return [s for s in wanted if s.user_id != excluded and can(s.user, Capability.APPROVE)]
    requester = _excluded_user(notice, event)
    return [s for s in wanted if s.user_id == requester]


def _payload(notice: Notice, event: AuditEvent) -> dict[str, Any]:
    return {"event": notice.kind.value, "subject": notice.subject, "text": notice.text, "action": event.action,
            "object_type": event.object_type, "object_key": event.object_key, "environment": event.environment,
            "actor": event.actor, "reason": event.reason, "audit_sequence": event.sequence,
            "occurred_at": event.occurred_at.isoformat()}


def notices_queue(sequence: int) -> list[int]:
    """Queue one delivery per notice and subscriber for the audit event ``sequence`` (again: nothing new);
    returns the new deliveries' ids. People's actions also go to the configured webhooks (docs/webhooks.md)."""
    event = AuditEvent.objects.filter(sequence=sequence).first()
    if event is None:
        return []
    if event.action == Action.USER_INVITED:
        return _invitation_queue(event)
    found = notices(action=event.action, actor=event.actor, object_key=event.object_key,
                    environment=event.environment, before=event.before, after=event.after, reason=event.reason)
    if not found:
        return []
    subscriptions = list(Subscription.objects.select_related("user").filter(user__is_active=True))
    queued: list[int] = []
    with transaction.atomic():
        for notice in found:
            for sub in _recipients(notice, event, subscriptions):
                try:
                    with transaction.atomic():
                        delivery = Delivery.objects.create(
                            subscription=sub, username=sub.user.get_username(), channel=sub.channel,
                            address=sub.address, kind=notice.kind, audit_sequence=sequence,
                            subject=notice.subject[:300], text=notice.text)
                except IntegrityError:  # queued by an earlier run of this task
                    continue
                queued.append(delivery.pk)
        for pk in queued:
            transaction.on_commit(lambda pk=pk: enqueue(DELIVER_TASK, pk))  # type: ignore[misc]
    if event.actor_type in {"user", "token"}:  # the system's own changes have their webhooks already
        for notice in {n.kind: n for n in found}.values():
            notify(_payload(notice, event))
    return queued


def _invitation_queue(event: AuditEvent) -> list[int]:
    """The invitation's one delivery: to the invited person's address, outside any subscription."""
    after = event.after if isinstance(event.after, dict) else {}
    with transaction.atomic():
        if Delivery.objects.filter(audit_sequence=event.sequence, kind=INVITATION).exists():
            return []  # queued by an earlier run of this task
        delivery = Delivery.objects.create(
            subscription=None, username=event.object_key, channel=Channel.EMAIL, address=str(after.get("email", "")),
            kind=INVITATION, audit_sequence=event.sequence, subject="You are invited to Turnout",
            text=f"{event.actor} invited {event.object_key} (the sign-in link is made when it is sent).")
        transaction.on_commit(lambda: enqueue(DELIVER_TASK, delivery.pk))
    return [delivery.pk]


def _invitation_text(delivery: Delivery, event: AuditEvent) -> str:
    """The invitation's words, with a fresh link: a one-time set-password link (Django's password reset
    token, spent when the password changes and expiring after PASSWORD_RESET_TIMEOUT), or the single
    sign-on link where password sign-in is off. Raises ``DeliveryFailed`` when the person is gone."""
    user = get_user_model().objects.filter(username=delivery.username, is_active=True).first()
    if user is None:
        raise DeliveryFailed(f"'{delivery.username}' was deactivated: the invitation is not sent")
    after = event.after if isinstance(event.after, dict) else {}
    base = str(after.get("url", "")).rstrip("/")
    roles = ", ".join(sorted(g for g in user.groups.values_list("name", flat=True))) or "no role yet"
    inviter = event.actor.split(" via ", 1)[0]  # the person, not their API token
    head = (f"{inviter} invited you to Turnout, where releases move from legacy to new systems step by step.\n\n"
            f"Your username: {user.get_username()}\nYour roles: {roles}\n\n")
    if get_setting("PASSWORD_LOGIN"):
        link = base + reverse("ui:password-set", kwargs={"uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
                                                         "token": default_token_generator.make_token(user)})
        days = max(1, round(settings.PASSWORD_RESET_TIMEOUT / 86400))
        return (head + f"Choose your password here (the link works once, within {days} day(s)):\n{link}\n\n"
                f"Then sign in at {base}/login/")
    name = getattr(settings, "OIDC_PROVIDER_NAME", "single sign-on")
    return head + f"Sign in with {name}:\n{base}/oidc/authenticate/"


def delivery_attempt(delivery_id: int) -> bool:
    """Send one delivery once; True when sent (or sent before), raises ``DeliveryFailed`` otherwise."""
    delivery = Delivery.objects.filter(pk=delivery_id).first()
    if delivery is None or delivery.status in (DeliveryStatus.SENT, DeliveryStatus.FAILED):
        return delivery is not None and delivery.status == DeliveryStatus.SENT
    event = AuditEvent.objects.filter(sequence=delivery.audit_sequence).first()
    payload = {"event": delivery.kind, "subject": delivery.subject, "text": delivery.text,
               "audit_sequence": delivery.audit_sequence,
               **({"action": event.action, "object_type": event.object_type, "object_key": event.object_key,
                   "environment": event.environment, "actor": event.actor, "reason": event.reason,
                   "occurred_at": event.occurred_at.isoformat()} if event else {})}
    Delivery.objects.filter(pk=delivery_id).update(attempts=delivery.attempts + 1, updated_at=timezone.now())
    text = _invitation_text(delivery, event) if delivery.kind == INVITATION and event else delivery.text
    send(channel=delivery.channel, address=delivery.address, subject=delivery.subject, text=text,
         payload=payload)
    Delivery.objects.filter(pk=delivery_id).update(status=DeliveryStatus.SENT, sent_at=timezone.now(),
                                                   last_error="", updated_at=timezone.now())
    logger.info("notification.sent", extra={"delivery": delivery_id, "kind": delivery.kind,
                                            "channel": delivery.channel})
    return True


def delivery_failed(delivery_id: int, error: str, *, final: bool) -> None:
    status = DeliveryStatus.FAILED if final else DeliveryStatus.RETRYING
    Delivery.objects.filter(pk=delivery_id).update(status=status, last_error=error[:2000], updated_at=timezone.now())
    if final:
        logger.error("notification.gave_up", extra={"delivery": delivery_id, "error": error[:300]})


def retry_countdown(retries: int) -> float:
    base: float = float(get_setting("NOTIFY_RETRY_BASE_SECONDS"))
    return base * (1 << retries)


__all__ = ["DeliveryFailed", "delivery_attempt", "delivery_failed", "notices_queue", "retry_countdown"]
