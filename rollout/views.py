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
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event

from actions.submit import (
    change_request_approve,
    change_request_cancel,
    change_request_reject,
    outcome_message,
    preview,
    submit,
    submit_state,
    target_snapshot,
    target_version,
)
from audit.names import Action
from cohorts.models import Cohort
from common.errors import Forbidden, NotFound, ServiceError
from common.permissions import Capability, can, can_decide, primary_role
from common.ui import INVALID, HtmxHttpRequest, actor, error_status, require
from rollout import dashboard as selectors
from rollout import plan_editor as plan_rows
from rollout.access import keys as key_services
from rollout.dashboard import change_proposal, readiness_charts
from rollout.forms import (
    ApiTokenForm,
    FlagForm,
    GuardrailForm,
    PercentageForm,
    PlanTemplateForm,
    ReasonForm,
    SdkKeyForm,
    TargetingForm,
    WorkloadEditForm,
    WorkloadForm,
    overrides_text,
)
from rollout.models import (
    ApiToken,
    ChangeRequest,
    ChangeRequestStatus,
    Environment,
    Flag,
    FlagState,
    Guardrail,
    Phase,
    Risk,
    SdkKey,
    Workload,
)
from rollout.plans.health import evaluate_state, stored_health
from rollout.plans.promotion import promotion_of
from rollout.plans.readiness import plan_status, readiness
from rollout.plans.stages import plan_template
from rollout.policy import Verdict
from rollout.selectors import flag_state_get
from rollout.services import flags as flag_services
from rollout.services import workloads as workload_services
from rollout.snapshots import guardrail_snapshot, plan_snapshot
from rollout.switcher import current_environment

# -- dashboard --------------------------------------------------------------------------------


@require_GET
@login_required
def dashboard(request: HtmxHttpRequest) -> HttpResponse:
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
def workload_create(request: HtmxHttpRequest) -> HttpResponse:
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
def workload_update(request: HtmxHttpRequest, key: str) -> HttpResponse:
    require(request, Capability.EDIT)
    workload = get_object_or_404(Workload, key=key)
    form = WorkloadEditForm(request.POST)
    if form.is_valid():
        data = dict(form.cleaned_data)
        version, reason = data.pop("version"), data.pop("reason")
        changed = {name: value for name, value in data.items() if getattr(workload, name) != value}
        try:
            outcome = submit(actor=actor(request), action=Action.WORKLOAD_UPDATED, target=key, params=changed,
                             version=version, reason=reason)
        except ServiceError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, outcome_message(outcome, "Workload saved."))
            return _redirect(request, reverse("ui:workload-detail", args=[key]))
    context = _workload_context(request, workload, edit_form=form)
    template = "rollout/workload_detail.html#workload-edit" if request.htmx else "rollout/workload_detail.html"
    return render(request, template, context, status=INVALID)


# -- flags ------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
def flag_create(request: HtmxHttpRequest) -> HttpResponse:
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
    current = current_environment(request)
    states = sorted(selectors.flag_states(flag), key=lambda s: s.environment_id != getattr(current, "pk", None))
    # One environment at a time (tabs): the one asked for (?env=), else the one the switcher shows.
    asked = request.GET.get("env", "")
    selected = asked if any(s.environment.key == asked for s in states) else (
        states[0].environment.key if states else "")
    panels = [(s, render_to_string("rollout/flag_detail.html#state-card", _card_context(request, s), request=request))
              for s in states]
    return render(request, "rollout/flag_detail.html", {"flag": flag, "panels": panels, "states": states,
                                                        "selected": selected})


