"""OpenFeature Remote Evaluation Protocol routes, included under /ofrep/v1/ by config/urls.py."""

from django.urls import path  # noqa: F401

urlpatterns: list = []
