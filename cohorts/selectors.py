"""Reads of cohorts and their members, and "is this subject in, and why?" through the engine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db.models import Q, QuerySet

from cohorts.models import Cohort, CohortMember, MemberKind
from common.errors import NotFound
from rollout.models import Environment, FlagState


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
    uses = Q(flag_states__include_cohorts=cohort) | Q(flag_states__exclude_cohorts=cohort)
    return list(Environment.objects.filter(uses).distinct())


def cohort_flags(cohort: Cohort) -> list[tuple[str, str, str]]:
    """(flag, environment, "include"/"exclude") for every rollout that uses the cohort."""
    rows: list[tuple[str, str, str]] = []
    for kind, relation in (("include", "include_cohorts"), ("exclude", "exclude_cohorts")):
        for flag, env in (FlagState.objects.filter(**{relation: cohort})
                          .values_list("flag__key", "environment__key").order_by("flag__key", "environment__order")):
            rows.append((flag, env, kind))
    return rows


def cohort_explain(cohort: Cohort, *, key: str, attributes: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether a subject is in the cohort, and why, decided by the engine the SDKs run.

    The engine sees the cohort as the ruleset would carry it, with the member lists narrowed to
    the one value that matters (so a cohort with a million members costs one indexed lookup).
    """
    from turnout.engine import explain_cohort

    if cohort.match_on:
        raw = attributes.get(cohort.match_on)
        value = None if raw is None else (raw if isinstance(raw, str) else str(raw))
    else:
        value = key or None
    include: list[str] = []
    exclude: list[str] = []
    if value is not None:
        kind = cohort.members.filter(subject=value).values_list("kind", flat=True).first()
        if kind == MemberKind.INCLUDE:
            include.append(value)
        elif kind == MemberKind.EXCLUDE:
            exclude.append(value)
    doc = {
        "schema": 1, "environment": "ui", "version": 0, "flags": {},
        "cohorts": {cohort.key: {"match_on": cohort.match_on or None, "rules": cohort.rules,
                                 "include": include, "exclude": exclude}},
    }
    return explain_cohort(doc, cohort.key, key, attributes)


def member_page(cohort: Cohort, *, kind: str, q: str = "", limit: int = 50) -> tuple[list[str], int]:
    members = cohort.members.filter(kind=kind)
    if q:
        members = members.filter(subject__icontains=q)
    return list(members.order_by("subject").values_list("subject", flat=True)[:limit]), members.count()
