"""Configuration as code over the management API: the schema, export, plan and apply (``turnout`` CLI's way in).

The files travel as JSON: ``files`` is an object of path → text (the YAML files and the CSV member lists they
name). The views only translate: ``actions.config`` reads the files, asks the action layer for each change's
ruling and submits the changes.
"""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from actions.config.export import export_files
from actions.config.files import FORMAT, schema
from actions.config.plan import Context, apply, plan
from common.api import ManagementView
from common.fields import ReasonField
from common.inputs import Input
from common.permissions import Capability
from common.schema import errors

TAGS = ["configuration"]
SCHEMA_LINK = ("The files' JSON Schema: [`/api/v1/config/schema`](/api/v1/config/schema) (in the repository: "
               "`actions/config/schema.json`); the format and a worked example: `docs/config-as-code.md`.")
FILES_HELP = "path → text of every file of the configuration: the YAML files and the CSV files cohorts name"


_ANY_VALUE: dict[str, Any] = {"description": "a JSON value as the files give it (number, string, list, object...)",
                               "oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"},
                                         {"type": "array", "items": {"type": "object", "additionalProperties": True}},
                                         {"type": "object", "additionalProperties": True}], "nullable": True}
_VERSIONS: dict[str, Any] = {
    "type": "object", "description": "'kind:key' → the version read (environments: their fields); absent: none yet",
    "additionalProperties": {"oneOf": [{"type": "integer"}, {"type": "string"}], "nullable": True}}
_CHANGE_PROPERTIES: dict[str, Any] = {
    "kind": {"type": "string", "enum": ["environment", "workload", "cohort", "flag", "flag_state"]},
    "key": {"type": "string", "description": "the object's key; a flag state is flag@environment"},
    "op": {"type": "string", "enum": ["create", "update", "delete", "unchanged"]},
    "action": {"type": "string", "description": "the audit action that carries the change"},
    "params": {"type": "object", "additionalProperties": _ANY_VALUE},
    "diff": {"type": "object", "description": "field → {before, after}",
             "additionalProperties": {"type": "object", "properties": {"before": _ANY_VALUE, "after": _ANY_VALUE}}},
    "ruling": {"type": "string", "enum": ["", "apply", "request", "refuse"]},
    "why": {"type": "string"},
    "version": {"oneOf": [{"type": "integer"}, {"type": "string"}], "nullable": True},
    "file": {"type": "string"},
    "line": {"type": "integer"},
}
_COUNTS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "integer"}}
PLAN_OUTPUT: dict[str, Any] = {
    "type": "object", "properties": {
        "changes": {"type": "array", "items": {"type": "object", "properties": _CHANGE_PROPERTIES}},
        "summary": _COUNTS, "versions": _VERSIONS, "has_changes": {"type": "boolean"}}}
