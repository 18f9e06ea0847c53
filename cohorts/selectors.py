"""Reads of cohorts and their members."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from cohorts.models import Cohort, CohortMember
from common.errors import NotFound


def cohort_list() -> QuerySet[Cohort]:
    return Cohort.objects.with_member_counts().order_by("key")


def cohort_get(key: str) -> Cohort:
    cohort = cohort_list().filter(key=key).first()
    if cohort is None:
        raise NotFound(f"cohort '{key}' does not exist")
    return cohort


def cohort_members(cohort: Cohort) -> QuerySet[CohortMember]:
    return CohortMember.objects.filter(cohort=cohort).order_by("kind", "subject")


def cohort_environments(cohort: Cohort) -> list[object]:
    """Environments whose rulesets use the cohort (a change to it changes decisions there)."""
    from rollout.models import Environment

    uses = Q(flag_states__include_cohorts=cohort) | Q(flag_states__exclude_cohorts=cohort)
    return list(Environment.objects.filter(uses).distinct())
