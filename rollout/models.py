from __future__ import annotations

from decimal import Decimal
from typing import TypeVar

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
    description = models.TextField(blank=True, default="", help_text="what this environment is for, who uses it")
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


class FlagKind(models.TextChoices):
    RELEASE = "release", "Release (one path per call)"
    MIGRATION = "migration", "Data migration (read/write stages)"


class Flag(TimestampedModel):
    """The switch a service asks about: legacy or parallel for this subject?"""

    key = KeyField(unique=True)
    # A migration flag moves data: its states carry a stage (MigrationState), read by client.migration().
    kind = models.CharField(max_length=9, choices=FlagKind.choices, default=FlagKind.RELEASE)
    workload = models.ForeignKey(Workload, on_delete=models.PROTECT, related_name="flags")
    description = models.TextField(blank=True, default="")
    salt = models.CharField(max_length=100)
    bucket_by = models.CharField(
        max_length=100, blank=True, default="", help_text="Attribute to bucket by (empty: the context key)."
    )
    version = models.PositiveIntegerField(default=1)
    # Archived: out of every ruleset (nobody evaluates it any more); restorable, never deleted by it.
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(condition=models.Q(kind__in=FlagKind.values), name="flag_kind_valid"),
        ]

    def __str__(self) -> str:
        return self.key


class FlagStateQuerySet(models.QuerySet["FlagState"]):
    def for_ruleset(self) -> FlagStateQuerySet:
        return self.select_related("flag", "migration").prefetch_related("include_cohorts", "exclude_cohorts")


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
    # Position (1-based) of the plan's stage in force; 0 = no stage applied yet.
    stage = models.PositiveIntegerField(default=0)
    # When the current stage began (its soak time counts from here).
    stage_started_at = models.DateTimeField(null=True, blank=True)
    # A paused rollout keeps its split but neither auto-advances nor starts scheduled stages.
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_reason = models.TextField(blank=True, default="")
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


_SecretT = TypeVar("_SecretT", bound=models.Model)


class SecretQuerySet(models.QuerySet[_SecretT]):
    def active(self) -> SecretQuerySet[_SecretT]:
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
    # Runs of the path whose outcome is known (run()/arun(), reported outcomes): what ``errors`` is a share of.
    runs = models.PositiveBigIntegerField(default=0)
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


class MetricCursor(models.Model):
    """How far the roll-up has read the Redis stream of accepted metrics batches
    (rollout/telemetry/ingest.py): the last entry id whose counts are in ``MetricMinute``. Moved in the
    same transaction as the counts it covers, so an entry is applied exactly once however often the
    roll-up dies, is retried or runs twice at the same time."""

    name = models.CharField(max_length=40, unique=True)
    last_id = models.CharField(max_length=40, blank=True, default="")
    batches = models.PositiveBigIntegerField(default=0, help_text="Batches applied so far (all time).")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name}@{self.last_id or '-'}"


class Gate(models.TextChoices):
    MANUAL = "manual", "Manual"
    AUTO = "auto", "Automatic"


class RolloutStage(models.Model):
    """One step of a flag state's rollout plan: who is on the parallel path, who is compared."""

    flag_state = models.ForeignKey(FlagState, on_delete=models.CASCADE, related_name="stages")
    position = models.PositiveIntegerField(help_text="1-based order within the plan")
    name = models.CharField(max_length=100)
    percentage = models.DecimalField(max_digits=7, decimal_places=4, default=Decimal("0"),
                                     validators=PERCENT_VALIDATORS)
    compare_percentage = models.DecimalField(max_digits=7, decimal_places=4, default=Decimal("0"),
                                             validators=PERCENT_VALIDATORS)
    include_cohorts = models.ManyToManyField(Cohort, blank=True, related_name="stages_including")
    min_soak_seconds = models.PositiveIntegerField(default=0)
    gate = models.CharField(max_length=6, choices=Gate.choices, default=Gate.MANUAL)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    retires_legacy = models.BooleanField(default=False)

    class Meta:
        ordering = ["flag_state", "position"]
        constraints = [
            # A plan is an ordered list: one stage per position.
            models.UniqueConstraint(fields=["flag_state", "position"], name="rollout_stage_unique_position"),
            # Position 0 means "no stage applied" on FlagState.stage, so stages start at 1.
            models.CheckConstraint(condition=models.Q(position__gte=1), name="rollout_stage_position_positive"),
            # Percentages are shares of subjects: 0 to 100.
            models.CheckConstraint(condition=models.Q(percentage__gte=0, percentage__lte=100),
                                   name="rollout_stage_percentage_range"),
            models.CheckConstraint(condition=models.Q(compare_percentage__gte=0, compare_percentage__lte=100),
                                   name="rollout_stage_compare_percentage_range"),
            models.CheckConstraint(condition=models.Q(gate__in=Gate.values), name="rollout_stage_gate_valid"),
            # Legacy can only be retired once everyone is already on the parallel path.
            models.CheckConstraint(condition=models.Q(retires_legacy=False) | models.Q(percentage=100),
                                   name="rollout_stage_retire_at_full"),
        ]

    def __str__(self) -> str:
        return f"{self.flag_state_id}#{self.position} {self.name}"


