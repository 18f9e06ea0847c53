"""The audit API: read events and per-object histories; export, verify and fetch evidence packs.

Reading needs READ; exporting, verifying and evidence packs need AUDIT (compliance, admin). Nothing
here changes or removes an event: there is no endpoint that could (starting a background verification
only appends its own event).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from django.db.models import QuerySet
from django.http import FileResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.evidence import SUBJECT_TYPES
from audit.exports import (
    CONTENT_TYPES,
    ExportStats,
    build_manifest,
    export_dir,
    file_name,
    manifest_for_stream,
    stream_export,
    write_export_file,
    write_manifest,
)
from audit.filters import AuditEventFilter
from audit.models import AuditEvent, AuditExport, AuditVerification, ExportStatus
from audit.serializers import (
    AuditEventChangeSerializer,
    AuditEventSerializer,
    AuditExportSerializer,
    AuditVerificationSerializer,
    ChainReportSerializer,
    PublicKeysSerializer,
)
from audit.services import audit_export_create, audit_export_fail, audit_export_finish, audit_verification_start
from audit.signing import public_keys
from audit.verify import verify_chain
from common.actors import Actor
from common.api import StrictQueryMixin
from common.errors import Conflict, NotFound
from common.permissions import Capability, HasCapability
from common.schema import ERROR_RESPONSES, ErrorSerializer
from common.streaming import streamed

NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No such object")
NOT_READY = OpenApiResponse(ErrorSerializer, description="Not ready, or not kept")
BAD_CURSOR = OpenApiResponse(ErrorSerializer, description="Invalid cursor")
EXPORT_FILE = OpenApiResponse(OpenApiTypes.BINARY, description="The export; its signed manifest is at the Link "
                                                              "header (rel=describedby)")


def _no_nul(*values: str) -> None:
    """No stored key holds a NUL character (PostgreSQL text cannot): such a path names nothing."""
    if any("\x00" in value for value in values):
        raise NotFound("no such object")


class SequenceCursorPagination(CursorPagination):
    ordering = "sequence"
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000


class AuditView(StrictQueryMixin, APIView):
    permission_classes = [HasCapability]
    read_capability = Capability.AUDIT
    write_capability = Capability.AUDIT


@extend_schema(tags=["audit"], summary="Audit events, oldest first (cursor-paginated, filterable)",
               responses={200: AuditEventSerializer(many=True), 404: BAD_CURSOR, **ERROR_RESPONSES})
class EventListView(StrictQueryMixin, generics.ListAPIView[AuditEvent]):
    permission_classes = [HasCapability]
    read_capability = Capability.READ
    serializer_class = AuditEventSerializer
    pagination_class = SequenceCursorPagination
    filter_backends = [DjangoFilterBackend]
    filterset_class = AuditEventFilter
    queryset = AuditEvent.objects.all()


@extend_schema(tags=["audit"], summary="One audit event by sequence number",
               responses={200: AuditEventChangeSerializer, 404: NOT_FOUND, **ERROR_RESPONSES})
class EventDetailView(StrictQueryMixin, generics.RetrieveAPIView[AuditEvent]):
    permission_classes = [HasCapability]
    read_capability = Capability.READ
    serializer_class = AuditEventChangeSerializer
    queryset = AuditEvent.objects.all()
    lookup_field = "sequence"


@extend_schema(tags=["audit"], summary="Everything that happened to one object, in order, with before/after diffs",
               responses={200: AuditEventChangeSerializer(many=True), 404: BAD_CURSOR, **ERROR_RESPONSES})
class ObjectHistoryView(StrictQueryMixin, generics.ListAPIView[AuditEvent]):
    permission_classes = [HasCapability]
    read_capability = Capability.READ
    serializer_class = AuditEventChangeSerializer
    pagination_class = SequenceCursorPagination

    def get_queryset(self) -> QuerySet[AuditEvent]:
        if getattr(self, "swagger_fake_view", False):
            return AuditEvent.objects.none()
        _no_nul(self.kwargs["object_type"], self.kwargs["object_key"])
        return AuditEvent.objects.filter(object_type=self.kwargs["object_type"], object_key=self.kwargs["object_key"])


class VerifyView(AuditView):
    @extend_schema(tags=["audit"], summary="Verify the whole chain; reports the first bad sequence number",
                   responses={200: ChainReportSerializer, **ERROR_RESPONSES})
    def get(self, request: Request) -> Response:
        return Response(verify_chain().as_dict())

    @extend_schema(
        tags=["audit"], request=None,
        summary="Verify the whole chain in the background (202 with the job; poll it for progress and the report)",
        parameters=[OpenApiParameter("Location", OpenApiTypes.STR, OpenApiParameter.HEADER, response=[202],
                                     description="The job's URL (/api/v1/audit/verifications/{id}/)")],
        responses={202: OpenApiResponse(AuditVerificationSerializer, description="The job; its URL is in Location"),
                   **ERROR_RESPONSES},
    )
    def post(self, request: Request) -> Response:
        verification = audit_verification_start(actor=Actor.from_request(request))
        body = AuditVerificationSerializer(verification).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["links"]["self"]})


class VerificationDetailView(AuditView):
    @extend_schema(tags=["audit"], summary="A background verification: status, progress and, once done, the report",
                   responses={200: AuditVerificationSerializer, 404: NOT_FOUND, **ERROR_RESPONSES})
    def get(self, request: Request, pk: str) -> Response:
        verification = _job_or_404(AuditVerification, pk, "verification")
        return Response(AuditVerificationSerializer(verification).data)


class PublicKeyView(StrictQueryMixin, APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(tags=["audit"], summary="The keys that sign export manifests (current first, then previous)",
                   responses={200: PublicKeysSerializer}, auth=[])
    def get(self, request: Request) -> Response:
        return Response({"keys": [k.as_dict() for k in public_keys()]})


def _accepted(export: AuditExport) -> Response:
    body = AuditExportSerializer(export).data
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["links"]["self"]})


def _export_links(response: HttpResponseBase, export: AuditExport, name: str) -> HttpResponseBase:
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["X-Audit-Export-Id"] = str(export.pk)
    response["Link"] = f'<{reverse("audit-export-manifest", args=[export.pk])}>; rel="describedby"'
    return response


EXPORT_PARAMS = [
    OpenApiParameter("format", OpenApiTypes.STR, enum=["csv", "jsonl"], required=True),
    *(OpenApiParameter(name, OpenApiTypes.STR, description=str(f.extra.get("help_text") or f"filter on {f.field_name}"))
      for name, f in AuditEventFilter.base_filters.items()),
]


class FormatIsOurs(DefaultContentNegotiation):
    """``?format=csv|jsonl`` names the export's format here, not a DRF renderer."""

    # DRF passes the view's renderer list; the stub widens it to any Iterable.
    def select_renderer(self, request: Request, renderers: Sequence[BaseRenderer],  # type: ignore[override]  # see above
                        format_suffix: str | None = None) -> tuple[BaseRenderer, str]:
        return (renderers[0], renderers[0].media_type)


