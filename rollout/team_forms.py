"""Forms of the team pages (people, environments, break-glass reviews): shapes only, the services judge."""

from __future__ import annotations

from typing import Any

from django import forms

from rollout.access.users import ROLES
from rollout.forms import ServiceForm

ROLE_CHOICES = [(role, role.capitalize()) for role in ROLES]


class UserCreateForm(ServiceForm):
    username = forms.CharField(max_length=150, help_text="What they sign in with (or their identity provider's).")
    email = forms.EmailField(required=False, help_text="Where notifications go.")
    roles = forms.MultipleChoiceField(choices=ROLE_CHOICES, required=False, widget=forms.CheckboxSelectMultiple)
    password = forms.CharField(required=False, strip=False, widget=forms.PasswordInput(render_value=False),
                               help_text="Leave empty for single sign-on only, or to let them choose it "
                                         "through the invitation.")
    invite = forms.BooleanField(required=False, initial=True, label="E-mail them an invitation",
                                help_text="A one-time link to choose their password (the single sign-on link "
                                          "where password sign-in is off).")

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        if cleaned.get("invite") and not cleaned.get("email"):
            self.add_error("email", "An invitation needs their e-mail address.")
        return cleaned


class UserRolesForm(ServiceForm):
    roles = forms.MultipleChoiceField(choices=ROLE_CHOICES, required=False, widget=forms.CheckboxSelectMultiple)
    reason = forms.CharField(required=False, max_length=500)


class ReasonOnlyForm(ServiceForm):
    reason = forms.CharField(required=False, max_length=500)


class EnvironmentForm(ServiceForm):
    key = forms.CharField(max_length=63, help_text="What SDK keys and the API name it by; never changes.")
    name = forms.CharField(max_length=100)
    order = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0,
                               help_text="Environments are listed in this order (0 first).")
    requires_approval = forms.BooleanField(required=False, label="Changes need a second person's approval")
    description = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))


class EnvironmentEditForm(EnvironmentForm):
    reason = forms.CharField(required=False, max_length=500)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        del self.fields["key"]


class AcknowledgeForm(ServiceForm):
    note = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}), label="Comment",
                           help_text="What you checked, and what follows (kept in the audit log).")
