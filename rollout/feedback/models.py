"""Feedback entries (telemetry) and the readiness rule that judges them (a change, audited)."""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from turnout.feedback import MAX_COMMENT_CHARS, SCORE_MAX, SCORE_MIN

from rollout.models import FlagState

#: the server's own cap on a comment (an SDK caps at MAX_COMMENT_CHARS; other callers may send more)
COMMENT_MAX = 2 * MAX_COMMENT_CHARS


class FeedbackPath(models.TextChoices):
    LEGACY = "legacy", "Legacy"
    PARALLEL = "parallel", "Parallel"


class PathSource(models.TextChoices):
    DECIDED = "decided", "Decided by the SDK at feedback time"
    GIVEN = "given", "Named by the caller"
    SERVER = "server", "Decided by the server on arrival"


class Feedback(models.Model):
    """One subject's feedback on one flag state: a score and/or a comment, with the path it was on.

    The subject only as ``key_hash``; the comment and attributes as the caller's redaction left them,
    scrubbed again on arrival (``turnout.feedback.scrub_text``). Deleted after ``TURNOUT_FEEDBACK_DAYS``.
    """

    flag_state = models.ForeignKey(FlagState, on_delete=models.CASCADE, related_name="feedback")
    path = models.CharField(max_length=8, choices=FeedbackPath.choices)
    path_source = models.CharField(max_length=7, choices=PathSource.choices, default=PathSource.DECIDED)
    version = models.PositiveBigIntegerField(null=True, blank=True, help_text="The ruleset version that decided")
    key_hash = models.CharField(max_length=64)
    score = models.PositiveSmallIntegerField(null=True, blank=True)
    comment = models.TextField(blank=True, default="")
    attributes = models.JSONField(default=dict, blank=True)
    truncated = models.BooleanField(default=False)
    at = models.DateTimeField(help_text="When the subject gave it (the caller's clock).")
    received_at = models.DateTimeField(help_text="When the server stored it (what windows and retention use).")

    class Meta:
        ordering = ["-received_at", "-pk"]
        indexes = [models.Index(fields=["flag_state", "received_at"], name="feedback_state_received_idx"),
                   models.Index(fields=["received_at"], name="feedback_received_idx")]
        constraints = [
            # The scale every aggregate and rule assumes; a score outside it would skew the averages.
            models.CheckConstraint(condition=models.Q(score__isnull=True)
                                   | models.Q(score__gte=SCORE_MIN, score__lte=SCORE_MAX),
                                   name="feedback_score_range"),
            # Feedback that says nothing is not evidence.
            models.CheckConstraint(condition=models.Q(score__isnull=False) | ~models.Q(comment=""),
                                   name="feedback_score_or_comment"),
            models.CheckConstraint(condition=models.Q(path__in=FeedbackPath.values), name="feedback_path_valid"),
        ]

    def __str__(self) -> str:
        return f"feedback {self.pk} on {self.flag_state_id} ({self.path})"


class FeedbackRule(models.Model):
    """The optional readiness rule of one flag state: parallel's average score may fall at most
    ``max_score_drop`` below legacy's, judged once each path has ``min_responses`` scores within the
    last ``window_days`` days."""

    flag_state = models.OneToOneField(FlagState, on_delete=models.CASCADE, related_name="feedback_rule")
    max_score_drop = models.DecimalField(max_digits=3, decimal_places=2,
                                         validators=[MinValueValidator(Decimal("0")),
                                                     MaxValueValidator(Decimal(SCORE_MAX - SCORE_MIN))])
    min_responses = models.PositiveIntegerField(default=20, validators=[MinValueValidator(1),
                                                                        MaxValueValidator(1_000_000)])
    window_days = models.PositiveSmallIntegerField(default=14, validators=[MinValueValidator(1),
                                                                           MaxValueValidator(365)])
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # A drop beyond the whole scale would never fail; a negative one would demand parallel be better.
            models.CheckConstraint(condition=models.Q(max_score_drop__gte=0, max_score_drop__lte=SCORE_MAX - SCORE_MIN),
                                   name="feedback_rule_drop_range"),
            # A rule judged on no responses would pass on silence.
            models.CheckConstraint(condition=models.Q(min_responses__gte=1), name="feedback_rule_min_responses"),
            models.CheckConstraint(condition=models.Q(window_days__gte=1, window_days__lte=365),
                                   name="feedback_rule_window_range"),
        ]

    def __str__(self) -> str:
        return f"feedback rule of {self.flag_state_id}"