class BreachAction(models.TextChoices):
    PAUSE = "pause", "Pause"
    ROLLBACK = "rollback", "Roll back one stage"
    KILL = "kill", "Kill (everyone to legacy)"


class Guardrail(models.Model):
    """Health limits of one flag state's parallel path; a breach triggers ``action`` at once.

    Rates are percentages (0-100). An unset limit is not checked.
    """

    flag_state = models.OneToOneField(FlagState, on_delete=models.CASCADE, related_name="guardrail")
    max_error_rate = models.DecimalField(max_digits=7, decimal_places=4, null=True, blank=True,
                                         validators=PERCENT_VALIDATORS)
    max_error_rate_increase = models.DecimalField(
        max_digits=7, decimal_places=4, null=True, blank=True, validators=PERCENT_VALIDATORS,
        help_text="percentage points the parallel error rate may exceed legacy's by")
    max_latency_p95_ratio = models.DecimalField(max_digits=8, decimal_places=3, null=True, blank=True,
                                                validators=[MinValueValidator(Decimal("1"))])
    max_mismatch_rate = models.DecimalField(max_digits=7, decimal_places=4, null=True, blank=True,
                                            validators=PERCENT_VALIDATORS)
    min_sample_size = models.PositiveIntegerField(default=100,
                                                  help_text="parallel runs (or comparisons) needed to judge")
    window_seconds = models.PositiveIntegerField(default=300, validators=[MinValueValidator(60),
                                                                          MaxValueValidator(86_400)])
    action = models.CharField(max_length=8, choices=BreachAction.choices, default=BreachAction.ROLLBACK)
    updated_at = models.DateTimeField(auto_now=True)
    # The last check's verdict and figures, kept where every process sees it (the worker writes, the pages
    # and the API read): bookkeeping of the check, not a change of the guardrail, so not audited.
    last_check = models.JSONField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(action__in=BreachAction.values), name="guardrail_action_valid"),
            # Metrics are kept per minute: a shorter window would judge a partial minute.
            models.CheckConstraint(condition=models.Q(window_seconds__gte=60, window_seconds__lte=86_400),
                                   name="guardrail_window_range"),
            # A latency ratio below 1 would forbid the parallel path from merely matching legacy.
            models.CheckConstraint(condition=models.Q(max_latency_p95_ratio__isnull=True)
                                   | models.Q(max_latency_p95_ratio__gte=1), name="guardrail_latency_ratio_min"),
        ]

    def __str__(self) -> str:
        return f"guardrail of {self.flag_state_id}"


