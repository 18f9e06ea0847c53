"""django-filter sets for the management API's lists."""

from __future__ import annotations

import django_filters
from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet

from rollout.access.users import ROLES
from rollout.models import ApiToken, Flag, Phase, Risk, SdkKey, Workload


class WorkloadFilter(django_filters.FilterSet):
    risk = django_filters.ChoiceFilter(choices=Risk.choices)
    phase = django_filters.ChoiceFilter(choices=Phase.choices)
    owner = django_filters.CharFilter(max_length=200)
    search = django_filters.CharFilter(method="filter_search", max_length=200,
                                       help_text="Substring of the key or the name.")

    class Meta:
        model = Workload
        fields = ["risk", "phase", "owner"]

    def filter_search(self, queryset: QuerySet[Workload], name: str, value: str) -> QuerySet[Workload]:
        return queryset.filter(Q(key__icontains=value) | Q(name__icontains=value))


class FlagFilter(django_filters.FilterSet):
    workload = django_filters.CharFilter(field_name="workload__key", max_length=63, help_text="Workload key.")

    class Meta:
        model = Flag
        fields = ["workload"]


class SdkKeyFilter(django_filters.FilterSet):
    environment = django_filters.CharFilter(field_name="environment__key", max_length=63)
    revoked = django_filters.BooleanFilter(field_name="revoked_at", lookup_expr="isnull", exclude=True)

    class Meta:
        model = SdkKey
        fields = ["environment", "revoked"]


class ApiTokenFilter(django_filters.FilterSet):
    user = django_filters.CharFilter(field_name="user__username", max_length=150)
    revoked = django_filters.BooleanFilter(field_name="revoked_at", lookup_expr="isnull", exclude=True)

    class Meta:
        model = ApiToken
        fields = ["user", "revoked"]


class UserFilter(django_filters.FilterSet):
    role = django_filters.ChoiceFilter(field_name="groups__name", choices=[(r, r) for r in ROLES])
    is_active = django_filters.BooleanFilter()

    class Meta:
        model = get_user_model()
        fields = ["role", "is_active"]
