"""Writes of the feedback area: the readiness rule (a change: through the action layer, audited) and
retention (telemetry housekeeping: no audit event, like metrics retention)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction
from turnout.feedback import SCORE_MAX, SCORE_MIN

from audit.models import AuditEvent
from audit.names import Action
from audit.services import audited_atomic
from common import clock
from common.actors import Actor
from common.conf import get_setting
from common.errors import ValidationFailed
from common.services import check_version, full_clean
from rollout.feedback.models import Feedback, FeedbackRule
from rollout.feedback.reads import FeedbackRuleConfig, rule_config
from rollout.models import FlagState
from rollout.policy import Approval, require_approval_if_needed
from rollout.services.flags import get_state_for_update, write_state
from rollout.snapshots import flag_state_snapshot

RULE_FIELDS = frozenset({"max_score_drop", "min_responses", "window_days"})
RETENTION_BATCH = 10_000


def _drop(value: Any) -> Decimal:
    span = SCORE_MAX - SCORE_MIN
    message = f"must be a number from 0 to {span} (score points), or null to remove the rule"
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValidationFailed.field("max_score_drop", message)
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValidationFailed.field("max_score_drop", message) from None
    if not number.is_finite() or not 0 <= number <= span:
        raise ValidationFailed.field("max_score_drop", message)
    if number != number.quantize(Decimal("0.01")):
        raise ValidationFailed.field("max_score_drop", "has at most two decimal places")
    return number.quantize(Decimal("0.01"))


def _whole(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationFailed.field(name, f"must be a whole number from {low} to {high}")
    return int(value)


def set_feedback_rule_state(state: FlagState, *, actor: Actor, version: int | None, reason: str = "",
                            approval: Approval | None = None, **fields: Any) -> AuditEvent:
    """Inside the caller's transaction (the action layer's): create, change or remove (``max_score_drop``
    null) the feedback rule of a locked flag state; omitted fields keep their values."""
    check_version(state, version, what=f"flag state '{state.flag.key}@{state.environment.key}'")
    require_approval_if_needed(state, Action.FLAG_STATE_FEEDBACK_RULE_SET, actor=actor, approval=approval)
    unknown = sorted(set(fields) - RULE_FIELDS)
    if unknown:
        raise ValidationFailed.field(unknown[0], "is not a feedback rule setting")
    rule = FeedbackRule.objects.filter(flag_state=state).first()
    before_rule: FeedbackRuleConfig | None = rule_config(rule)
    if "max_score_drop" in fields and fields["max_score_drop"] is None:
        if rule is None:
            raise ValidationFailed.field("max_score_drop", "there is no feedback rule to remove")
        rule.delete()
        rule = None
    else:
        if rule is None and "max_score_drop" not in fields:
            raise ValidationFailed.field("max_score_drop", "is required to create a feedback rule")
        rule = rule or FeedbackRule(flag_state=state)
        if "max_score_drop" in fields:
            rule.max_score_drop = _drop(fields["max_score_drop"])
        if "min_responses" in fields:
            rule.min_responses = _whole("min_responses", fields["min_responses"], 1, 1_000_000)
        if "window_days" in fields:
            rule.window_days = _whole("window_days", fields["window_days"], 1, 365)
        full_clean(rule, exclude=["flag_state"])
        rule.save()
    before = {**flag_state_snapshot(state), "feedback_rule": before_rule}
    extra: dict[str, Any] = {"feedback_rule": rule_config(rule)}
    if approval:
        extra["approval"] = approval.as_audit()
    # The rule judges readiness; SDK decisions do not change, so the ruleset stays as it is.
    return write_state(state, actor=actor, action=Action.FLAG_STATE_FEEDBACK_RULE_SET, before=before,
                       reason=reason, extra=extra, ruleset=False)


def feedback_rule_set(*, actor: Actor, flag: str, environment: str, version: int | None, reason: str = "",
                      approval: Approval | None = None, **fields: Any) -> FeedbackRule | None:
    """Create, change or remove the feedback rule of a flag state (None once removed)."""
    with audited_atomic():
        state = get_state_for_update(flag, environment)
        set_feedback_rule_state(state, actor=actor, version=version, reason=reason, approval=approval, **fields)
        return FeedbackRule.objects.filter(flag_state=state).first()


@dataclass(frozen=True)
class RetentionResult:
    deleted: int
    cutoff: datetime


def feedback_retention(*, now: datetime | None = None, batch: int = RETENTION_BATCH) -> RetentionResult:
    """Delete feedback received more than ``TURNOUT_FEEDBACK_DAYS`` days ago (one bounded batch)."""
    cutoff = (now or clock.now()) - timedelta(days=get_setting("FEEDBACK_DAYS"))
    with transaction.atomic():
        ids = list(Feedback.objects.filter(received_at__lt=cutoff).order_by("pk").values_list("pk", flat=True)[:batch])
        deleted, _ = Feedback.objects.filter(pk__in=ids).delete()
    return RetentionResult(deleted=deleted, cutoff=cutoff)
