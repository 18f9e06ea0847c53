"""Subscription forms: shapes only; the services judge (channel rules, addresses, kinds)."""

from __future__ import annotations

from django import forms

from notifications.kinds import LABELS
from notifications.models import Channel
from rollout.forms import ServiceForm

KIND_CHOICES = [(kind.value, label) for kind, label in LABELS.items()]


class SubscriptionForm(ServiceForm):
    channel = forms.ChoiceField(choices=Channel.choices)
    address = forms.CharField(max_length=500, help_text="An e-mail address, or the incoming-webhook URL.")
    kinds = forms.MultipleChoiceField(choices=KIND_CHOICES, widget=forms.CheckboxSelectMultiple,
                                      label="Tell me when")


class KindsForm(ServiceForm):
    kinds = forms.MultipleChoiceField(choices=KIND_CHOICES, widget=forms.CheckboxSelectMultiple,
                                      label="Tell me when")
