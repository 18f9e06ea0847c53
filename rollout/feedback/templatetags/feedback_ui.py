"""User feedback in the readiness report: ``{% feedback_section %}`` (rollout/feedback)."""

from __future__ import annotations

from typing import Any

from django import template

from common.permissions import Capability, can
from rollout.feedback.forms import FeedbackRuleForm

register = template.Library()


@register.inclusion_tag("feedback/readiness_section.html", takes_context=True)
def feedback_section(context: template.Context) -> dict[str, Any]:
    """Feedback per path, the rule's status and latest comments; for people who may change the
    environment, the rule's form (a bound one with its errors after a refused change)."""
    report, state = context["report"], context["state"]
    request = context.get("request")
    user = getattr(request, "user", None)
    may_edit = user is not None and can(user, Capability.EDIT)
    needs_approval = may_edit and not can(user, Capability.CHANGE_ENV, environment=state.environment,
                                          workload=state.flag.workload)
    form = context.get("feedback_form") or FeedbackRuleForm.for_rule(
        report["feedback"]["rule"]["config"], version=state.version, env=state.environment.key)
    return {"report": report, "state": state, "may_edit": may_edit, "needs_approval": needs_approval, "form": form,
            "feedback_message": context.get("feedback_message", ""), "request": request,
            "csrf_token": context.get("csrf_token")}