class GuardrailQuery(models.Model):
    """A guardrail limit read from Prometheus: a PromQL instant query (``$window`` stands for the guardrail's
    window, e.g. ``300s``) whose value must stay at or below ``max_value``; a breach acts like any other."""

    guardrail = models.ForeignKey(Guardrail, on_delete=models.CASCADE, related_name="queries")
    name = models.CharField(max_length=63)
    query = models.TextField()
    max_value = models.FloatField()

    class Meta:
        ordering = ["guardrail", "name"]
        constraints = [
            # One query per name and guardrail: the name is how checks, audit events and files refer to it.
            models.UniqueConstraint(fields=["guardrail", "name"], name="guardrail_query_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} of {self.guardrail_id}"


class ChangeRequestStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPLIED = "applied", "Approved and applied"
    REJECTED = "rejected", "Rejected"
    STALE = "stale", "Stale"
    CANCELLED = "cancelled", "Cancelled"


class TargetType(models.TextChoices):
    """What a change request changes (``actions.registry`` knows how to lock and version each)."""

    FLAG_STATE = "flag_state", "Flag state"
    FLAG = "flag", "Flag"
    WORKLOAD = "workload", "Workload"
    COHORT = "cohort", "Cohort"


class ChangeRequest(models.Model):
    """A change waiting for a second person: the action it will perform and the version it was based on."""

    target_type = models.CharField(max_length=10, choices=TargetType.choices, default=TargetType.FLAG_STATE)
    target_key = models.CharField(max_length=255, default="",
                                  help_text="flag@environment, or the flag, workload or cohort key")
    flag_state = models.ForeignKey(FlagState, on_delete=models.CASCADE, related_name="change_requests", null=True,
                                   blank=True)
    action = models.CharField(max_length=40)
    params = models.JSONField(default=dict, blank=True)
    based_on_version = models.PositiveIntegerField()
    summary = models.CharField(max_length=300)
    reason = models.TextField(blank=True, default="")
    status = models.CharField(max_length=9, choices=ChangeRequestStatus.choices,
                              default=ChangeRequestStatus.PENDING)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True,
                                     related_name="change_requests")
    requested_by_label = models.CharField(max_length=150)
    created_at = models.DateTimeField()
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="decided_change_requests")
    decided_by_label = models.CharField(max_length=150, blank=True, default="")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "flag_state"], name="change_request_status_state"),
                   models.Index(fields=["target_type", "target_key", "status"], name="change_request_target")]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=ChangeRequestStatus.values),
                                   name="change_request_status_valid"),
            # A flag-state request points at its row (cascade on delete); other targets are named by key.
            models.CheckConstraint(
                condition=models.Q(target_type=TargetType.FLAG_STATE, flag_state__isnull=False)
                | (~models.Q(target_type=TargetType.FLAG_STATE) & models.Q(flag_state__isnull=True)),
                name="change_request_target_row"),
            # Four eyes: whoever applies a change is not who asked for it.
            models.CheckConstraint(
                condition=~models.Q(status=ChangeRequestStatus.APPLIED)
                | ~models.Q(decided_by=models.F("requested_by")),
                name="change_request_four_eyes"),
            # A decided request records when; a pending one has no decision yet.
            models.CheckConstraint(
                condition=models.Q(status=ChangeRequestStatus.PENDING, decided_at__isnull=True)
                | (~models.Q(status=ChangeRequestStatus.PENDING) & models.Q(decided_at__isnull=False)),
                name="change_request_decided_at"),
        ]

    def __str__(self) -> str:
        return f"CR-{self.pk} {self.action} ({self.status})"

    @property
    def target_label(self) -> str:
        return self.target_key if self.target_type == TargetType.FLAG_STATE else f"{self.target_type} {self.target_key}"


class ReviewItem(models.Model):
    """A break-glass action (kill / rollback where approval would be needed) waiting for an approver's review."""

    flag_state = models.ForeignKey(FlagState, on_delete=models.CASCADE, related_name="review_items")
    action = models.CharField(max_length=40)
    actor_label = models.CharField(max_length=150)
    # Who broke the glass, by id: four eyes compares ids, never labels (a label is truncated and free text).
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    reason = models.TextField(blank=True, default="")
    audit_sequence = models.BigIntegerField(help_text="the audit event of the break-glass action")
    created_at = models.DateTimeField()
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True,
                                        blank=True, related_name="+")
    acknowledged_by_label = models.CharField(max_length=150, blank=True, default="")
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"review {self.pk} of {self.action}"


class MismatchGroup(models.Model):
    """Mismatch samples with the same difference shape (fingerprint), counted."""

    flag_state = models.ForeignKey(FlagState, on_delete=models.CASCADE, related_name="mismatch_groups")
    fingerprint = models.CharField(max_length=64)
    shape = models.JSONField(help_text="the difference, with values replaced by their types")
    example = models.JSONField(help_text="one redacted, size-capped sample")
    count = models.PositiveBigIntegerField(default=0)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    flag_version = models.PositiveBigIntegerField(null=True, blank=True, help_text="ruleset version last seen")
    code_version = models.CharField(max_length=100, blank=True, default="")
    known = models.BooleanField(default=False)
    known_reason = models.TextField(blank=True, default="")
    known_by = models.CharField(max_length=150, blank=True, default="")
    known_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-count", "id"]
        constraints = [
            # One group per difference shape per flag state.
            models.UniqueConstraint(fields=["flag_state", "fingerprint"], name="mismatch_group_unique_fingerprint"),
            # A known difference always says why.
            models.CheckConstraint(condition=models.Q(known=False) | ~models.Q(known_reason=""),
                                   name="mismatch_group_known_has_reason"),
        ]

    def __str__(self) -> str:
        return f"{self.flag_state_id}:{self.fingerprint[:12]} ×{self.count}"