def _card_context(request: HttpRequest, state: FlagState, **extra: Any) -> dict[str, Any]:
    env = state.environment
    who = actor(request)
    cohorts = list(Cohort.objects.values_list("key", "name"))
    guardrail = Guardrail.objects.filter(flag_state=state).first()
    may_edit = can(request.user, Capability.EDIT)
    target = f"{state.flag.key}@{env.key}"
    update = preview(actor=who, action=Action.FLAG_STATE_UPDATED, target=target)
    advance = preview(actor=who, action=Action.FLAG_STATE_ADVANCED, target=target)
    context = {
        "state": state,
        "status": selectors.state_status(state),
        "last_event": selectors.last_state_event(state),
        "plan": plan_status(state),
        # Pages and the 5-second poll show the last check's verdict (one row); after a change, judged afresh.
        "health": evaluate_state(state) if request.method == "POST" else stored_health(state),
        "guardrail": guardrail_snapshot(guardrail),
        "pending": list(state.change_requests.filter(status=ChangeRequestStatus.PENDING).order_by("pk")),
        "may_edit": may_edit,
        "may_kill": can(request.user, Capability.EMERGENCY, environment=env),
        # What the policy says for THIS person (the action layer's own preview): an admin in an
        # approval environment applies directly, so the card must not say "needs approval" to them.
        "needs_approval": may_edit and update.verdict is Verdict.REQUEST,
        "direct_advance": advance.applies,
        "advance_needs_approval": may_edit and advance.verdict is Verdict.REQUEST,
        # Promotion copies from the environment before this one (by order): staging → production.
        "promote_from": Environment.objects.filter(order__lt=env.order).order_by("-order", "key").first(),
        "direct_promote": preview(actor=who, action=Action.FLAG_STATE_PROMOTED, target=target).applies,
        "percentage_form": PercentageForm(auto_id=card_ids(env.key), initial={
            "percentage": state.percentage.normalize() if state.percentage else 0,
            "compare_percentage": state.compare_percentage.normalize() if state.compare_percentage else 0,
            "version": state.version,
        }),
        "targeting_form": TargetingForm(cohorts=cohorts, auto_id=card_ids(env.key), initial={
            "include_cohorts": [c.key for c in state.include_cohorts.all()],
            "exclude_cohorts": [c.key for c in state.exclude_cohorts.all()],
            "overrides": overrides_text(state.overrides),
            "version": state.version,
        }),
        "plan_form": PlanTemplateForm(cohorts=cohorts, auto_id=card_ids(env.key),
                                      initial={"template": "standard", "version": state.version}),
        "guardrail_form": GuardrailForm(auto_id=card_ids(env.key), initial={
            **(guardrail_snapshot(guardrail) or GuardrailForm.DEFAULTS), "version": state.version}),
    }
    context.update(extra)
    if context.get("undo") == "rollback":
        # Undoing a rollback puts back the stage it left, not just the pause (resume, then advance).
        context["undo_stage"] = state.stages.filter(position=state.stage + 1).first()
        if context["undo_stage"] is None or not may_edit:
            context["undo"] = ""
    return context


def card_ids(env_key: str) -> str:
    """Field ids per environment card: several cards (and their forms) share one page."""
    return f"{env_key}-%s"


def _state_or_404(key: str, env: str) -> FlagState:
    try:
        return flag_state_get(key, env)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _render_card(request: HtmxHttpRequest, key: str, env: str, *, status: int = 200, **extra: Any) -> HttpResponse:
    state = _state_or_404(key, env)
    context = _card_context(request, state, **extra)
    if not request.htmx:
        if extra.get("message"):
            messages.success(request, extra["message"])
        elif extra.get("error"):
            messages.error(request, extra["error"])
        return HttpResponseRedirect(reverse("ui:flag-detail", args=[key]) + f"?env={env}#state-{env}")
    response = render(request, "rollout/flag_detail.html#state-card", context, status=status)
    if request.method == "POST":  # the readiness report below refreshes too
        trigger_client_event(response, "rolloutChanged")
    return response


def state_card_response(request: HtmxHttpRequest, key: str, env: str, *, status: int = 200,
                        **extra: Any) -> HttpResponse:
    """The state card after a change made from a card inside it (the migration card's forms): the card
    with ``message`` or ``error`` for htmx, else a redirect to the flag page with the message."""
    return _render_card(request, key, env, status=status, **extra)


