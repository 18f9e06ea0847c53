from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from cohorts.models import Cohort
from common.models import KeyField, TimestampedModel

PERCENT_VALIDATORS = [MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))]


class Environment(TimestampedModel):
    key = KeyField(unique=True)
    name = models.CharField(max_length=100)
    order = models.PositiveIntegerField(default=0)
    requires_approval = models.BooleanField(default=False)
    # Grows on every change that alters this environment's ruleset (ETag, stream, SDK caches).
    ruleset_version = models.PositiveBigIntegerField(default=1)

    class Meta:
        ordering = ["order", "key"]

    def __str__(self) -> str:
        return self.key


class Risk(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"


class Phase(models.TextChoices):
    DEVELOPMENT = "development", "Development"
    VALIDATION = "validation", "Validation"
    PILOT = "pilot", "Pilot"
    TRANSITION = "transition", "Transition"
    RETIRED = "retired", "Retired"


class Reversibility(models.TextChoices):
    STATELESS = "stateless", "Stateless"
    DUAL_WRITE = "dual_write", "Dual write"
    IRREVERSIBLE = "irreversible", "Irreversible"


class Workload(TimestampedModel):
    """A piece of work moving from the legacy system to the parallel one."""

    key = KeyField(unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    owner = models.CharField(max_length=200, blank=True, default="")
    risk = models.CharField(max_length=8, choices=Risk.choices, default=Risk.MEDIUM)
    phase = models.CharField(max_length=11, choices=Phase.choices, default=Phase.DEVELOPMENT)
    reversibility = models.CharField(max_length=12, choices=Reversibility.choices, default=Reversibility.STATELESS)
    legacy_system = models.CharField(max_length=200, blank=True, default="")
    parallel_system = models.CharField(max_length=200, blank=True, default="")
    version = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(condition=models.Q(risk__in=Risk.values), name="workload_risk_valid"),
            models.CheckConstraint(condition=models.Q(phase__in=Phase.values), name="workload_phase_valid"),
            models.CheckConstraint(
                condition=models.Q(reversibility__in=Reversibility.values), name="workload_reversibility_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.key


class Flag(TimestampedModel):
    """The switch a service asks about: legacy or parallel for this subject?"""

    key = KeyField(unique=True)
    workload = models.ForeignKey(Workload, on_delete=models.PROTECT, related_name="flags")
    description = models.TextField(blank=True, default="")
    salt = models.CharField(max_length=100)
    bucket_by = models.CharField(
        max_length=100, blank=True, default="", help_text="Attribute to bucket by (empty: the context key)."
    )

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class FlagStateQuerySet(models.QuerySet["FlagState"]):
    def for_ruleset(self) -> FlagStateQuerySet:
        return self.select_related("flag").prefetch_related("include_cohorts", "exclude_cohorts")


class FlagState(models.Model):
    """A flag's rollout in one environment."""

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="states")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="flag_states")
    enabled = models.BooleanField(default=False)
    retired = models.BooleanField(default=False)
    percentage = models.DecimalField(max_digits=7, decimal_places=4, default=Decimal("0"),
                                     validators=PERCENT_VALIDATORS)
    compare_percentage = models.DecimalField(max_digits=7, decimal_places=4, default=Decimal("0"),
                                             validators=PERCENT_VALIDATORS)
    include_cohorts = models.ManyToManyField(Cohort, blank=True, related_name="included_by")
    exclude_cohorts = models.ManyToManyField(Cohort, blank=True, related_name="excluded_by")
    overrides = models.JSONField(default=dict, blank=True)
    stage = models.PositiveIntegerField(default=0)
    # Optimistic concurrency: a write names the version it read; a stale one gets 409.
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    objects = FlagStateQuerySet.as_manager()

    class Meta:
        ordering = ["flag__key", "environment__order"]
        constraints = [
            # One rollout per flag and environment.
            models.UniqueConstraint(fields=["flag", "environment"], name="flag_state_unique_env"),
            # Percentages are shares of subjects: 0 to 100.
            models.CheckConstraint(condition=models.Q(percentage__gte=0, percentage__lte=100),
                                   name="flag_state_percentage_range"),
            models.CheckConstraint(condition=models.Q(compare_percentage__gte=0, compare_percentage__lte=100),
                                   name="flag_state_compare_percentage_range"),
        ]

    def __str__(self) -> str:
        return f"{self.flag_id}@{self.environment_id}"


class SecretQuerySet(models.QuerySet):  # type: ignore[type-arg]
    def active(self):  # type: ignore[no-untyped-def]
        return self.filter(revoked_at__isnull=True)


class SdkKey(models.Model):
    """A service's key: reads one environment's ruleset and reports metrics, nothing else."""

    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="sdk_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64, unique=True, help_text="sha256 of the whole key")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True, default="")
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = SecretQuerySet.as_manager()

    class Meta:
        ordering = ["environment__order", "name"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"


class ApiToken(models.Model):
    """A person's or an automation's token for the management API, acting as its user."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64, unique=True, help_text="sha256 of the whole token")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = SecretQuerySet.as_manager()

    class Meta:
        ordering = ["user__username", "name"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"


class MetricPath(models.TextChoices):
    LEGACY = "legacy", "Legacy"
    PARALLEL = "parallel", "Parallel"


class MetricMinute(models.Model):
    """What SDKs reported for one flag, path and minute in one environment (rolled up from Redis,
    or counted here directly in embedded mode). Later roll-ups (hourly, retention) read these rows.

    ``flag_key`` is the key SDKs asked about, not a foreign key: calls for a flag that does not
    exist (FLAG_NOT_FOUND) are counted too, and counts outlive a deleted flag.
    """

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="metric_minutes")
    flag_key = models.CharField(max_length=100)
    path = models.CharField(max_length=8, choices=MetricPath.choices)
    minute = models.DateTimeField(help_text="Start of the minute (UTC) in which the server received the counts.")
    calls = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    fallbacks = models.PositiveBigIntegerField(default=0)
    comparisons = models.PositiveBigIntegerField(default=0)
    mismatches = models.PositiveBigIntegerField(default=0)
    compare_skipped = models.PositiveBigIntegerField(default=0)
    compare_errors = models.PositiveBigIntegerField(default=0)
    compare_timeouts = models.PositiveBigIntegerField(default=0)
    # Calls per fixed latency bucket (turnout.wire.LATENCY_BUCKETS_MS; the last counts the rest).
    latency_ms = models.JSONField(default=list)
    error_codes = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["minute", "flag_key", "path"]
        constraints = [
            # One row per flag, path and minute: counts are added to it, never duplicated beside it.
            models.UniqueConstraint(fields=["environment", "flag_key", "path", "minute"],
                                    name="metric_minute_unique"),
            models.CheckConstraint(condition=models.Q(path__in=MetricPath.values), name="metric_minute_path_valid"),
        ]
        indexes = [models.Index(fields=["minute"], name="metric_minute_minute_idx")]

    def __str__(self) -> str:
        return f"{self.flag_key}/{self.path}@{self.minute:%Y-%m-%d %H:%M}"


class MismatchSample(models.Model):
    """A few comparisons per minute whose legacy and parallel results differed, as the host's
    redaction hook left them (the subject only as ``key_hash``)."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="mismatch_samples")
    flag_key = models.CharField(max_length=100)
    version = models.PositiveBigIntegerField(null=True, blank=True)
    key_hash = models.CharField(max_length=64)
    served = models.CharField(max_length=8, blank=True, default="")
    legacy = models.JSONField(null=True)
    parallel = models.JSONField(null=True)
    truncated = models.BooleanField(default=False)
    at = models.DateTimeField(help_text="When the SDK saw the mismatch (its clock).")
    minute = models.DateTimeField(help_text="The minute the server received it.")

    class Meta:
        ordering = ["-minute", "flag_key"]
        indexes = [models.Index(fields=["environment", "flag_key", "minute"], name="mismatch_sample_flag_idx")]

    def __str__(self) -> str:
        return f"{self.flag_key}@{self.minute:%Y-%m-%d %H:%M}"


class MetricRollup(models.Model):
    """One claimed Redis minute that was written to MetricMinute: its claim id is unique, so a
    claim is applied once even when a crashed roll-up is finished by another run."""

    claim = models.CharField(max_length=100)
    minute = models.DateTimeField()
    rows = models.PositiveIntegerField(default=0)
    rolled_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-rolled_at"]
        constraints = [
            # Exactly-once: applying the same claimed counts twice fails here and rolls back.
            models.UniqueConstraint(fields=["claim"], name="metric_rollup_claim_unique"),
        ]

    def __str__(self) -> str:
        return self.claim