class MismatchCursor(models.Model):
    """How far mismatch samples have been counted into groups (one row)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_sample_id = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # There is one stream of samples, so one cursor.
            models.CheckConstraint(condition=models.Q(id=1), name="mismatch_cursor_singleton"),
        ]


class MetricHour(models.Model):
    """Hourly totals of one flag and path in one environment: what ``MetricMinute`` rows become
    after ``METRICS_MINUTE_DAYS`` (rollout/telemetry/retention.py)."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="metric_hours")
    flag_key = models.CharField(max_length=100)
    path = models.CharField(max_length=8)
    hour = models.DateTimeField(help_text="Start of the hour (UTC).")
    calls = models.PositiveBigIntegerField(default=0)
    # Runs of the path whose outcome is known (run()/arun(), reported outcomes): what ``errors`` is a share of.
    runs = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    fallbacks = models.PositiveBigIntegerField(default=0)
    comparisons = models.PositiveBigIntegerField(default=0)
    mismatches = models.PositiveBigIntegerField(default=0)
    compare_skipped = models.PositiveBigIntegerField(default=0)
    compare_errors = models.PositiveBigIntegerField(default=0)
    compare_timeouts = models.PositiveBigIntegerField(default=0)
    latency_ms = models.JSONField(default=list)
    error_codes = models.JSONField(default=dict)

    class Meta:
        ordering = ["hour", "flag_key", "path"]
        constraints = [
            # One row per flag, path and hour: folded minutes add to it.
            models.UniqueConstraint(fields=["environment", "flag_key", "path", "hour"], name="metric_hour_unique"),
            models.CheckConstraint(condition=models.Q(path__in=["legacy", "parallel"]), name="metric_hour_path_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.flag_key}/{self.path}@{self.hour:%Y-%m-%d %H}h"



class OutboxMessage(models.Model):
    """A ruleset announcement not yet handed to Redis (pub/sub and the version cache).

    Written in the transaction of the change that raised the version, so the announcement exists
    exactly when the change does; deleted once published (rollout/delivery/publish.py). With Redis down or
    hung, rows wait here and are published when it returns: after the next commit, by Celery beat
    (``drain_outbox``) and by each web process's stream listener when it reconnects.
    """

    environment = models.CharField(max_length=63)
    version = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]
        indexes = [models.Index(fields=["environment", "version"], name="outbox_env_version")]

    def __str__(self) -> str:
        return f"announce {self.environment} v{self.version}"


# -- data migrations (docs/migrations.md) ----------------------------------------------------------


class MigrationStage(models.TextChoices):
    """The stages of a data migration, in order (``turnout.types.Stage``)."""

    OFF = "off", "Off: legacy only"
    DUAL_WRITE = "dual_write", "Dual write: write both, legacy authoritative, read legacy"
    SHADOW = "shadow", "Shadow: write both, read both and compare, return legacy"
    LIVE = "live", "Live: write both, parallel authoritative, read both and compare, return parallel"
    RAMPDOWN = "rampdown", "Ramp-down: write both, parallel authoritative, read parallel"
    COMPLETE = "complete", "Complete: parallel only (irreversible)"


class MigrationState(models.Model):
    """Where a migration flag's data move stands in one environment: the base stage, shares of
    subjects further ahead (``splits``) and cohorts placed at a stage (``cohort_stages``)."""

    flag_state = models.OneToOneField(FlagState, on_delete=models.CASCADE, related_name="migration")
    stage = models.CharField(max_length=10, choices=MigrationStage.choices, default=MigrationStage.OFF)
    # [{"stage": "live", "percentage": 10.0}, ...]: stages beyond the base in order, shares not growing
    splits = models.JSONField(default=list, blank=True)
    # [{"cohort": "pilot", "stage": "live"}, ...]: the first listed cohort a subject is in decides
    cohort_stages = models.JSONField(default=list, blank=True)
    stage_started_at = models.DateTimeField(null=True, blank=True)
    # When parallel last became authoritative for anyone (entering live): divergences since then are
    # what a rollback puts at risk.
    authoritative_since = models.DateTimeField(null=True, blank=True)
    # Guardrail: more divergences than this since the stage began roll the migration back (None: unchecked).
    max_divergences = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(stage__in=MigrationStage.values),
                                   name="migration_state_stage_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.flag_state_id}: {self.stage}"


class MigrationOrigin(models.TextChoices):
    LEGACY = "legacy", "Legacy"
    PARALLEL = "parallel", "Parallel"


class Divergence(models.Model):
    """A write that reached the authoritative origin but not the other one (reported by SDKs), counted
    per subject (key hash), origin, operation and identifier until someone resolves it."""

    flag_state = models.ForeignKey(FlagState, on_delete=models.CASCADE, related_name="divergences")
    key_hash = models.CharField(max_length=64)
    origin = models.CharField(max_length=8, choices=MigrationOrigin.choices)
    operation = models.CharField(max_length=5, default="write")
    identifier = models.CharField(max_length=200, blank=True, default="")
    stage = models.CharField(max_length=10, help_text="the subject's stage when last seen")
    count = models.PositiveBigIntegerField(default=0)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    last_error = models.CharField(max_length=300, blank=True, default="")
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=150, blank=True, default="")
    resolution = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-last_seen", "id"]
        indexes = [models.Index(fields=["flag_state", "resolved_at"], name="divergence_open_idx")]
        constraints = [
            # One row per diverged record: repeats count on it (and reopen it when it was resolved).
            models.UniqueConstraint(fields=["flag_state", "key_hash", "origin", "operation", "identifier"],
                                    name="divergence_unique_record"),
            models.CheckConstraint(condition=models.Q(origin__in=MigrationOrigin.values),
                                   name="divergence_origin_valid"),
            # A resolution always says who and why.
            models.CheckConstraint(condition=models.Q(resolved_at__isnull=True)
                                   | (~models.Q(resolved_by="") & ~models.Q(resolution="")),
                                   name="divergence_resolved_has_reason"),
        ]

    def __str__(self) -> str:
        return f"{self.flag_state_id}:{self.origin}/{self.identifier or self.key_hash[:12]} ×{self.count}"


