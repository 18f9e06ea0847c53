"""The web UI for the audit log: filters, before/after diffs, per-object history.

(The audit API, exports and verification live in this app's other modules; the UI calls them.)
"""

from __future__ import annotations

from typing import Any

import django_filters
from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from audit.models import AuditEvent
from common.permissions import Capability, can
from common.ui import require

PAGE_SIZE = 50


def _choices(field: str) -> list[tuple[str, str]]:
    values = AuditEvent.objects.order_by(field).values_list(field, flat=True).distinct()
    return [(v, v) for v in values if v]


class AuditEventFilter(django_filters.FilterSet):
    since = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte", label="From",
                                             widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt", label="Until",
                                             widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    actor = django_filters.CharFilter(lookup_expr="icontains", label="Actor")
    action = django_filters.ChoiceFilter(choices=(), empty_label="Any action")
    object_type = django_filters.ChoiceFilter(choices=(), empty_label="Any object", label="Object type")
    object_key = django_filters.CharFilter(lookup_expr="icontains", label="Object key")
    environment = django_filters.ChoiceFilter(choices=(), empty_label="Any environment")

    class Meta:
        model = AuditEvent
        fields: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("action", "object_type", "environment"):
            self.filters[name].extra["choices"] = _choices(name)


@require_GET
@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    require(request, Capability.READ)
    params = request.GET.copy()
    # datetime-local inputs send "2026-11-26T10:00"; the filter wants ISO 8601, which that is.
    event_filter = AuditEventFilter(params, queryset=AuditEvent.objects.order_by("-sequence"))
    events = event_filter.qs if event_filter.is_valid() else AuditEvent.objects.none()
    before = request.GET.get("before", "")
    if before.isdigit():
        events = events.filter(sequence__lt=int(before))
    page = list(events[:PAGE_SIZE + 1])
    more = len(page) > PAGE_SIZE
    page = page[:PAGE_SIZE]
    next_params = params.copy()
    if more:
        next_params["before"] = str(page[-1].sequence)
    newest_params = params.copy()
    newest_params.pop("before", None)
    context = {
        "filter": event_filter,
        "events": page,
        "more": more,
        "next_query": next_params.urlencode() if more else "",
        "newest_query": newest_params.urlencode() if before else "",
        "filtered": any(v for k, v in request.GET.items() if k != "before"),
        "may_audit": can(request.user, Capability.AUDIT),
    }
    template = "audit/audit_log.html#event-table" if request.htmx else "audit/audit_log.html"
    return render(request, template, context)


@require_GET
@login_required
def audit_event(request: HttpRequest, sequence: int) -> HttpResponse:
    require(request, Capability.READ)
    event = get_object_or_404(AuditEvent, sequence=sequence)
    template = "audit/audit_event.html#event-diff" if request.htmx else "audit/audit_event.html"
    return render(request, template, {"event": event})


@require_GET
@login_required
def object_history(request: HttpRequest, object_type: str, object_key: str) -> HttpResponse:
    require(request, Capability.READ)
    events = list(AuditEvent.objects.filter(object_type=object_type, object_key=object_key).order_by("-sequence")[:500])
    return render(request, "audit/object_history.html", {
        "object_type": object_type, "object_key": object_key, "events": events,
    })
