"""This app's API routes, included under /api/v1/ by config/urls.py."""

from django.urls import path

from cohorts import api

urlpatterns = [
    path("cohorts/", api.CohortListView.as_view(), name="cohort-list"),
    path("cohorts/<str:key>/", api.CohortDetailView.as_view(), name="cohort-detail"),
    path("cohorts/<str:key>/members/", api.CohortMembersView.as_view(), name="cohort-members"),
]