class MigrationMinute(models.Model):
    """What SDKs reported for one migration flag, stage, origin and operation in one minute."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="migration_minutes")
    flag_key = models.CharField(max_length=100)
    stage = models.CharField(max_length=10)
    origin = models.CharField(max_length=8, choices=MigrationOrigin.choices)
    operation = models.CharField(max_length=5)
    minute = models.DateTimeField()
    calls = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    late = models.PositiveBigIntegerField(default=0)
    skipped = models.PositiveBigIntegerField(default=0)
    checks = models.PositiveBigIntegerField(default=0)
    inconsistent = models.PositiveBigIntegerField(default=0)
    check_errors = models.PositiveBigIntegerField(default=0)
    divergences = models.PositiveBigIntegerField(default=0)
    latency_ms = models.JSONField(default=list)

    class Meta:
        ordering = ["minute", "flag_key", "origin", "operation"]
        constraints = [
            # One row per flag, stage, origin, operation and minute: counts are added to it.
            models.UniqueConstraint(fields=["environment", "flag_key", "stage", "origin", "operation", "minute"],
                                    name="migration_minute_unique"),
            models.CheckConstraint(condition=models.Q(origin__in=MigrationOrigin.values),
                                   name="migration_minute_origin_valid"),
            models.CheckConstraint(condition=models.Q(operation__in=["read", "write"]),
                                   name="migration_minute_operation_valid"),
        ]
        indexes = [models.Index(fields=["environment", "flag_key", "minute"], name="migration_minute_flag_idx")]

    def __str__(self) -> str:
        return f"{self.flag_key}/{self.origin}.{self.operation}@{self.minute:%Y-%m-%d %H:%M}"


class ConsistencySample(models.Model):
    """A few reads per minute whose origins disagreed, redacted by the host (subject as ``key_hash``)."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="consistency_samples")
    flag_key = models.CharField(max_length=100)
    stage = models.CharField(max_length=10)
    key_hash = models.CharField(max_length=64)
    authoritative = models.CharField(max_length=8)
    legacy = models.JSONField(null=True)
    parallel = models.JSONField(null=True)
    truncated = models.BooleanField(default=False)
    at = models.DateTimeField()
    minute = models.DateTimeField()

    class Meta:
        ordering = ["-minute", "flag_key"]
        indexes = [models.Index(fields=["environment", "flag_key", "minute"], name="consistency_sample_flag_idx")]
