"""Rollout's API routes, included under /api/v1/ by config/urls.py."""

from django.urls import path

from rollout.api import sdk as sdk_api
from rollout.api import stream as stream_api

urlpatterns = [
    path("sdk/ruleset", sdk_api.RulesetView.as_view(), name="sdk-ruleset"),
    path("sdk/evaluate", sdk_api.evaluate, name="sdk-evaluate"),
    path("sdk/evaluate/bulk", sdk_api.evaluate_bulk, name="sdk-evaluate-bulk"),
    path("sdk/stream", stream_api.stream, name="sdk-stream"),
    path("sdk/metrics", sdk_api.metrics, name="sdk-metrics"),
]
