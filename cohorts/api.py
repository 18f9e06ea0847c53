"""Cohorts and their member lists: JSON for small changes, a streamed CSV upload for big ones."""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterable, Iterator
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiRequest, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from actions.submit import submit
from audit.names import Action
from cohorts import selectors
from cohorts.models import Cohort, CohortMember, MemberKind
from cohorts.services import (
    MAX_MEMBERS_PER_REQUEST,
    cohort_create,
    cohort_delete,
    subject_problem,
)
from common.api import ManagementListView, ManagementView, etag, query_reason, requested_version
from common.charsets import declared_charset, text_encoding
from common.errors import ValidationFailed
from common.fields import ReasonField, RulesField, key_field, provided
from common.inputs import Input
from common.jsonio import JSONParser
from common.schema import IF_MATCH, errors
from rollout.api.change_requests import outcome_response
from rollout.api.rollout_outputs import PendingOutput

TAGS = ["cohorts"]
MAX_REPORTED_ROWS = 20


def _subjects(help_text: str) -> serializers.ListField:
    return serializers.ListField(child=serializers.CharField(max_length=255), max_length=MAX_MEMBERS_PER_REQUEST,
                                 required=False, default=list, help_text=help_text)


class CohortOutput(serializers.Serializer[Any]):
    key = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    match_on = serializers.CharField(help_text="Attribute whose values the member lists hold (empty: the key).")
    rules = RulesField(allow_null=True)
    include_count = serializers.IntegerField()
    exclude_count = serializers.IntegerField()
    version = serializers.IntegerField(help_text="Send it back with a change; a stale one gets 409.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class MemberOutput(serializers.Serializer[Any]):
    subject = serializers.CharField()
    kind = serializers.ChoiceField(choices=MemberKind.choices)
    added_at = serializers.DateTimeField()


class MembersResultOutput(serializers.Serializer[Any]):
    added = serializers.IntegerField(help_text="New members.")
    moved = serializers.IntegerField(help_text="Members moved between include and exclude.")
    unchanged = serializers.IntegerField(help_text="Already listed with this kind.")
    removed = serializers.IntegerField()
    not_members = serializers.IntegerField(help_text="Asked to remove, but not listed.")
    version = serializers.IntegerField(help_text="The cohort's version now.")


def _cohort_response(key: str, status_code: int = status.HTTP_200_OK) -> Response:
    cohort = selectors.cohort_get(key)
    response = Response(CohortOutput(cohort).data, status=status_code)
    response["ETag"] = etag(cohort.version)
    return response


class CohortListView(ManagementListView):
    serializer_class = CohortOutput
    ordering_fields = ["key", "name", "updated_at"]
    ordering = ["key"]
    filterset_fields: list[str] = []

    class CohortCreateInput(Input):
        key = key_field()
        name = serializers.CharField(max_length=200)
        description = serializers.CharField(max_length=10_000, required=False, allow_blank=True, default="")
        match_on = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
        rules = RulesField(required=False, allow_null=True, default=None)

    def get_queryset(self) -> QuerySet[Cohort]:
        return selectors.cohort_list()

    @extend_schema(operation_id="cohorts_list", summary="List cohorts", tags=TAGS,
                   responses={200: CohortOutput(many=True), **errors(400)})
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(operation_id="cohorts_create", summary="Create a cohort", tags=TAGS,
                   request=CohortCreateInput, responses={201: CohortOutput, **errors(400)})
    def post(self, request: Request) -> Response:
        data = self.CohortCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        cohort = cohort_create(actor=self.actor(), **data.validated_data)
        return _cohort_response(cohort.key, status.HTTP_201_CREATED)


class CohortDetailView(ManagementView):
    class CohortUpdateInput(Input):
        version = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False,
                                           help_text="The version read (or send If-Match).")
        name = serializers.CharField(max_length=200, required=False)
        description = serializers.CharField(max_length=10_000, required=False, allow_blank=True)
        match_on = serializers.CharField(max_length=100, required=False, allow_blank=True)
        rules = RulesField(required=False, allow_null=True)
        reason = ReasonField()

    @extend_schema(operation_id="cohorts_retrieve", summary="One cohort", tags=TAGS,
                   responses={200: CohortOutput, **errors(404)})
    def get(self, request: Request, key: str) -> Response:
        return _cohort_response(key)

    @extend_schema(operation_id="cohorts_update", summary="Change a cohort (needs the version read)", tags=TAGS,
                   parameters=[IF_MATCH], request=CohortUpdateInput,
                   responses={200: CohortOutput, 202: PendingOutput, **errors(400, 403, 404, 409, 428)},
                   description="A cohort used by flags changes their decisions: where one of those environments "
                               "requires approval or a workload is high risk, the change waits for a second "
                               "person (202 with the change request), from here as from the UI.")
    def patch(self, request: Request, key: str) -> Response:
        data = self.CohortUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = requested_version(request, data.validated_data.get("version"))
        fields = provided(data.validated_data, "name", "description", "match_on", "rules")
        outcome = submit(actor=self.actor(), action=Action.COHORT_UPDATED, target=key, params=fields,
                         version=version, reason=data.validated_data["reason"])
        return _cohort_response(key) if outcome.applied else outcome_response(outcome, CohortOutput)

    @extend_schema(operation_id="cohorts_destroy", summary="Delete a cohort no flag uses", tags=TAGS,
                   parameters=[IF_MATCH,
                               OpenApiParameter("version", OpenApiTypes.INT, required=False,
                                                description="The version read (or send If-Match)."),
                               OpenApiParameter("reason", OpenApiTypes.STR, required=False)],
                   responses={204: None, **errors(400, 404, 409, 428)})
    def delete(self, request: Request, key: str) -> Response:
        cohort_delete(actor=self.actor(), key=key, version=requested_version(request), reason=query_reason(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class CsvUpload:
    """A CSV body not yet read: rows are pulled from the request stream as they are parsed."""

    def __init__(self, lines: Iterable[bytes], encoding: str) -> None:
        self.lines = lines
        self.encoding = encoding


class CsvParser(BaseParser):
    media_type = "text/csv"

    # DRF keeps whatever a parser returns as request.data; the stub allows only a Mapping or DataAndFiles.
    def parse(self, stream: Any, media_type: str | None = None,  # type: ignore[override]  # returns a CsvUpload
              parser_context: Any = None) -> CsvUpload:
        params = dict(part.strip().split("=", 1) for part in (media_type or "").split(";")[1:] if "=" in part)
        return CsvUpload(stream if stream is not None else [], params.get("charset", "utf-8"))


def _decoded(lines: Iterable[bytes], encoding: str) -> Iterator[str]:
    codec = text_encoding(encoding)
    if codec is None:  # unknown, or a codec that is not a text encoding (rot13, hex, bz2...)
        raise ValidationFailed.field("csv", f"unsupported charset '{encoding[:40]}': not a text encoding")
    decoder = codecs.getincrementaldecoder(codec)()
    number = 0
    for number, raw in enumerate(lines, start=1):
        try:
            yield decoder.decode(raw)
        except UnicodeDecodeError:
            raise ValidationFailed.field("csv", f"line {number}: not valid {encoding}") from None
    try:
        yield decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ValidationFailed.field("csv", f"line {number}: not valid {encoding}") from None


def read_csv_subjects(lines: Iterable[bytes], encoding: str | None = None) -> list[str]:
    """One subject key per row (a first row ``subject`` is a header); every bad row is reported by line.

    ``encoding`` None: the charset an uploaded file declares (its multipart part's Content-Type), else UTF-8.
    """
    encoding = encoding or declared_charset(lines) or "utf-8"
    subjects: list[str] = []
    problems: list[str] = []
    reader = csv.reader(_decoded(lines, encoding))
    try:
        for row in reader:
            cells = [c for c in row if c.strip()]
            if not cells:
                continue
            if reader.line_num == 1 and not subjects and cells[0].strip().lower() == "subject" and len(cells) == 1:
                continue
            problem = "expected one column (the subject key)" if len(cells) > 1 else subject_problem(cells[0])
            if problem:
                problems.append(f"line {reader.line_num}: {problem}")
                if len(problems) >= MAX_REPORTED_ROWS:
                    break
                continue
            subjects.append(cells[0].strip())
            if len(subjects) > MAX_MEMBERS_PER_REQUEST:
                raise ValidationFailed.field("csv", f"more than {MAX_MEMBERS_PER_REQUEST} rows; split the file")
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: {exc}")
    if problems:
        raise ValidationFailed(f"csv: {len(problems)} bad row(s), nothing was saved; first: {problems[0]}",
                               fields={"csv": problems})
    if not subjects:
        raise ValidationFailed.field("csv", "no subject keys in the file")
    return subjects


class CohortMembersView(ManagementListView):
    serializer_class = MemberOutput
    parser_classes = [JSONParser, CsvParser, MultiPartParser]
    ordering_fields = ["subject", "added_at"]
    ordering = ["kind", "subject"]
    filterset_fields: list[str] = []

    class CohortMembersInput(Input):
        add = _subjects("Subject keys to put on the `kind` list (moved there if on the other).")
        remove = _subjects("Subject keys to take off either list.")
        kind = serializers.ChoiceField(choices=MemberKind.choices, default=MemberKind.INCLUDE,
                                       help_text="The list `add` puts subjects on.")
        version = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False,
                                           help_text="Optional: the version read (409 if stale).")
        reason = ReasonField()

    class CohortMembersUploadInput(Input):
        file = serializers.FileField(help_text="CSV, one subject key per row (optional header `subject`).")
        action = serializers.ChoiceField(choices=[("add", "add"), ("remove", "remove")], default="add")
        kind = serializers.ChoiceField(choices=MemberKind.choices, default=MemberKind.INCLUDE)
        version = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False)
        reason = ReasonField()

    class CohortMembersCsvQuery(Input):
        action = serializers.ChoiceField(choices=[("add", "add"), ("remove", "remove")], default="add",
                                         help_text="CSV bodies only: add or remove the listed subjects.")
        kind = serializers.ChoiceField(choices=MemberKind.choices, default=MemberKind.INCLUDE,
                                       help_text="CSV bodies only: the list to add to.")
        reason = ReasonField(help_text="CSV bodies only: why (kept in the audit log).")
        version = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False,
                                           help_text="CSV bodies only: the version read (409 if stale).")

    def get_queryset(self) -> QuerySet[CohortMember]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request to read
            return CohortMember.objects.none()
        kind = self.request.query_params.get("kind")
        members = selectors.cohort_members(selectors.cohort_get(self.kwargs["key"]))
        return members.filter(kind=kind) if kind in MemberKind.values else members

    @extend_schema(operation_id="cohort_members_list", summary="A cohort's member lists", tags=TAGS,
                   parameters=[OpenApiParameter("kind", OpenApiTypes.STR, enum=MemberKind.values, required=False)],
                   responses={200: MemberOutput(many=True), **errors(400, 404)})
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="cohort_members_change",
        summary="Add and remove members (up to 100,000 per request), all or nothing",
        description="JSON `{add, remove, kind}`; or a CSV file (one subject per row) as a `text/csv` body "
                    "(with `action`, `kind`, `reason` as query parameters) or a multipart `file` field. "
                    "CSV problems are reported by line number and nothing is saved.",
        tags=TAGS,
        parameters=[IF_MATCH, CohortMembersCsvQuery],
        request={
            "application/json": CohortMembersInput,
            "text/csv": OpenApiRequest(OpenApiTypes.STR),
            "multipart/form-data": CohortMembersUploadInput,
        },
        responses={200: MembersResultOutput, 202: PendingOutput, **errors(400, 403, 404, 409)},
    )
    def post(self, request: Request, key: str) -> Response:
        body = request.data
        if isinstance(body, CsvUpload):
            query = self.CohortMembersCsvQuery(data=request.query_params)
            query.is_valid(raise_exception=True)
            options = dict(query.validated_data)
            subjects = read_csv_subjects(body.lines, body.encoding)
        elif "file" in request.FILES or request.content_type.startswith("multipart/"):
            upload = self.CohortMembersUploadInput(data=request.data)
            upload.is_valid(raise_exception=True)
            options = dict(upload.validated_data)
            subjects = read_csv_subjects(options.pop("file"))
        else:
            data = self.CohortMembersInput(data=request.data)
            data.is_valid(raise_exception=True)
            options = dict(data.validated_data)
            subjects = None
        version = requested_version(request, options.pop("version", None), required=False)
        if subjects is None:
            action, params = Action.COHORT_MEMBERS_CHANGED, {"add": options["add"], "remove": options["remove"],
                                                             "kind": options["kind"]}
        elif options["action"] == "remove":
            action, params = Action.COHORT_MEMBERS_REMOVED, {"subjects": subjects}
        else:
            action, params = Action.COHORT_MEMBERS_ADDED, {"subjects": subjects, "kind": options["kind"]}
        outcome = submit(actor=self.actor(), action=action, target=key, params=params, version=version,
                         reason=options["reason"])
        if not outcome.applied:
            return outcome_response(outcome, MembersResultOutput)
        result = outcome.result
        counts = {"added": 0, "moved": 0, "unchanged": 0, "removed": 0, "not_members": 0, **result}
        counts["version"] = selectors.cohort_get(key).version
        return Response(MembersResultOutput(counts).data)
