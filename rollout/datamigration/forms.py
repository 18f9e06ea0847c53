"""The migration stage card's forms: they check the shape of input and turn one move into the parameters of
``migration.stage_set``; the services check the rules (no skipping, no moving back, approval, ``complete``)."""

from __future__ import annotations

from typing import Any

from django import forms

from rollout.datamigration.rules import STAGES, Config, position
from rollout.models import MigrationStage

STAGE_CHOICES = [(s, s) for s in STAGES]


class MigrationStageForm(forms.Form):
    """One forward move from the card: the base to the next stage, a share of subjects ahead at a stage, a
    cohort placed at a stage, or the divergence limit."""

    MOVES = [("base", "the base stage"), ("split", "a share of subjects"), ("cohort", "a cohort"),
             ("limit", "the divergence limit")]

    move = forms.ChoiceField(choices=MOVES)
    version = forms.IntegerField(min_value=1, max_value=2**31 - 1, required=False)
    reason = forms.CharField(max_length=2000, required=False)
    stage = forms.ChoiceField(choices=STAGE_CHOICES, required=False)
    percentage = forms.DecimalField(min_value=0, max_value=100, max_digits=7, decimal_places=4, required=False)
    cohort = forms.CharField(max_length=100, required=False)
    max_divergences = forms.IntegerField(min_value=0, max_value=10**9, required=False)
    confirm_irreversible = forms.BooleanField(required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        move = data.get("move")
        needs = {"base": ("stage",), "split": ("stage", "percentage"), "cohort": ("cohort", "stage")}
        for name in needs.get(str(move), ()):
            if data.get(name) in (None, ""):
                self.add_error(name, "required for this move")
        if move == "base" and data.get("stage") == MigrationStage.COMPLETE and not data.get("confirm_irreversible"):
            self.add_error("confirm_irreversible", "confirm that completing the migration cannot be undone")
        return data

    def params(self, config: Config) -> dict[str, Any]:
        """The ``migration.stage_set`` parameters of this move, from the configuration the card showed."""
        data = self.cleaned_data
        move, stage = data["move"], str(data.get("stage") or "")
        if move == "limit":
            return {"max_divergences": data.get("max_divergences")}
        if move == "base":
            params: dict[str, Any] = {"stage": stage}
            ahead = [dict(s) for s in config.splits if position(s["stage"]) > position(stage)]
            if len(ahead) != len(config.splits):  # shares the base now covers: everyone is there
                params["splits"] = ahead
            return params
        if move == "split":
            shares = {s["stage"]: float(s["percentage"]) for s in config.splits}
            shares[stage] = float(data["percentage"])
            return {"splits": [{"stage": s, "percentage": shares[s]} for s in sorted(shares, key=position)]}
        cohorts = [dict(c) for c in config.cohorts]
        for entry in cohorts:
            if entry["cohort"] == data["cohort"]:
                entry["stage"] = stage
                break
        else:
            cohorts.append({"cohort": data["cohort"], "stage": stage})
        return {"cohorts": cohorts}

    def first_error(self) -> str:
        for name, errors in self.errors.items():
            return f"{name}: {errors[0]}" if name != "__all__" else str(errors[0])
        return ""


class MigrationReasonForm(forms.Form):
    """A rollback or a resolution: the version the card showed and why (the services insist on a reason)."""

    version = forms.IntegerField(min_value=1, max_value=2**31 - 1, required=False)
    reason = forms.CharField(max_length=2000, required=False)
    scope = forms.ChoiceField(choices=[("selected", "the divergences ticked"), ("all", "every unresolved one")],
                              required=False)
