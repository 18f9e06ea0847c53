"""This app's API routes, included under /api/v1/ by config/urls.py."""

from django.urls import path

from audit import api

urlpatterns = [
    path("audit/events/", api.EventListView.as_view(), name="audit-event-list"),
    path("audit/events/<str:sequence>/", api.EventDetailView.as_view(), name="audit-event-detail"),
    path("audit/objects/<str:object_type>/<path:object_key>/", api.ObjectHistoryView.as_view(),
         name="audit-object-history"),
    path("audit/verify", api.VerifyView.as_view(), name="audit-verify"),
    path("audit/verifications/<str:pk>/", api.VerificationDetailView.as_view(), name="audit-verification-detail"),
    path("audit/export", api.ExportView.as_view(), name="audit-export"),
    path("audit/exports/", api.ExportListView.as_view(), name="audit-export-list"),
    path("audit/exports/<str:pk>/", api.ExportDetailView.as_view(), name="audit-export-detail"),
    path("audit/exports/<str:pk>/manifest", api.ExportManifestView.as_view(), name="audit-export-manifest"),
    path("audit/exports/<str:pk>/download", api.ExportDownloadView.as_view(), name="audit-export-download"),
    path("audit/evidence/<str:subject_type>/<path:key>", api.EvidenceView.as_view(), name="audit-evidence"),
    path("audit/public-key", api.PublicKeyView.as_view(), name="audit-public-key"),
]
