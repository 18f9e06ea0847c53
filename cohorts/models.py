from __future__ import annotations

from django.db import models

from common.models import KeyField, TimestampedModel


class CohortQuerySet(models.QuerySet["Cohort"]):
    def with_member_counts(self) -> CohortQuerySet:
        return self.annotate(
            include_count=models.Count("members", filter=models.Q(members__kind=MemberKind.INCLUDE)),
            exclude_count=models.Count("members", filter=models.Q(members__kind=MemberKind.EXCLUDE)),
        )


class Cohort(TimestampedModel):
    """A group of subjects: attribute rules plus explicit include / exclude lists."""

    key = KeyField(unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    match_on = models.CharField(
        max_length=100, blank=True, default="",
        help_text="Attribute whose value the member lists hold (empty: the context key).",
    )
    rules = models.JSONField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)

    objects = CohortQuerySet.as_manager()

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class MemberKind(models.TextChoices):
    INCLUDE = "include", "Include"
    EXCLUDE = "exclude", "Exclude"


class CohortMember(models.Model):
    cohort = models.ForeignKey(Cohort, on_delete=models.CASCADE, related_name="members")
    subject = models.CharField(max_length=255)
    kind = models.CharField(max_length=7, choices=MemberKind.choices)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # A subject is listed once per cohort: either included or excluded, never both.
            models.UniqueConstraint(fields=["cohort", "subject"], name="cohort_member_unique_subject"),
        ]
        indexes = [
            # The ruleset builder streams each cohort's lists in order; 1M+ rows per cohort.
            models.Index(fields=["cohort", "kind", "subject"], name="cohort_member_kind_subject"),
        ]

    def __str__(self) -> str:
        return f"{self.cohort_id}:{self.kind}:{self.subject}"


class MemberListState(models.Model):
    """A cohort's member lists: their own version, raised by every change to the lists and by nothing
    else (so a large cohort's member-list document, rollout/delivery/members.py, is rebuilt only when
    they change), and the number of listed members (include + exclude), from which the ruleset builder
    decides without counting rows whether the lists travel inline or as a reference. Kept by the member
    services; a cohort whose lists never changed has no row (version 0, no members)."""

    cohort = models.OneToOneField(Cohort, on_delete=models.CASCADE, primary_key=True, related_name="member_list")
    version = models.PositiveIntegerField(default=0)
    count = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.cohort_id}: v{self.version} ({self.count} members)"
