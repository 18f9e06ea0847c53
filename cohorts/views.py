"""The web UI for cohorts: list, rule editor with live validation, member upload, "test a subject"."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event

from actions.submit import outcome_message, submit
from audit.names import Action
from cohorts import selectors
from cohorts import services as cohort_services
from cohorts.forms import (
    CohortEditForm,
    CohortForm,
    MemberRemoveForm,
    MemberUploadForm,
    RulesField,
    TestSubjectForm,
    parse_member_csv,
)
from cohorts.models import Cohort, MemberKind
from common.errors import ServiceError
from common.permissions import Capability
from common.ui import INVALID, HtmxHttpRequest, actor, error_status, require


@require_GET
@login_required
def cohort_list(request: HtmxHttpRequest) -> HttpResponse:
    require(request, Capability.READ)
    q = request.GET.get("q", "").strip()
    cohorts = list(selectors.cohort_list())
    if q:
        cohorts = [c for c in cohorts if q.lower() in c.key.lower() or q.lower() in c.name.lower()]
    template = "cohorts/cohort_list.html#cohort-table" if request.htmx else "cohorts/cohort_list.html"
    return render(request, template, {"cohorts": cohorts, "q": q})


@require_http_methods(["GET", "POST"])
@login_required
def cohort_create(request: HtmxHttpRequest) -> HttpResponse:
    require(request, Capability.EDIT)
    form = CohortForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            cohort = cohort_services.cohort_create(actor=actor(request), **form.cleaned_data)
        except ServiceError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"Cohort “{cohort.name}” created. Upload its members below.")
            url = reverse("ui:cohort-detail", args=[cohort.key])
            return HttpResponseClientRedirect(url) if request.htmx else HttpResponseRedirect(url)
    return render(request, "cohorts/cohort_form.html", {"form": form}, status=INVALID if form.errors else 200)


@require_POST
@login_required
def validate_rules(request: HttpRequest) -> HttpResponse:
    """Immediate feedback while rules are typed: the engine's own validation, message naming the bad part."""
    require(request, Capability.READ)
    ok, message = True, "Rules are valid."
    try:
        rules = RulesField(required=False).clean(request.POST.get("rules", ""))
        if rules is None:
            message = "No rules: only the member lists decide."
        else:
            cohort_services.validate_cohort_rules(rules)
    except ServiceError as exc:
        ok, message = False, exc.message
    except ValidationError as exc:  # the JSON did not parse
        ok, message = False, "rules: " + "; ".join(exc.messages)
    return render(request, "cohorts/cohort_form.html#rules-feedback", {"ok": ok, "message": message})


def _detail_context(request: HttpRequest, cohort: Cohort, **extra: Any) -> dict[str, Any]:
    q = request.GET.get("q", "").strip()
    include, include_count = selectors.member_page(cohort, kind=MemberKind.INCLUDE, q=q)
    exclude, exclude_count = selectors.member_page(cohort, kind=MemberKind.EXCLUDE, q=q)
    context = {
        "cohort": cohort,
        "used_by": selectors.cohort_flags(cohort),
        "include": include, "include_count": include_count,
        "exclude": exclude, "exclude_count": exclude_count, "q": q,
        "edit_form": CohortEditForm(initial={"name": cohort.name, "description": cohort.description,
                                             "match_on": cohort.match_on, "rules": cohort.rules,
                                             "version": cohort.version}),
        "upload_form": MemberUploadForm(),
        "remove_form": MemberRemoveForm(),
        "test_form": TestSubjectForm(),
    }
    context.update(extra)
    return context


@require_GET
@login_required
def cohort_detail(request: HtmxHttpRequest, key: str) -> HttpResponse:
    require(request, Capability.READ)
    cohort = get_object_or_404(Cohort, key=key)
    context = _detail_context(request, cohort)
    if request.htmx and request.htmx.target == "members":
        return render(request, "cohorts/cohort_detail.html#members", context)
    return render(request, "cohorts/cohort_detail.html", context)


@require_POST
@login_required
def cohort_update(request: HtmxHttpRequest, key: str) -> HttpResponse:
    require(request, Capability.EDIT)
    cohort = get_object_or_404(Cohort, key=key)
    form = CohortEditForm(request.POST)
    if form.is_valid():
        data = dict(form.cleaned_data)
        version, reason = data.pop("version", None), data.pop("reason", "")
        changed = {name: value for name, value in data.items() if getattr(cohort, name) != value}
        try:
            outcome = submit(actor=actor(request), action=Action.COHORT_UPDATED, target=key, params=changed,
                             version=version, reason=reason)
        except ServiceError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, outcome_message(outcome, "Cohort saved."))
            url = reverse("ui:cohort-detail", args=[key])
            return HttpResponseClientRedirect(url) if request.htmx else HttpResponseRedirect(url)
    context = _detail_context(request, cohort, edit_form=form)
    template = "cohorts/cohort_detail.html#cohort-edit" if request.htmx else "cohorts/cohort_detail.html"
    return render(request, template, context, status=INVALID)


