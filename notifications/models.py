"""Subscriptions (who wants to hear what, where) and the delivery log (what was sent, or why not)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from common.models import TimestampedModel


class Channel(models.TextChoices):
    EMAIL = "email", "E-mail"
    SLACK = "slack", "Slack incoming webhook"
    TEAMS = "teams", "Microsoft Teams incoming webhook"
    WEBHOOK = "webhook", "Signed webhook (JSON)"


class Subscription(TimestampedModel):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="subscriptions")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    address = models.CharField(max_length=500, help_text="an e-mail address, or the URL to POST to")
    kinds = models.JSONField(default=list, help_text="notification kinds (notifications.kinds.Kind values)")

    class Meta:
        ordering = ["user_id", "channel", "address"]
        constraints = [
            # One subscription per person and destination: its kinds say what goes there.
            models.UniqueConstraint(fields=["user", "channel", "address"], name="subscription_once_per_address"),
        ]

    def __str__(self) -> str:
        return f"{self.channel}:{self.address}"


class DeliveryStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RETRYING = "retrying", "Retrying"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class Delivery(TimestampedModel):
    """One notice to one subscription: the log admins read. Kept when the subscription goes."""

    subscription = models.ForeignKey(Subscription, on_delete=models.SET_NULL, null=True, related_name="deliveries")
    username = models.CharField(max_length=150)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    address = models.CharField(max_length=500)
    kind = models.CharField(max_length=64)
    audit_sequence = models.BigIntegerField(help_text="the audit event it tells of")
    subject = models.CharField(max_length=300)
    text = models.TextField()
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # A notification task run twice (a worker restart) queues nothing twice.
            models.UniqueConstraint(fields=["subscription", "audit_sequence", "kind"],
                                    name="delivery_once_per_event_and_kind"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.audit_sequence} to {self.channel}"
