"""Rollout's API routes, included under /api/v1/ by config/urls.py."""

from django.urls import path

from rollout.api import sdk as sdk_api

urlpatterns = [
    path("sdk/ruleset", sdk_api.RulesetView.as_view(), name="sdk-ruleset"),
]
