"""The feedback rule from the readiness page: the same action as the API, the report re-rendered."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from actions.submit import outcome_message, submit_state
from audit.names import Action
from common.errors import ServiceError
from common.permissions import Capability
from common.ui import INVALID, HtmxHttpRequest, actor, error_status, require
from rollout.dashboard import readiness_charts
from rollout.feedback.forms import FeedbackRuleForm
from rollout.feedback.models import FeedbackRule
from rollout.plans.readiness import readiness
from rollout.selectors import flag_state_get


@require_POST
@login_required
def feedback_rule(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    """Set, change or remove the feedback rule of a flag state (``flag_state.feedback_rule_set``)."""
    state = flag_state_get(key, env)
    require(request, Capability.EDIT)
    form = FeedbackRuleForm(request.POST, env=env)
    shown: FeedbackRuleForm | None = form  # None once saved: a fresh form from the rule as it now stands
    status, message = 200, ""
    if not form.is_valid():
        status = INVALID
    else:
        has_rule = FeedbackRule.objects.filter(flag_state=state).exists()
        try:
            outcome = submit_state(actor=actor(request), flag=key, environment=env,
                                   action=Action.FLAG_STATE_FEEDBACK_RULE_SET, params=form.params(has_rule=has_rule),
                                   version=form.cleaned_data["version"], reason=form.cleaned_data.get("reason") or "")
        except ServiceError as exc:
            form.add_service_error(exc)
            status = error_status(exc)
        else:
            message = outcome_message(outcome, "Feedback rule saved: the readiness verdict follows it.")
            shown = None
    if not request.htmx:
        if message:
            messages.success(request, message)
        elif shown is not None:
            messages.error(request, "; ".join(str(e) for errors in form.errors.values() for e in errors))
        return HttpResponseRedirect(reverse("ui:state-readiness", args=[key, env]))
    state = flag_state_get(key, env)
    report = readiness(state)
    context = {"state": state, "report": report, "charts": readiness_charts(report),
               "paths": [("legacy", report["legacy"]), ("parallel", report["parallel"])],
               "feedback_form": shown, "feedback_message": message}
    return render(request, "rollout/flag_detail.html#readiness", context, status=status)