@require_GET
@login_required
def state_card(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    """The live state card (polled by the flag page)."""
    require(request, Capability.READ)
    if not request.htmx:
        return HttpResponseRedirect(reverse("ui:flag-detail", args=[key]) + f"?env={env}#state-{env}")
    return _render_card(request, key, env)


@require_POST
@login_required
def state_kill(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    """The kill switch: everyone to legacy at once; needs no version and waits for nothing."""
    state = _state_or_404(key, env)
    require(request, Capability.EMERGENCY, environment=state.environment)
    return _emergency(request, state, Action.FLAG_STATE_KILLED,
                      done=f"Killed: every subject takes legacy in {state.environment.name}.")



@require_POST
@login_required
def state_resume(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    """Switch a killed rollout back on, or lift a pause (through approval where the policy wants one)."""
    state = _state_or_404(key, env)
    require(request, Capability.EDIT)
    form = ReasonForm(request.POST)
    form.is_valid()
    return _submit(request, state, Action.FLAG_STATE_RESUMED, {}, version=form.cleaned_data.get("version"),
                   reason=form.cleaned_data.get("reason", ""),
                   done=f"Resumed at {_pct(state.percentage)}% in {state.environment.name}.")


@require_POST
@login_required
def state_retire(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    state = _state_or_404(key, env)
    require(request, Capability.EDIT)
    form = ReasonForm(request.POST)
    form.is_valid()
    return _submit(request, state, Action.FLAG_STATE_RETIRED, {}, version=form.cleaned_data.get("version"),
                   reason=form.cleaned_data.get("reason", ""),
                   done=f"Legacy retired in {state.environment.name}: every subject takes the parallel path.")


@require_POST
@login_required
def state_percentage(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    state = _state_or_404(key, env)
    require(request, Capability.EDIT)
    form = PercentageForm(request.POST, auto_id=card_ids(env))
    if not form.is_valid():
        return _render_card(request, key, env, status=INVALID, percentage_form=form, open_panel="percentage")
    old = state.percentage
    params: dict[str, Any] = {"percentage": str(form.cleaned_data["percentage"])}
    compare = form.cleaned_data.get("compare_percentage")
    if compare is not None and compare != state.compare_percentage:  # only what changes goes into a request
        params["compare_percentage"] = str(compare)
    new = form.cleaned_data["percentage"]
    return _submit(request, state, Action.FLAG_STATE_UPDATED, params, version=form.cleaned_data["version"],
                   reason=form.cleaned_data["reason"], form=form, panel="percentage",
                   done=f"Parallel share {_pct(old)}% → {_pct(new)}%." if new != old else "Saved.",
                   undo={"undo": "percentage", "undo_percentage": old} if new != old else {})


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
def state_targeting(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    state = _state_or_404(key, env)
    require(request, Capability.EDIT)
    form = TargetingForm(request.POST, cohorts=list(Cohort.objects.values_list("key", "name")), auto_id=card_ids(env))
    if not form.is_valid():
        return _render_card(request, key, env, status=INVALID, targeting_form=form, open_panel="targeting")
    params = {name: form.cleaned_data[name] for name in ("include_cohorts", "exclude_cohorts", "overrides")}
    return _submit(request, state, Action.FLAG_STATE_UPDATED, params, version=form.cleaned_data["version"],
                   reason=form.cleaned_data["reason"], form=form, panel="targeting",
                   done="Cohorts and overrides saved.")


# -- the rollout plan: stages, advance / pause / rollback, guardrails ---------------------------


@require_POST
@login_required
def state_plan(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    """Build the plan from a template (stages with soak times, gates and cohorts)."""
    state = _state_or_404(key, env)
    require(request, Capability.EDIT)
    form = PlanTemplateForm(request.POST, cohorts=list(Cohort.objects.values_list("key", "name")),
                            auto_id=card_ids(env))
    if not form.is_valid():
        return _render_card(request, key, env, status=INVALID, plan_form=form, open_panel="plan")
    try:
        stages = plan_template(form.cleaned_data["template"], internal_cohorts=form.cleaned_data["internal_cohorts"],
                               pilot_cohorts=form.cleaned_data["pilot_cohorts"],
                               soak_seconds=form.cleaned_data["soak_seconds"])
    except ServiceError as exc:
        form.add_service_error(exc)
        return _render_card(request, key, env, status=error_status(exc), plan_form=form, open_panel="plan")
    return _submit(request, state, Action.FLAG_STATE_PLAN_SET, {"stages": stages}, version=form.cleaned_data["version"],
                   reason=form.cleaned_data["reason"], form=form, panel="plan",
                   done=f"Plan set: {len(stages)} stages. Advance to start it.")


@require_http_methods(["GET", "POST"])
@login_required
def plan_editor(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    """The stage editor: custom stages, percentages, soak times, gates, cohorts and start times, checked
    by the API's own plan input and set through the action layer (applied, or a change request)."""
    state = _state_or_404(key, env)
    require(request, Capability.EDIT)
    general: list[str] = []
    status = 200
    version: int | None = state.version
    reason = ""
    if request.method == "GET":
        if request.GET.get("template") == "standard" or not state.stages.exists():
            rows = plan_rows.rows_from_stages(plan_template("standard"))
        else:
            rows = plan_rows.rows_from_stages(plan_snapshot(state))
    else:
        rows = plan_rows.rows_from_post(request.POST)
        op = request.POST.get("op", "save")
        form = ReasonForm(request.POST)
        form.is_valid()
        version, reason = form.cleaned_data.get("version"), form.cleaned_data.get("reason") or ""
        if op == "add":
            if len(rows) < plan_rows.MAX_ROWS:
                rows.append(plan_rows.next_row(rows))
        elif op.startswith("remove-") and op[7:].isdigit() and int(op[7:]) < len(rows):
            del rows[int(op[7:])]
        else:
            stages, general = plan_rows.validated_stages(rows, version=version, reason=reason)
            status = INVALID
            if stages is not None:
                try:
                    outcome = submit_state(actor=actor(request), flag=key, environment=env,
                                           action=Action.FLAG_STATE_PLAN_SET, params={"stages": stages},
                                           version=version, reason=reason)
                except ServiceError as exc:
                    general = plan_rows.place_service_errors(rows, exc)
                    status = error_status(exc)
                else:
                    messages.success(request, outcome_message(
                        outcome, f"Plan set: {len(stages)} stages. Advance to start it."))
                    return _redirect(request, reverse("ui:flag-detail", args=[key]) + f"?env={env}#state-{env}")
    ruling = preview(actor=actor(request), action=Action.FLAG_STATE_PLAN_SET, target=f"{key}@{env}")
    return render(request, "rollout/plan_editor.html", {
        "state": state, "rows": rows, "general": general, "version": version, "reason": reason,
        "cohorts": list(Cohort.objects.values_list("key", "name")), "units": list(plan_rows.UNITS),
        "max_rows": plan_rows.MAX_ROWS, "needs_approval": ruling.verdict is Verdict.REQUEST,
        "started": state.stage > 0,
    }, status=status)


@require_POST
@login_required
def state_advance(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    state = _state_or_404(key, env)
    require(request, Capability.EDIT)
    form = ReasonForm(request.POST)
    form.is_valid()
    params = {"force": True} if request.POST.get("force") else {}
    return _submit(request, state, Action.FLAG_STATE_ADVANCED, params, version=form.cleaned_data.get("version"),
                   reason=form.cleaned_data.get("reason", ""), done="Advanced to the next stage.")


@require_POST
@login_required
def state_promote(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    """Copy the plan, guardrails and targeting of another environment onto this one: one change."""
    state = _state_or_404(key, env)
    require(request, Capability.EDIT)
    form = ReasonForm(request.POST)
    form.is_valid()
    source = request.POST.get("from_environment", "")
    try:
        params = promotion_of(key, source)
    except ServiceError as exc:
        return _render_card(request, key, env, status=error_status(exc), error=exc.message)
    return _submit(request, state, Action.FLAG_STATE_PROMOTED, params, version=form.cleaned_data.get("version"),
                   reason=form.cleaned_data.get("reason", ""),
                   done=f"Promoted the plan, guardrails and targeting from {source}.")


@require_POST
@login_required
def state_pause(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    """Hold the rollout where it is; never waits for approval."""
    state = _state_or_404(key, env)
    require(request, Capability.EMERGENCY, environment=state.environment)
    return _emergency(request, state, Action.FLAG_STATE_PAUSED,
                      done="Paused: the split stays as it is and nothing advances.", undo={"undo": "resume",
                                                                                          "undo_of": "pause"})


@require_POST
@login_required
def state_rollback(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    """Back one stage at once, then paused; never waits for approval."""
    state = _state_or_404(key, env)
    require(request, Capability.EMERGENCY, environment=state.environment)
    return _emergency(request, state, Action.FLAG_STATE_ROLLED_BACK, panel="rollback",
                      done="Rolled back one stage; the rollout is paused until resumed.", undo={"undo": "rollback"})


@require_POST
@login_required
def state_undo_rollback(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    """Undo a rollback: the stage it left comes back and its pause is lifted — one advance with
    ``resume`` through the action layer (one audit event; a change request where the policy wants one).
    The card's version makes sure nothing moved since the rollback."""
    state = _state_or_404(key, env)
    require(request, Capability.EDIT)
    form = ReasonForm(request.POST)
    form.is_valid()
    stage = request.POST.get("stage", "")
    target = state.stages.filter(position=int(stage)).first() if stage.isdigit() else None
    if target is None or target.position != state.stage + 1 or state.paused_at is None:
        return _render_card(request, key, env, status=409,
                            error="Nothing to undo: the rollout is no longer where the rollback left it.")
    return _submit(request, state, Action.FLAG_STATE_ADVANCED, {"resume": True},
                   version=form.cleaned_data.get("version"), reason=form.cleaned_data.get("reason") or "undo rollback",
                   done=f"Rollback undone: back at “{target.name}”, resumed.")


@require_POST
@login_required
def state_guardrails(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    state = _state_or_404(key, env)
    require(request, Capability.EDIT)
    form = GuardrailForm(request.POST, auto_id=card_ids(env))
    if not form.is_valid():
        return _render_card(request, key, env, status=INVALID, guardrail_form=form, open_panel="guardrails")
    data = dict(form.cleaned_data)
    version, reason = data.pop("version"), data.pop("reason")
    params = {name: (str(value) if isinstance(value, Decimal) else value) for name, value in data.items()}
    return _submit(request, state, Action.FLAG_STATE_GUARDRAILS_SET, params, version=version, reason=reason, form=form,
                   panel="guardrails", done="Guardrails saved: they are checked every minute.")


@require_GET
@login_required
def state_readiness(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    """The readiness report: legacy vs parallel over time, guardrails, soak, mismatch samples."""
    require(request, Capability.READ)
    state = _state_or_404(key, env)
    report = readiness(state)
    context = {"state": state, "report": report, "charts": readiness_charts(report),
               "paths": [("legacy", report["legacy"]), ("parallel", report["parallel"])]}
    if request.htmx:
        return render(request, "rollout/flag_detail.html#readiness", context)
    return render(request, "rollout/readiness.html", context)


def _emergency(request: HtmxHttpRequest, state: FlagState, action: Action, *, done: str, panel: str = "",
               undo: dict[str, Any] | None = None) -> HttpResponse:
    """Kill, pause, rollback: never wait for approval, but name the version the card showed (a kill
    without one applies to whatever stands now)."""
    form = ReasonForm(request.POST)
    form.is_valid()
    return _submit(request, state, action, {}, version=form.cleaned_data.get("version"),
                   reason=(form.cleaned_data.get("reason") or "")[:2000], done=done, error_panel=panel,
                   undo=undo or {"undo": "resume"})


def _submit(request: HtmxHttpRequest, state: FlagState, action: Action, params: dict[str, Any], *,
            version: int | None, reason: str, done: str, form: Any = None, panel: str = "",
            undo: dict[str, Any] | None = None, error_panel: str = "") -> HttpResponse:
    """A person's change through the action layer: applied now where the policy allows, else a change
    request for a second person, else refused — the same answer the API gives."""
    key, env = state.flag.key, state.environment.key
    try:
        result = submit_state(actor=actor(request), flag=key, environment=env, action=action, params=params,
                              version=version, reason=reason)
    except ServiceError as exc:
        if form is not None:
            form.add_service_error(exc)
            return _render_card(request, key, env, status=error_status(exc), open_panel=panel,
                                **{f"{panel}_form": form})
        extra = {"open_panel": error_panel} if error_panel else {}
        return _render_card(request, key, env, status=error_status(exc), error=exc.message, **extra)
    if result.change_request is not None:
        cr = result.change_request
        return _render_card(request, key, env, requested=cr,
                            message=f"Waiting for approval: change request #{cr.pk} ({cr.summary}).")
    return _render_card(request, key, env, message=done, **(undo or {}))


def _pct(value: Any) -> str:
    return f"{float(value):.4f}".rstrip("0").rstrip(".")


# -- change requests --------------------------------------------------------------------------


@require_GET
@login_required
def change_list(request: HtmxHttpRequest) -> HttpResponse:
    """The approvers' inbox (others' pending requests), the requester's own, and recent decisions."""
    require(request, Capability.READ)
    requests = ChangeRequest.objects.select_related("flag_state__flag__workload", "flag_state__environment")
    pending = list(requests.filter(status=ChangeRequestStatus.PENDING).order_by("created_at"))
    context = {
        "inbox": [cr for cr in pending if can_decide(request.user, cr)],
        "mine": list(requests.filter(requested_by_id=request.user.pk).order_by("-created_at")[:50]),
        "waiting": [cr for cr in pending if not can_decide(request.user, cr) and cr.requested_by_id != request.user.pk],
        "decided": list(requests.exclude(status=ChangeRequestStatus.PENDING).order_by("-decided_at")[:20]),
        "may_approve": can(request.user, Capability.APPROVE),
    }
    template = "rollout/change_list.html#change-lists" if request.htmx else "rollout/change_list.html"
    return render(request, template, context)


def _change_context(request: HttpRequest, cr: ChangeRequest, **extra: Any) -> dict[str, Any]:
    current = target_snapshot(cr)
    proposed = change_proposal(cr, current)
    version = target_version(cr)
    return {"cr": cr, "current": current, "proposed": proposed, "may_decide": can_decide(request.user, cr),
            "is_requester": cr.requested_by_id == request.user.pk, "target_version": version,
            "stale": cr.status == ChangeRequestStatus.PENDING and version != cr.based_on_version,
            **extra}


@require_GET
@login_required
def change_detail(request: HttpRequest, pk: int) -> HttpResponse:
    require(request, Capability.READ)
    cr = get_object_or_404(ChangeRequest.objects.select_related("flag_state__flag__workload",
                                                                "flag_state__environment"), pk=pk)
    return render(request, "rollout/change_detail.html", _change_context(request, cr))


def _decide(request: HtmxHttpRequest, pk: int, decide: Any, done: str) -> HttpResponse:
    cr = get_object_or_404(ChangeRequest.objects.select_related("flag_state__flag", "flag_state__environment"),
                           pk=pk)
    comment = request.POST.get("comment", "")[:2000]
    try:
        cr = decide(actor=actor(request), change_request=pk, reason=comment)
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from None
    except ServiceError as exc:
        context = _change_context(request, cr, error=exc.message)
        template = "rollout/change_detail.html#decision" if request.htmx else "rollout/change_detail.html"
        return render(request, template, context, status=error_status(exc))
    cr = ChangeRequest.objects.select_related("flag_state__flag__workload", "flag_state__environment").get(pk=pk)
    message = done if cr.status != ChangeRequestStatus.STALE else (
        f"Change request #{pk} is stale: the rollout changed since it was requested, so nothing was applied.")
    context = _change_context(request, cr, message=message)
    template = "rollout/change_detail.html#decision" if request.htmx else "rollout/change_detail.html"
    response = render(request, template, context)
    return trigger_client_event(response, "changeDecided", {"id": pk, "status": cr.status})


@require_POST
@login_required
def change_approve(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    require(request, Capability.APPROVE)
    return _decide(request, pk, change_request_approve, "Approved and applied.")


@require_POST
@login_required
def change_reject(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    require(request, Capability.APPROVE)
    return _decide(request, pk, change_request_reject, "Rejected; the requester sees your comment.")


@require_POST
@login_required
def change_cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    require(request, Capability.EDIT)
    return _decide(request, pk, change_request_cancel, "Withdrawn.")


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
def sdk_key_create(request: HtmxHttpRequest) -> HttpResponse:
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
def api_token_create(request: HtmxHttpRequest) -> HttpResponse:
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
def sdk_key_revoke(request: HtmxHttpRequest, prefix: str) -> HttpResponse:
    require(request, Capability.ADMINISTER)
    try:
        key = key_services.sdk_key_revoke(actor=actor(request), prefix=prefix, reason=request.POST.get("reason", ""))
    except ServiceError as exc:
        return _keys_response(request, {"error": exc.message}, error_status(exc))
    return _keys_response(request, {"notice": f"SDK key {key.prefix}… revoked: services using it now get 401."}, 200)


@require_POST
@login_required
def api_token_revoke(request: HtmxHttpRequest, prefix: str) -> HttpResponse:
    require(request, Capability.ADMINISTER)
    try:
        token = key_services.api_token_revoke(actor=actor(request), prefix=prefix,
                                              reason=request.POST.get("reason", ""))
    except ServiceError as exc:
        return _keys_response(request, {"error": exc.message}, error_status(exc))
    return _keys_response(request, {"notice": f"API token {token.prefix}… revoked."}, 200)


def _keys_response(request: HtmxHttpRequest, extra: dict[str, Any], status: int) -> HttpResponse:
    template = "rollout/keys.html#keys-panel" if request.htmx else "rollout/keys.html"
    return render(request, template, _keys_context(request, **extra), status=status)


# -- helpers ----------------------------------------------------------------------------------


def _redirect(request: HtmxHttpRequest, url: str) -> HttpResponse:
    """After a successful form post: a full navigation (htmx or not) so the URL and history are right."""
    return HttpResponseClientRedirect(url) if request.htmx else HttpResponseRedirect(url)
