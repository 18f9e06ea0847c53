"""UI forms: they check the shape of input; the services check the rules (and their errors land here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms
from django.utils.html import escape

from common.errors import ServiceError
from common.ui import field_errors
from rollout.models import BreachAction, Reversibility, Risk


class ServiceForm(forms.Form):
    """A form that can show a service's ``ValidationFailed`` next to the field it names."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    def set_choices(self, name: str, choices: Sequence[tuple[Any, str]]) -> None:
        """Offer ``choices`` in the choice field ``name`` (``self.fields`` types its fields as plain ``Field``)."""
        field = self.fields[name]
        if not isinstance(field, forms.ChoiceField):
            raise TypeError(f"{name!r} is not a choice field")
        field.choices = choices

    def add_service_error(self, exc: ServiceError) -> None:
        for name, messages in field_errors(exc).items():
            field = name if name in self.fields else None
            for message in messages:
                self.add_error(field, message if field or name == "__all__" else f"{name}: {message}")


class WorkloadForm(ServiceForm):
    key = forms.CharField(max_length=63, help_text="Lowercase letters, digits, '-', '_' or '.'; never changes.")
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    owner = forms.CharField(required=False, max_length=200, help_text="The team that answers for it.")
    risk = forms.ChoiceField(choices=Risk.choices, initial=Risk.MEDIUM)
    # No phase field: a workload's phase follows its rollouts (rollout/plans/phases.py), so a phase picked
    # here would be overwritten by the next rollout change without a word. The pages show it, derived.
    reversibility = forms.ChoiceField(choices=Reversibility.choices, initial=Reversibility.STATELESS)
    legacy_system = forms.CharField(required=False, max_length=200)
    parallel_system = forms.CharField(required=False, max_length=200)


class WorkloadEditForm(WorkloadForm):
    version = forms.IntegerField(widget=forms.HiddenInput)
    reason = forms.CharField(required=False, max_length=500)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        del self.fields["key"]


class FlagForm(ServiceForm):
    # Help texts are rendered as HTML (Django marks them safe): the code sample is escaped here.
    key = forms.CharField(max_length=63, help_text=escape('What services ask for: client.decide("<key>", ...).'))
    workload = forms.ChoiceField(choices=())
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    bucket_by = forms.CharField(required=False, max_length=100,
                                help_text="Attribute that moves together, e.g. tenant_id (empty: the subject key).")

    def __init__(self, *args: Any, workloads: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_choices("workload", workloads)


class PercentageForm(ServiceForm):
    percentage = forms.DecimalField(min_value=0, max_value=100, decimal_places=4)
    compare_percentage = forms.DecimalField(min_value=0, max_value=100, decimal_places=4, required=False,
                                            label="Compare (shadow) percentage")
    version = forms.IntegerField(widget=forms.HiddenInput)
    reason = forms.CharField(required=False, max_length=500)


class PlanTemplateForm(ServiceForm):
    template = forms.ChoiceField(choices=[("standard", "Standard: validate → internal → pilot → 5% → 25% → 50% → "
                                                      "100% → retire legacy")])
    internal_cohorts = forms.MultipleChoiceField(required=False, choices=(), widget=forms.CheckboxSelectMultiple,
                                                 help_text="Dog-food first: these cohorts join at the internal stage.")
    pilot_cohorts = forms.MultipleChoiceField(required=False, choices=(), widget=forms.CheckboxSelectMultiple,
                                              help_text="These join at the pilot stage and stay in.")
    soak_seconds = forms.IntegerField(required=False, min_value=0, label="Soak time per stage (seconds)",
                                      help_text="Empty: the template's (a day or more per stage).")
    version = forms.IntegerField(widget=forms.HiddenInput)
    reason = forms.CharField(required=False, max_length=500)

    def __init__(self, *args: Any, cohorts: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_choices("internal_cohorts", cohorts)
        self.set_choices("pilot_cohorts", cohorts)


class GuardrailForm(ServiceForm):
    DEFAULTS: dict[str, Any] = {"min_sample_size": 100, "window_seconds": 300, "action": "rollback"}

    max_error_rate = forms.DecimalField(required=False, min_value=0, max_value=100, decimal_places=4,
                                        label="Max parallel error rate (%)")
    max_error_rate_increase = forms.DecimalField(required=False, min_value=0, max_value=100, decimal_places=4,
                                                 label="Max error rate above legacy (points)")
    max_latency_p95_ratio = forms.DecimalField(required=False, min_value=1, decimal_places=3,
                                               label="Max latency p95, parallel ÷ legacy")
    max_mismatch_rate = forms.DecimalField(required=False, min_value=0, max_value=100, decimal_places=4,
                                           label="Max mismatch rate (%)")
    min_sample_size = forms.IntegerField(min_value=0, label="Runs needed to judge")
    window_seconds = forms.IntegerField(min_value=60, max_value=86_400, label="Window (seconds)")
    action = forms.ChoiceField(choices=(), label="On a breach")
    version = forms.IntegerField(widget=forms.HiddenInput)
    reason = forms.CharField(required=False, max_length=500)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_choices("action", BreachAction.choices)


class ReasonForm(ServiceForm):
    reason = forms.CharField(required=False, max_length=500)
    version = forms.IntegerField(required=False, widget=forms.HiddenInput)


class TargetingForm(ServiceForm):
    include_cohorts = forms.MultipleChoiceField(required=False, choices=(), widget=forms.CheckboxSelectMultiple)
    exclude_cohorts = forms.MultipleChoiceField(required=False, choices=(), widget=forms.CheckboxSelectMultiple)
    overrides = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}),
                                help_text="One per line: subject-key = legacy or parallel.")
    version = forms.IntegerField(widget=forms.HiddenInput)
    reason = forms.CharField(required=False, max_length=500)

    def __init__(self, *args: Any, cohorts: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_choices("include_cohorts", cohorts)
        self.set_choices("exclude_cohorts", cohorts)

    def clean_overrides(self) -> dict[str, str]:
        result: dict[str, str] = {}
        for number, line in enumerate(self.cleaned_data.get("overrides", "").splitlines(), start=1):
            if not line.strip():
                continue
            subject, sep, path = line.partition("=")
            if not sep:
                raise forms.ValidationError(f"line {number}: write it as subject-key = legacy or parallel")
            result[subject.strip()] = path.strip()
        return result


def overrides_text(overrides: dict[str, str]) -> str:
    return "\n".join(f"{subject} = {path}" for subject, path in sorted(overrides.items()))


class SdkKeyForm(ServiceForm):
    environment = forms.ChoiceField(choices=())
    name = forms.CharField(max_length=100, help_text="Which service uses it, e.g. billing-api.")

    def __init__(self, *args: Any, environments: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_choices("environment", environments)


class ApiTokenForm(ServiceForm):
    username = forms.ChoiceField(choices=(), label="Acts as user")
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. deploy-pipeline.")

    def __init__(self, *args: Any, users: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_choices("username", users)