class ExportView(AuditView):
    content_negotiation_class = FormatIsOurs

    @extend_schema(
        tags=["audit"], summary="Export events as CSV or JSON Lines (streamed; large ranges run in the background)",
        parameters=EXPORT_PARAMS,
        responses={(200, "text/csv"): EXPORT_FILE, (200, "application/x-ndjson"): EXPORT_FILE,
                   202: AuditExportSerializer, **ERROR_RESPONSES},
    )
    def get(self, request: Request) -> HttpResponseBase:
        filters = {name: value for name, value in request.query_params.items() if name != "format"}
        export = audit_export_create(actor=Actor.from_request(request), format=request.query_params.get("format", ""),
                                     filters=filters)
        if export.status == ExportStatus.PENDING:
            return _accepted(export)
        name = file_name(export)

        def chunks() -> Iterator[bytes]:
            stats = ExportStats()
            yield from stream_export(export, stats=stats)
            # Only a stream read to its end gets its manifest stored now (otherwise it is recomputed on request).
            audit_export_finish(export_id=export.pk,
                                manifest=build_manifest(export, [stats.file_entry(name, export.format)], stats))

        response = StreamingHttpResponse(streamed(request, chunks()), content_type=CONTENT_TYPES[export.format])
        return _export_links(response, export, name)