@require_POST
@login_required
def member_upload(request: HtmxHttpRequest, key: str) -> HttpResponse:
    """CSV upload: every bad row reported by line, and either every subject is added or none is."""
    require(request, Capability.EDIT)
    cohort = get_object_or_404(Cohort, key=key)
    form = MemberUploadForm(request.POST, request.FILES)
    result: dict[str, Any] = {}
    status = INVALID
    if form.is_valid():
        parsed = parse_member_csv(form.cleaned_data["file"].read())
        if parsed.errors:
            form.add_error("file", f"Nothing was imported: {parsed.bad_rows} bad row(s). Fix them and upload again.")
            result = {"row_errors": parsed.errors}
        elif not parsed.subjects:
            form.add_error("file", "The file has no subject keys.")
        else:
            try:
                outcome = submit(actor=actor(request), action=Action.COHORT_MEMBERS_ADDED, target=key,
                                 params={"subjects": parsed.subjects, "kind": form.cleaned_data["kind"]},
                                 reason=form.cleaned_data["reason"])
            except ServiceError as exc:
                form.add_service_error(exc)
                status = error_status(exc)
            else:
                status = 200
                result = {"imported": outcome.result, "rows": parsed.rows, "kind": form.cleaned_data["kind"],
                          "change_request": outcome.change_request}
                form = MemberUploadForm()
    context = _detail_context(request, cohort, upload_form=form, upload=result)
    if not request.htmx:
        if status == 200:
            messages.success(request, _import_summary(result))
            return HttpResponseRedirect(reverse("ui:cohort-detail", args=[key]))
        return render(request, "cohorts/cohort_detail.html", context, status=status)
    response = render(request, "cohorts/cohort_detail.html#upload", context, status=status)
    if status == 200:
        trigger_client_event(response, "membersChanged")
    return response


def _import_summary(result: dict[str, Any]) -> str:
    if result.get("change_request") is not None:
        cr = result["change_request"]
        return f"Waiting for approval: change request #{cr.pk} ({cr.summary}). Nothing is imported until then."
    counts = result["imported"]
    return (f"Imported {result['rows']:,} rows into {result['kind']}: {counts['added']:,} added, "
            f"{counts['moved']:,} moved from the other list, {counts['unchanged']:,} already there.")


@require_POST
@login_required
def member_remove(request: HtmxHttpRequest, key: str) -> HttpResponse:
    require(request, Capability.EDIT)
    cohort = get_object_or_404(Cohort, key=key)
    form = MemberRemoveForm(request.POST)
    status, notice = INVALID, ""
    if form.is_valid():
        try:
            outcome = submit(actor=actor(request), action=Action.COHORT_MEMBERS_REMOVED, target=key,
                             params={"subjects": form.cleaned_data["subjects"]}, reason=form.cleaned_data["reason"])
        except ServiceError as exc:
            form.add_service_error(exc)
            status = error_status(exc)
        else:
            status, form = 200, MemberRemoveForm()
            counts = outcome.result
            notice = outcome_message(outcome, f"Removed {counts['removed']:,}; {counts['not_members']:,} were not "
                                              "members." if counts else "")
    if not request.htmx:
        if status == 200:
            messages.success(request, notice)
        return HttpResponseRedirect(reverse("ui:cohort-detail", args=[key]))
    context = _detail_context(request, cohort, remove_form=form, remove_notice=notice)
    response = render(request, "cohorts/cohort_detail.html#remove", context, status=status)
    if status == 200:
        trigger_client_event(response, "membersChanged")
    return response


@require_POST
@login_required
def test_subject(request: HtmxHttpRequest, key: str) -> HttpResponse:
    """"Is this subject in, and why?" — answered by the same engine the SDKs run."""
    require(request, Capability.READ)
    cohort = get_object_or_404(Cohort, key=key)
    form = TestSubjectForm(request.POST)
    verdict: dict[str, Any] | None = None
    if form.is_valid():
        attributes = form.cleaned_data["attributes"]
        matched, why = selectors.cohort_explain(cohort, key=form.cleaned_data["key"], attributes=attributes)
        verdict = {"matched": matched, "why": why, "key": form.cleaned_data["key"],
                   "attributes": json.dumps(attributes, sort_keys=True)}
    context = _detail_context(request, cohort, test_form=form, verdict=verdict)
    template = "cohorts/cohort_detail.html#test-subject" if request.htmx else "cohorts/cohort_detail.html"
    return render(request, template, context, status=200 if verdict else INVALID)
