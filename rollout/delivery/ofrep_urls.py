"""OpenFeature Remote Evaluation Protocol routes, included under /ofrep/v1/ by config/urls.py
(no trailing slash: providers build these paths themselves)."""

from django.urls import path

from rollout.delivery import ofrep

urlpatterns = [
    path("evaluate/flags/<str:key>", ofrep.evaluate_flag, name="ofrep-evaluate-flag"),
    path("evaluate/flags", ofrep.evaluate_flags, name="ofrep-evaluate-flags"),
]
