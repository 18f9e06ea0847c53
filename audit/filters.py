"""The one set of filters over audit events: the events API, exports and the CLI use it alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import django_filters
from django.db.models import Q, QuerySet

from audit.models import ActorType, AuditEvent
from common.errors import ValidationFailed


class AuditEventFilter(django_filters.FilterSet):
    since = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte",
                                             help_text="Events at or after this ISO-8601 time.")
    until = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt",
                                             help_text="Events before this ISO-8601 time.")
    sequence_from = django_filters.NumberFilter(field_name="sequence", lookup_expr="gte", min_value=1)
    sequence_to = django_filters.NumberFilter(field_name="sequence", lookup_expr="lte", min_value=1)
    actor = django_filters.CharFilter(field_name="actor", help_text="Exact actor label (username, token, system:…).")
    actor_type = django_filters.ChoiceFilter(field_name="actor_type", choices=ActorType.choices)
    action = django_filters.CharFilter(field_name="action", help_text="Exact action, e.g. flag_state.killed.")
    action_prefix = django_filters.CharFilter(field_name="action", lookup_expr="startswith",
                                              help_text="Actions starting with this, e.g. flag_state.")
    object_type = django_filters.CharFilter(field_name="object_type")
    object_key = django_filters.CharFilter(field_name="object_key")
    environment = django_filters.CharFilter(field_name="environment")
    request_id = django_filters.CharFilter(field_name="request_id")
    flag = django_filters.CharFilter(method="filter_flag", help_text=(
        "Everything about one flag: its own events, every per-environment state (plans, stages, guardrails, "
        "kill switch, pause, rollback), its mismatch groups and the change requests and break-glass reviews "
        "on its rollouts."))

    class Meta:
        model = AuditEvent
        fields: list[str] = []

    def filter_flag(self, queryset: QuerySet[AuditEvent], name: str, value: str) -> QuerySet[AuditEvent]:
        return queryset.filter(flag_events(value))


def flag_events(key: str) -> Q:
    """The events about flag ``key`` (flag keys never hold '@' or '#', so the prefixes are exact)."""
    return (Q(object_type="flag", object_key=key)
            | Q(object_type__in=("flag_state", "mismatch_group"), object_key__startswith=f"{key}@")
            | Q(object_type__in=("change_request", "review_item"), after__flag=key)
            | Q(object_type__in=("change_request", "review_item"), before__flag=key))


FILTER_NAMES = tuple(AuditEventFilter.base_filters)


def clean_filters(params: Mapping[str, Any]) -> dict[str, str]:
    """The filters given, checked; raises ValidationFailed naming the bad one.

    An unknown name is refused, never ignored: a misspelled filter would otherwise export everything.
    """
    unknown = [name for name in params if name not in FILTER_NAMES]
    if unknown:
        message = f"unknown filter; the filters are {', '.join(FILTER_NAMES)}"
        raise ValidationFailed(f"{unknown[0]}: {message}", fields={str(name): [message] for name in unknown})
    given = {name: str(params[name]) for name in FILTER_NAMES if params.get(name) not in (None, "")}
    form = AuditEventFilter(data=given, queryset=AuditEvent.objects.none()).form
    if not form.is_valid():
        name, errors = next(iter(form.errors.items()))
        raise ValidationFailed.field(name, str(errors[0]))
    return dict(sorted(given.items()))


def filtered_events(filters: Mapping[str, str]) -> QuerySet[AuditEvent]:
    """Events matching already-cleaned filters (no ordering: callers walk by sequence)."""
    return AuditEventFilter(data=dict(filters), queryset=AuditEvent.objects.all()).qs
