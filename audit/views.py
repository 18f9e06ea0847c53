"""The web UI for the audit log: filters, before/after diffs, per-object history, exports with
progress, chain verification (at once, or in the background with progress for a long chain). Exports
and verification are the audit app's own services (``audit.services.audit_export_create``,
``audit.services.audit_verification_start``, ``audit.exports``, ``audit.verify``); the filters are the
same names and meanings as the events API and exports use (``audit.filters``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import django_filters
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from audit.evidence import SUBJECT_TYPES
from audit.exports import stream_export_zip, zip_name
from audit.filters import FILTER_NAMES, flag_events
from audit.models import AuditChainHead, AuditEvent, AuditExport, AuditVerification, ExportStatus
from audit.services import audit_export_create, audit_export_finish, audit_verification_start
from audit.signing import public_keys
from audit.verify import verify_chain
from common.conf import get_setting
from common.errors import ServiceError
from common.permissions import Capability, can
from common.ui import HtmxHttpRequest, actor, require

PAGE_SIZE = 50


def _choices(field: str) -> list[tuple[str, str]]:
    values = AuditEvent.objects.order_by(field).values_list(field, flat=True).distinct()
    return [(v, v) for v in values if v]


class AuditLogFilter(django_filters.FilterSet):
    """The page's filters: the audit API's names and exact meanings (so an export holds what the page
    shows), with choices for the person picking them."""

    since = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte", label="From",
                                             widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt", label="Until",
                                             widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    actor = django_filters.ChoiceFilter(choices=(), empty_label="Anyone", label="Actor")
    action = django_filters.ChoiceFilter(choices=(), empty_label="Any action")
    object_type = django_filters.ChoiceFilter(choices=(), empty_label="Any object", label="Object type")
    object_key = django_filters.CharFilter(label="Object key", widget=forms.TextInput(attrs={"type": "search"}))
    environment = django_filters.ChoiceFilter(choices=(), empty_label="Any environment")

    class Meta:
        model = AuditEvent
        fields: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("actor", "action", "object_type", "environment"):
            self.filters[name].extra["choices"] = _choices(name)


@require_GET
@login_required
def audit_log(request: HtmxHttpRequest) -> HttpResponse:
    require(request, Capability.READ)
    params = request.GET.copy()
    # datetime-local inputs send "2026-11-26T10:00"; the filter wants ISO 8601, which that is.
    event_filter = AuditLogFilter(params, queryset=AuditEvent.objects.order_by("-sequence"))
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
        "export_filters": [(k, v) for k, v in request.GET.items() if k in FILTER_NAMES and v],
        "head": AuditChainHead.objects.filter(pk=1).values("sequence", "hash").first(),
    }
    template = "audit/audit_log.html#event-table" if request.htmx else "audit/audit_log.html"
    return render(request, template, context)


@require_GET
@login_required
def audit_event(request: HtmxHttpRequest, sequence: int) -> HttpResponse:
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
        "may_audit": can(request.user, Capability.AUDIT), "evidence": object_type in SUBJECT_TYPES,
    })


HISTORY_SCOPES = (("", "Everything"), ("flag", "The flag itself"), ("flag_state", "Rollouts (states, plans, "
                  "guardrails, kill switch)"), ("change_request", "Change requests"), ("mismatch_group", "Mismatches"),
                  ("review_item", "Break-glass reviews"))


@require_GET
@login_required
def flag_history(request: HttpRequest, key: str) -> HttpResponse:
    """Everything about one flag in one list: the flag's own events and, per environment, its states,
    plans, guardrails, kill switch, pauses and rollbacks, change requests and mismatch groups — the
    events API's ``flag`` filter (``GET /api/v1/audit/events/?flag=KEY``) and exports use the same one."""
    require(request, Capability.READ)
    events_qs = AuditEvent.objects.filter(flag_events(key)).order_by("-sequence")
    environments = sorted({e for e in events_qs.values_list("environment", flat=True).distinct() if e})
    environment = request.GET.get("environment", "")
    scope = request.GET.get("scope", "")
    if environment:
        events_qs = events_qs.filter(environment=environment)
    if scope in dict(HISTORY_SCOPES) and scope:
        events_qs = events_qs.filter(object_type=scope)
    return render(request, "audit/flag_history.html", {
        "key": key, "events": list(events_qs[:500]), "environments": environments, "environment": environment,
        "scopes": HISTORY_SCOPES, "scope": scope, "may_audit": can(request.user, Capability.AUDIT),
    })