APPLY_OUTPUT: dict[str, Any] = {
    "type": "object", "properties": {
        "results": {"type": "array", "items": {"type": "object", "properties": {
            **_CHANGE_PROPERTIES,
            "result": {"type": "string", "enum": ["applied", "change_request", "failed", "not_attempted"]},
            "change_request": {"type": "object", "properties": {
                "id": {"type": "integer"}, "summary": {"type": "string"}, "url": {"type": "string"},
                "page": {"type": "string"}}},
            "error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                      "additionalProperties": True}}}},
        "summary": _COUNTS, "complete": {"type": "boolean"},
        "origin": {"type": "object", "properties": {"commit": {"type": "string"}, "path": {"type": "string"}}}}}
EXPORT_OUTPUT: dict[str, Any] = {
    "type": "object", "properties": {"format": {"type": "integer", "enum": [1]},
                                     "files": {"type": "object", "additionalProperties": {"type": "string"}}}}
SCHEMA_OUTPUT: dict[str, Any] = {
    "type": "object", "additionalProperties": True,
    "description": "a JSON Schema (draft 2020-12) of one configuration file"}


class FilesField(serializers.DictField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(child=serializers.CharField(allow_blank=True, trim_whitespace=False),
                         allow_empty=False, help_text=FILES_HELP, **kwargs)


@extend_schema_field(_VERSIONS)
class VersionsField(serializers.DictField):
    """The plan's ``versions``: integers, or strings for environments (checked against the plan recomputed)."""


class ConfigPlanInput(Input):
    files = FilesField()
    delete = serializers.BooleanField(required=False, default=False,
                                      help_text="also delete flags, cohorts and workloads missing from the files")
    create_environments = serializers.BooleanField(
        required=False, default=False,
        help_text="create environments the files name and the installation lacks (else: refused as files for "
                  "another installation)")
    confirm_delete = serializers.ListField(child=serializers.CharField(max_length=63), required=False, default=list,
                                           max_length=1000,
                                           help_text="flags SDKs still evaluate that may be killed and deleted")


class ConfigOriginInput(Input):
    commit = serializers.CharField(max_length=100, required=False, default="", allow_blank=True)
    path = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class ConfigApplyInput(ConfigPlanInput):
    versions = VersionsField(help_text="the `versions` of the plan being applied (optimistic concurrency)")
    origin = ConfigOriginInput(required=False, help_text="where the files come from: the commit id and the directory "
                                                   "in the repository (recorded in every audit event's reason)")
    reason = ReasonField()


class ConfigSchemaView(ManagementView):
    @extend_schema(tags=TAGS, operation_id="config_schema",
                   summary="The JSON Schema of a configuration file",
                   description=SCHEMA_LINK, responses={200: SCHEMA_OUTPUT, **errors()})
    def get(self, request: Request) -> JsonResponse:
        return JsonResponse(schema(), json_dumps_params={"indent": 1})


class ConfigExportView(ManagementView):
    @extend_schema(tags=TAGS, operation_id="config_export", summary="The installation as configuration files",
                   description="Every environment, workload, cohort (member lists as CSV files) and flag with its "
                               "rollout per environment, laid out as a repository keeps them. " + SCHEMA_LINK,
                   responses={200: EXPORT_OUTPUT, **errors()})
    def get(self, request: Request) -> Response:
        return Response({"format": FORMAT, "files": dict(export_files())})


class ConfigPlanView(ManagementView):
    write_capability = Capability.READ  # a plan changes nothing; its rulings are the caller's own

    @extend_schema(tags=TAGS, operation_id="config_plan", request=ConfigPlanInput,
                   summary="What applying these files would change, and what policy says about each change",
                   description="Per object: create, update (field-level diff) or unchanged; per change the action "
                               "and the ruling (`apply`, `request`: a change request, `refuse`). Files that fail the "
                               "schema: 400 `config_invalid` naming file, line and field. " + SCHEMA_LINK,
                   responses={200: PLAN_OUTPUT, **errors(400)})
    def post(self, request: Request) -> Response:
        data = _valid(ConfigPlanInput, request)
        return Response(plan(actor=self.actor(), files=data["files"], delete=data["delete"],
                             create_environments=data["create_environments"],
                             confirm_delete=data["confirm_delete"]).as_json())


class ConfigApplyView(ManagementView):
    @extend_schema(tags=TAGS, operation_id="config_apply", request=ConfigApplyInput,
                   summary="Apply these files, as planned",
                   description="Refused whole (409) when an object moved since the plan read it, or (403) when a "
                               "change is refused; otherwise each change is one action with its own audit event "
                               "(the reason carries the commit and file): applied, or a change request (linked). "
                               + SCHEMA_LINK,
                   responses={200: APPLY_OUTPUT, **errors(400, 409)})
    def post(self, request: Request) -> Response:
        data = _valid(ConfigApplyInput, request)
        ctx = data.get("origin") or {}
        result = apply(actor=self.actor(), files=data["files"], versions=data["versions"], delete=data["delete"],
                       create_environments=data["create_environments"], confirm_delete=data["confirm_delete"],
                       context=Context(commit=ctx.get("commit", ""), path=ctx.get("path", ""),
                                       reason=data.get("reason", "")))
        return Response(result)


def _valid(input_class: type[Input], request: Request) -> dict[str, Any]:
    serializer = input_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    validated: dict[str, Any] = serializer.validated_data
    return validated

