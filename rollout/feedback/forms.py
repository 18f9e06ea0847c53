"""The feedback rule's form on the readiness page (the same action as ``PUT …/feedback/rule/``)."""

from __future__ import annotations

from typing import Any

from django import forms
from turnout.feedback import SCORE_MAX, SCORE_MIN

from rollout.feedback.reads import FeedbackRuleConfig
from rollout.forms import ServiceForm


class FeedbackRuleForm(ServiceForm):
    max_score_drop = forms.DecimalField(required=False, min_value=0, max_value=SCORE_MAX - SCORE_MIN,
                                        decimal_places=2, label="Parallel may score at most this far below legacy",
                                        help_text="Score points (0 to 4). Empty: no rule.")
    min_responses = forms.IntegerField(min_value=1, max_value=1_000_000, initial=20,
                                       label="Scored responses needed on each path")
    window_days = forms.IntegerField(min_value=1, max_value=365, initial=14, label="Window (days)")
    version = forms.IntegerField(widget=forms.HiddenInput)
    reason = forms.CharField(required=False, max_length=500)

    def __init__(self, *args: Any, env: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", f"feedback-rule-{env}-%s")
        super().__init__(*args, **kwargs)

    @classmethod
    def for_rule(cls, config: FeedbackRuleConfig | None, *, version: int, env: str) -> FeedbackRuleForm:
        initial: dict[str, Any] = {"version": version}
        if config is not None:
            initial.update(max_score_drop=config["max_score_drop"], min_responses=config["min_responses"],
                           window_days=config["window_days"])
        return cls(initial=initial, env=env)

    def params(self, *, has_rule: bool) -> dict[str, Any]:
        """The action's parameters: an empty drop removes the rule (or, without one, is refused by the service)."""
        data = self.cleaned_data
        drop = data.get("max_score_drop")
        if drop is None:
            return {"max_score_drop": None} if has_rule else {"min_responses": data["min_responses"]}
        return {"max_score_drop": str(drop), "min_responses": data["min_responses"],
                "window_days": data["window_days"]}