@require_POST
@login_required
def audit_export(request: HttpRequest) -> HttpResponseBase:
    """Export what the page shows: small ranges download at once, large ones run in the background."""
    require(request, Capability.AUDIT)
    filters = {name: value for name, value in request.POST.items() if name in FILTER_NAMES and value}
    try:
        export = audit_export_create(actor=actor(request), format=request.POST.get("format", ""), filters=filters)
    except ServiceError as exc:
        messages.error(request, f"Export refused: {exc.message}")
        return HttpResponseRedirect(reverse("ui:audit-log"))
    if export.status == ExportStatus.PENDING:
        return HttpResponseRedirect(reverse("ui:audit-export-progress", args=[export.pk]))

    def finished(manifest: dict[str, Any]) -> None:
        audit_export_finish(export_id=export.pk, manifest=manifest)

    # The file travels with its signed manifest: one zip that the offline verifier checks as it stands.
    response = StreamingHttpResponse(stream_export_zip(export, on_manifest=finished), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{zip_name(export)}"'
    response["X-Audit-Export-Id"] = str(export.pk)
    return response


@require_GET
@login_required
def audit_export_manifest(request: HttpRequest, pk: str) -> HttpResponse:
    """A finished export's signed manifest, as the file the offline verifier reads next to the export."""
    require(request, Capability.AUDIT)
    export = get_object_or_404(AuditExport, pk=pk)
    if export.manifest is None:
        raise Http404("this export has no manifest yet")
    body = json.dumps(export.manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    response = HttpResponse(body, content_type="application/json; charset=utf-8")
    name = (export.file_name or f"audit-export-{str(export.pk)[:8]}") + ".manifest.json"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@require_GET
@login_required
def public_key_file(request: HttpRequest) -> HttpResponse:
    """The signing keys (``GET /api/v1/audit/public-key``'s document) as the file the verifier reads."""
    require(request, Capability.AUDIT)
    body = json.dumps({"keys": [k.as_dict() for k in public_keys()]}, indent=2) + "\n"
    response = HttpResponse(body, content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="turnout-audit-public-key.json"'
    return response


@require_GET
@login_required
def offline_verifier(request: HttpRequest) -> FileResponse:
    """The standalone verifier (Python and ``cryptography`` only) for a reviewer who has only the files."""
    require(request, Capability.AUDIT)
    path = Path(settings.BASE_DIR) / "tools" / "verify_export.py"
    return FileResponse(path.open("rb"), as_attachment=True, filename="verify_export.py",
                        content_type="text/x-python; charset=utf-8")


@require_GET
@login_required
def audit_export_progress(request: HtmxHttpRequest, pk: str) -> HttpResponse:
    """A background export: progress until its file is ready, then the download and its signed manifest."""
    require(request, Capability.AUDIT)
    export = get_object_or_404(AuditExport, pk=pk)
    percent = 100 if export.total == 0 else int(100 * export.done / export.total)
    context = {"export": export, "percent": percent}
    template = "audit/export_progress.html#progress" if request.htmx else "audit/export_progress.html"
    return render(request, template, context)


def _chain_length() -> int:
    head = AuditChainHead.objects.filter(pk=1).values_list("sequence", flat=True).first()
    if head is None:  # no head row yet (the next write rebuilds it): the stored events tell
        head = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0
    return head


def _verification_context(verification: AuditVerification) -> dict[str, Any]:
    total = verification.total
    return {"verification": verification, "percent": 100 if total == 0 else int(100 * verification.checked / total)}


@require_POST
@login_required
def audit_verify(request: HtmxHttpRequest) -> HttpResponse:
    """Check the whole hash chain: at once (constant memory) when it holds at most
    ``TURNOUT_AUDIT_VERIFY_SYNC_MAX`` events, naming the first bad event if any; a longer chain is
    checked by a background job (one audit event records the request) whose progress the page polls."""
    require(request, Capability.AUDIT)
    if _chain_length() <= get_setting("AUDIT_VERIFY_SYNC_MAX"):
        return render(request, "audit/audit_log.html#verify-result", {"report": verify_chain()})
    verification = audit_verification_start(actor=actor(request))
    if not request.htmx:
        return HttpResponseRedirect(reverse("ui:audit-verification-progress", args=[verification.pk]))
    return render(request, "audit/audit_log.html#verify-result", _verification_context(verification))


@require_GET
@login_required
def audit_verification_progress(request: HtmxHttpRequest, pk: str) -> HttpResponse:
    """A background verification: progress until it finishes, then its report (as the API gives it)."""
    require(request, Capability.AUDIT)
    verification = get_object_or_404(AuditVerification, pk=pk)
    template = ("audit/verification_progress.html#progress" if request.htmx
                else "audit/verification_progress.html")
    return render(request, template, _verification_context(verification))