class EvidenceView(AuditView):
    @extend_schema(
        tags=["audit"], summary="Evidence pack for one workload or flag state (zip: events, summary, signed manifest)",
        responses={(200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="The evidence pack"),
                   202: AuditExportSerializer, 404: NOT_FOUND, **ERROR_RESPONSES},
    )
    def get(self, request: Request, subject_type: str, key: str) -> HttpResponseBase:
        _no_nul(key)
        if subject_type not in SUBJECT_TYPES:
            raise NotFound(f"no evidence packs for '{subject_type}' (one of {', '.join(SUBJECT_TYPES)})")
        export = audit_export_create(actor=Actor.from_request(request), format="zip", subject_type=subject_type,
                                     subject_key=key)
        if export.status == ExportStatus.PENDING:
            return _accepted(export)
        path = export_dir() / file_name(export)
        try:
            manifest = write_export_file(export, path)
        except Exception as exc:
            audit_export_fail(export_id=export.pk, error=f"{type(exc).__name__}: {exc}")
            raise
        write_manifest(path.with_name(path.name + ".manifest.json"), manifest)
        audit_export_finish(export_id=export.pk, manifest=manifest, file_name=path.name)
        response = FileResponse(path.open("rb"), content_type=CONTENT_TYPES[export.format])
        return _export_links(response, export, path.name)


JobT = TypeVar("JobT", AuditExport, AuditVerification)


def _job_or_404(model: type[JobT], pk: str, what: str) -> JobT:
    """A background job (export or verification) by its UUID; 404 for an unknown or malformed id."""
    try:
        job = model.objects.filter(pk=uuid.UUID(pk)).first()
    except ValueError:
        job = None
    if job is None:
        raise NotFound(f"{what} '{pk}' does not exist")
    return job


def _export_or_404(pk: str) -> AuditExport:
    return _job_or_404(AuditExport, pk, "export")


@extend_schema(tags=["audit"], summary="Export jobs, newest first",
               responses={200: AuditExportSerializer(many=True), 404: NOT_FOUND, **ERROR_RESPONSES})
class ExportListView(StrictQueryMixin, generics.ListAPIView[AuditExport]):
    permission_classes = [HasCapability]
    read_capability = Capability.AUDIT
    serializer_class = AuditExportSerializer
    queryset = AuditExport.objects.all()
    filter_backends: list[Any] = []


class ExportDetailView(AuditView):
    @extend_schema(tags=["audit"], summary="An export job: status and progress",
                   responses={200: AuditExportSerializer, 404: NOT_FOUND, **ERROR_RESPONSES})
    def get(self, request: Request, pk: str) -> Response:
        return Response(AuditExportSerializer(_export_or_404(pk)).data)


class ExportManifestView(AuditView):
    @extend_schema(tags=["audit"], summary="An export's signed manifest",
                   responses={200: OpenApiResponse(OpenApiTypes.OBJECT), 404: NOT_FOUND,
                              409: NOT_READY, **ERROR_RESPONSES})
    def get(self, request: Request, pk: str) -> Response:
        export = _export_or_404(pk)
        if export.manifest is None:
            if export.status != ExportStatus.RUNNING or export.file_name:
                raise Conflict(f"export '{pk}' is {export.status}; its manifest comes with the file")
            # A streamed export whose download was cut short: its bytes are deterministic, recompute them.
            audit_export_finish(export_id=export.pk, manifest=manifest_for_stream(export))
            export.refresh_from_db()
        return Response(export.manifest)


class ExportDownloadView(AuditView):
    @extend_schema(tags=["audit"], summary="Download a finished background export or evidence pack",
                   responses={(200, "text/csv"): EXPORT_FILE, (200, "application/x-ndjson"): EXPORT_FILE,
                              (200, "application/zip"): EXPORT_FILE, 404: NOT_FOUND,
                              409: NOT_READY, **ERROR_RESPONSES})
    def get(self, request: Request, pk: str) -> HttpResponseBase:
        export = _export_or_404(pk)
        if export.status != ExportStatus.READY or not export.file_name:
            if export.status == ExportStatus.READY:
                raise Conflict(f"export '{pk}' was streamed when requested and is not kept; request a new one")
            raise Conflict(f"export '{pk}' is {export.status} ({export.done} of {export.total} events)")
        path = export_dir() / export.file_name
        if not path.exists():
            raise NotFound(f"the file of export '{pk}' is no longer kept")
        response = FileResponse(path.open("rb"), content_type=CONTENT_TYPES[export.format])
        return _export_links(response, export, export.file_name)
