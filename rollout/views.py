"""The web UI for workloads, flags and their per-environment rollouts, and for keys.

Views are thin: they check the role through ``common.permissions``, call one service, and render
the page or, for htmx requests, the named partial that changed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from cohorts.models import Cohort
from common.errors import ServiceError
from common.permissions import Capability, can, primary_role
from common.ui import INVALID, actor, current_environment, error_status, require
from rollout import dashboard as selectors
from rollout.forms import (
    ApiTokenForm,
    FlagForm,
    PercentageForm,
    ReasonForm,
    SdkKeyForm,
    TargetingForm,
    WorkloadEditForm,
    WorkloadForm,
    overrides_text,
)
from rollout.models import ApiToken, Environment, Flag, FlagState, Phase, Risk, SdkKey, Workload
from rollout.services import flags as flag_services
from rollout.services import keys as key_services
from rollout.services import workloads as workload_services

# -- dashboard --------------------------------------------------------------------------------


@require_GET
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    require(request, Capability.READ)
    if primary_role(request.user) == "compliance":  # reviewers land on their tools
        return HttpResponseRedirect(reverse("ui:audit-log"))
    filters = {name: request.GET.get(name, "").strip() for name in ("q", "risk", "phase", "status", "environment")}
    envs, rows = selectors.dashboard_rows(**filters)
    context = {
        "rows": rows, "columns": envs, "filters": filters, "risks": Risk.choices, "phases": Phase.choices,
        "statuses": selectors.STATUSES, "filtered": any(filters.values()),
        "total": Workload.objects.count(),
    }
    template = "rollout/dashboard.html#workload-table" if request.htmx else "rollout/dashboard.html"
    return render(request, template, context)


# -- workloads --------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
def workload_create(request: HttpRequest) -> HttpResponse:
    require(request, Capability.EDIT)
    form = WorkloadForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            workload = workload_services.workload_create(actor=actor(request), **form.cleaned_data)
        except ServiceError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"Workload “{workload.name}” created. Add its flag next.")
            return _redirect(request, reverse("ui:workload-detail", args=[workload.key]))
    return render(request, "rollout/workload_form.html", {"form": form}, status=INVALID if form.errors else 200)


@require_GET
@login_required
def workload_detail(request: HttpRequest, key: str) -> HttpResponse:
    require(request, Capability.READ)
    workload = get_object_or_404(Workload, key=key)
    return render(request, "rollout/workload_detail.html", _workload_context(request, workload))


def _workload_context(request: HttpRequest, workload: Workload, edit_form: WorkloadEditForm | None = None
                      ) -> dict[str, Any]:
    flags = list(workload.flags.all())
    initial = {name: getattr(workload, name) for name in WorkloadEditForm.base_fields if hasattr(workload, name)}
    return {
        "workload": workload,
        "flags": flags,
        "states": {f.key: selectors.flag_states(f) for f in flags},
        "edit_form": edit_form or WorkloadEditForm(initial=initial),
        "flag_form": FlagForm(initial={"workload": workload.key, "key": "" if flags else workload.key},
                              workloads=[(workload.key, workload.name)]),
        "last_event": selectors.last_event_for(workload, [f.key for f in flags]),
    }


@require_POST
@login_required
def workload_update(request: HttpRequest, key: str) -> HttpResponse:
    require(request, Capability.EDIT)
    workload = get_object_or_404(Workload, key=key)
    form = WorkloadEditForm(request.POST)
    if form.is_valid():
        data = dict(form.cleaned_data)
        version, reason = data.pop("version"), data.pop("reason")
        try:
            workload = workload_services.workload_update(actor=actor(request), key=key, version=version,
                                                         reason=reason, **data)
        except ServiceError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, "Workload saved.")
            return _redirect(request, reverse("ui:workload-detail", args=[key]))
    context = _workload_context(request, workload, edit_form=form)
    template = "rollout/workload_detail.html#workload-edit" if request.htmx else "rollout/workload_detail.html"
    return render(request, template, context, status=INVALID)


# -- flags ------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
def flag_create(request: HttpRequest) -> HttpResponse:
    require(request, Capability.EDIT)
    workloads = list(Workload.objects.values_list("key", "name"))
    form = FlagForm(request.POST or None, workloads=workloads,
                    initial={"workload": request.GET.get("workload", "")})
    if request.method == "POST" and form.is_valid():
        try:
            flag = flag_services.flag_create(actor=actor(request), **form.cleaned_data)
        except ServiceError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"Flag “{flag.key}” created: off in every environment until you start it.")
            return _redirect(request, reverse("ui:flag-detail", args=[flag.key]))
    return render(request, "rollout/flag_form.html", {"form": form}, status=INVALID if form.errors else 200)


@require_GET
@login_required
def flag_detail(request: HttpRequest, key: str) -> HttpResponse:
    require(request, Capability.READ)
    flag = get_object_or_404(Flag.objects.select_related("workload"), key=key)
    cards = [_card_context(request, state) for state in selectors.flag_states(flag)]
    current = current_environment(request)
    cards.sort(key=lambda c: (c["state"].environment_id != getattr(current, "pk", None),))
    return render(request, "rollout/flag_detail.html", {"flag": flag, "cards": cards})


def _card_context(request: HttpRequest, state: FlagState, **extra: Any) -> dict[str, Any]:
    env = state.environment
    cohorts = list(Cohort.objects.values_list("key", "name"))
    context = {
        "state": state,
        "status": selectors.state_status(state),
        "last_event": selectors.last_state_event(state),
        "may_change": can(request.user, Capability.CHANGE_ENV, environment=env),
        "may_kill": can(request.user, Capability.EMERGENCY, environment=env),
        "needs_approval": env.requires_approval and not can(request.user, Capability.CHANGE_ENV, environment=env)
        and can(request.user, Capability.EDIT),
        "percentage_form": PercentageForm(initial={
            "percentage": state.percentage.normalize() if state.percentage else 0,
            "compare_percentage": state.compare_percentage.normalize() if state.compare_percentage else 0,
            "version": state.version,
        }),
        "targeting_form": TargetingForm(cohorts=cohorts, initial={
            "include_cohorts": [c.key for c in state.include_cohorts.all()],
            "exclude_cohorts": [c.key for c in state.exclude_cohorts.all()],
            "overrides": overrides_text(state.overrides),
            "version": state.version,
        }),
    }
    context.update(extra)
    return context


def _state_or_404(key: str, env: str) -> FlagState:
    state = selectors.flag_state(key, env)
    if state is None:
        raise Http404("no such flag or environment")
    return state


def _render_card(request: HttpRequest, key: str, env: str, *, status: int = 200, **extra: Any) -> HttpResponse:
    state = _state_or_404(key, env)
    context = _card_context(request, state, **extra)
    if not request.htmx:
        if extra.get("message"):
            messages.success(request, extra["message"])
        elif extra.get("error"):
            messages.error(request, extra["error"])
        return HttpResponseRedirect(reverse("ui:flag-detail", args=[key]) + f"#state-{env}")
    return render(request, "rollout/flag_detail.html#state-card", context, status=status)


@require_GET
@login_required
def state_card(request: HttpRequest, key: str, env: str) -> HttpResponse:
    """The live state card (polled by the flag page)."""
    require(request, Capability.READ)
    if not request.htmx:
        return HttpResponseRedirect(reverse("ui:flag-detail", args=[key]) + f"#state-{env}")
    return _render_card(request, key, env)


@require_POST
@login_required
def state_kill(request: HttpRequest, key: str, env: str) -> HttpResponse:
    """The kill switch: everyone to legacy at once; needs no version and waits for nothing."""
    state = _state_or_404(key, env)
    require(request, Capability.EMERGENCY, environment=state.environment)
    form = ReasonForm(request.POST)
    reason = form.data.get("reason", "")[:500]
    try:
        flag_services.flag_state_kill(actor=actor(request), flag=key, environment=env, reason=reason)
    except ServiceError as exc:
        return _render_card(request, key, env, status=error_status(exc), error=exc.message)
    return _render_card(request, key, env, message=f"Killed: every subject takes legacy in {state.environment.name}.",
                        undo="resume")


@require_POST
@login_required
def state_resume(request: HttpRequest, key: str, env: str) -> HttpResponse:
    state = _state_or_404(key, env)
    require(request, Capability.CHANGE_ENV, environment=state.environment)
    form = ReasonForm(request.POST)
    form.is_valid()
    try:
        flag_services.flag_state_resume(actor=actor(request), flag=key, environment=env,
                                        version=form.cleaned_data.get("version"),
                                        reason=form.cleaned_data.get("reason", ""))
    except ServiceError as exc:
        return _render_card(request, key, env, status=error_status(exc), error=exc.message)
    return _render_card(request, key, env, message=f"Resumed at {_pct(state.percentage)}% in {state.environment.name}.")


@require_POST
@login_required
def state_retire(request: HttpRequest, key: str, env: str) -> HttpResponse:
    state = _state_or_404(key, env)
    require(request, Capability.CHANGE_ENV, environment=state.environment)
    form = ReasonForm(request.POST)
    form.is_valid()
    try:
        flag_services.flag_state_retire(actor=actor(request), flag=key, environment=env,
                                        version=form.cleaned_data.get("version"),
                                        reason=form.cleaned_data.get("reason", ""))
    except ServiceError as exc:
        return _render_card(request, key, env, status=error_status(exc), error=exc.message)
    return _render_card(request, key, env, message=f"Legacy retired in {state.environment.name}: "
                                                   "every subject takes the parallel path.")


@require_POST
@login_required
def state_percentage(request: HttpRequest, key: str, env: str) -> HttpResponse:
    state = _state_or_404(key, env)
    require(request, Capability.CHANGE_ENV, environment=state.environment)
    form = PercentageForm(request.POST)
    if not form.is_valid():
        return _render_card(request, key, env, status=INVALID, percentage_form=form, open_panel="percentage")
    old = state.percentage
    changes: dict[str, Any] = {"percentage_value": form.cleaned_data["percentage"]}
    if form.cleaned_data.get("compare_percentage") is not None:
        changes["compare_percentage"] = form.cleaned_data["compare_percentage"]
    try:
        new = flag_services.flag_state_update(actor=actor(request), flag=key, environment=env,
                                              version=form.cleaned_data["version"],
                                              reason=form.cleaned_data["reason"], **changes)
    except ServiceError as exc:
        form.add_service_error(exc)
        return _render_card(request, key, env, status=error_status(exc), percentage_form=form,
                            open_panel="percentage")
    if new.percentage == old:
        return _render_card(request, key, env, message="Saved.")
    return _render_card(request, key, env, message=f"Parallel share {_pct(old)}% → {_pct(new.percentage)}%.",
                        undo="percentage", undo_percentage=old)


@require_GET
@login_required
def state_impact(request: HttpRequest, key: str, env: str) -> HttpResponse:
    """What a percentage change would do, before it is made."""
    require(request, Capability.READ)
    state = _state_or_404(key, env)
    try:
        new = Decimal(request.GET.get("percentage", ""))
    except ArithmeticError:
        return HttpResponse("")
    if not new.is_finite() or new < 0 or new > 100:
        return HttpResponse('<span class="error">Enter a number between 0 and 100.</span>')
    return render(request, "rollout/flag_detail.html#impact", {
        "state": state, "new": new, "moving": selectors.share_moving(state.percentage, new),
        "direction": "parallel" if new > state.percentage else "legacy",
        "exposure": selectors.exposure_impact(state, new) if state.enabled else None,
    })


@require_POST
@login_required
def state_targeting(request: HttpRequest, key: str, env: str) -> HttpResponse:
    state = _state_or_404(key, env)
    require(request, Capability.CHANGE_ENV, environment=state.environment)
    form = TargetingForm(request.POST, cohorts=list(Cohort.objects.values_list("key", "name")))
    if not form.is_valid():
        return _render_card(request, key, env, status=INVALID, targeting_form=form, open_panel="targeting")
    try:
        flag_services.flag_state_update(
            actor=actor(request), flag=key, environment=env, version=form.cleaned_data["version"],
            include_cohorts=form.cleaned_data["include_cohorts"], exclude_cohorts=form.cleaned_data["exclude_cohorts"],
            overrides=form.cleaned_data["overrides"], reason=form.cleaned_data["reason"],
        )
    except ServiceError as exc:
        form.add_service_error(exc)
        return _render_card(request, key, env, status=error_status(exc), targeting_form=form,
                            open_panel="targeting")
    return _render_card(request, key, env, message="Cohorts and overrides saved.")


def _pct(value: Any) -> str:
    return f"{float(value):.4f}".rstrip("0").rstrip(".")


# -- keys -------------------------------------------------------------------------------------


def _keys_context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    envs = list(Environment.objects.all())
    current = current_environment(request, envs)
    users = list(get_user_model().objects.filter(is_active=True).order_by("username").values_list("username",
                                                                                                  "username"))
    context = {
        "sdk_keys": SdkKey.objects.select_related("environment").order_by("environment__order", "-created_at"),
        "api_tokens": ApiToken.objects.select_related("user").order_by("user__username", "-created_at"),
        "sdk_form": SdkKeyForm(environments=[(e.key, e.name) for e in envs],
                               initial={"environment": getattr(current, "key", "")}),
        "token_form": ApiTokenForm(users=users, initial={"username": request.user.get_username()}),
    }
    context.update(extra)
    return context


@require_GET
@login_required
def keys(request: HttpRequest) -> HttpResponse:
    require(request, Capability.ADMINISTER)
    return render(request, "rollout/keys.html", _keys_context(request))


@require_POST
@login_required
def sdk_key_create(request: HttpRequest) -> HttpResponse:
    require(request, Capability.ADMINISTER)
    form = SdkKeyForm(request.POST, environments=list(Environment.objects.values_list("key", "name")))
    extra: dict[str, Any] = {"sdk_form": form}
    status = INVALID
    if form.is_valid():
        try:
            key, secret = key_services.sdk_key_create(actor=actor(request), **form.cleaned_data)
        except ServiceError as exc:
            form.add_service_error(exc)
            status = error_status(exc)
        else:
            extra = {"new_secret": secret, "new_secret_label": f"SDK key “{key.name}” for {key.environment.name}"}
            status = 200
    return _keys_response(request, extra, status)


@require_POST
@login_required
def api_token_create(request: HttpRequest) -> HttpResponse:
    require(request, Capability.ADMINISTER)
    users = list(get_user_model().objects.filter(is_active=True).values_list("username", "username"))
    form = ApiTokenForm(request.POST, users=users)
    extra: dict[str, Any] = {"token_form": form}
    status = INVALID
    if form.is_valid():
        try:
            token, secret = key_services.api_token_create(actor=actor(request), **form.cleaned_data)
        except ServiceError as exc:
            form.add_service_error(exc)
            status = error_status(exc)
        else:
            extra = {"new_secret": secret,
                     "new_secret_label": f"API token “{token.name}” acting as {token.user.get_username()}"}
            status = 200
    return _keys_response(request, extra, status)


@require_POST
@login_required
def sdk_key_revoke(request: HttpRequest, prefix: str) -> HttpResponse:
    require(request, Capability.ADMINISTER)
    try:
        key = key_services.sdk_key_revoke(actor=actor(request), prefix=prefix, reason=request.POST.get("reason", ""))
    except ServiceError as exc:
        return _keys_response(request, {"error": exc.message}, error_status(exc))
    return _keys_response(request, {"notice": f"SDK key {key.prefix}… revoked: services using it now get 401."}, 200)


@require_POST
@login_required
def api_token_revoke(request: HttpRequest, prefix: str) -> HttpResponse:
    require(request, Capability.ADMINISTER)
    try:
        token = key_services.api_token_revoke(actor=actor(request), prefix=prefix,
                                              reason=request.POST.get("reason", ""))
    except ServiceError as exc:
        return _keys_response(request, {"error": exc.message}, error_status(exc))
    return _keys_response(request, {"notice": f"API token {token.prefix}… revoked."}, 200)


def _keys_response(request: HttpRequest, extra: dict[str, Any], status: int) -> HttpResponse:
    template = "rollout/keys.html#keys-panel" if request.htmx else "rollout/keys.html"
    return render(request, template, _keys_context(request, **extra), status=status)


# -- helpers ----------------------------------------------------------------------------------


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    """After a successful form post: a full navigation (htmx or not) so the URL and history are right."""
    return HttpResponseClientRedirect(url) if request.htmx else HttpResponseRedirect(url)
