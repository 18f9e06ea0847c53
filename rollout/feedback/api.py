"""Feedback endpoints: the SDK's report (``POST /api/v1/sdk/feedback``), the management read and the rule.

The SDK endpoint is a lean view like the metrics endpoint (rollout/delivery/lean.py): the SDK key, the same
per-key throttle, the one error body, a bad field named in a 400, a body over the limit a 413. The management
views are ordinary DRF views under the flag state; setting the rule goes through the action layer.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from turnout.feedback import MAX_BATCH, SCORE_MAX, SCORE_MIN

from audit.names import Action
from common.conf import get_setting
from common.errors import ValidationFailed
from common.permissions import Capability
from common.schema import ERROR_RESPONSES, IF_MATCH, AttributeValueField, errors
from rollout.api.rollouts import STATE_PARAMS, SUBMIT_RESPONSES, ChangeInput, RolloutView
from rollout.delivery.evaluation import compiled_ruleset
from rollout.delivery.lean import BadRequest, bad_request, described, json_response, read_json, sdk_guard
from rollout.feedback.ingest import feedback_record, parse_feedback
from rollout.feedback.models import Feedback, FeedbackPath
from rollout.feedback.outputs import FeedbackEntryOutput, FeedbackReportOutput
from rollout.feedback.reads import feedback_entries, feedback_report
from rollout.selectors import flag_state_get

TAGS = ["feedback"]
PAGE_MAX = 200


# -- the SDK's report --------------------------------------------------------------------------------

_ENTRY_FIELDS: dict[str, serializers.Field[Any, Any, Any, Any]] = {
    "flag": serializers.CharField(max_length=100),
    "key": serializers.CharField(required=False, help_text="The subject's key (hashed on arrival, never stored); "
                                                           "or key_hash"),
    "key_hash": serializers.CharField(required=False, help_text="SHA-256 of the key, 64 lowercase hex digits"),
    "path": serializers.ChoiceField(choices=FeedbackPath.values, required=False,
                                    help_text="The path the subject was on; absent (with a key): decided now"),
    "path_source": serializers.ChoiceField(choices=["decided", "given"], required=False),
    "version": serializers.IntegerField(required=False, allow_null=True),
    "score": serializers.IntegerField(min_value=SCORE_MIN, max_value=SCORE_MAX, required=False, allow_null=True),
    "comment": serializers.CharField(required=False, allow_null=True, max_length=2000),
    "attributes": serializers.DictField(child=AttributeValueField(), required=False, allow_null=True),
    "truncated": serializers.BooleanField(required=False),
    "at": serializers.DateTimeField(required=False),
}


@described({"POST": {
    "operation_id": "sdk_feedback",
    "summary": "Report user feedback: a subject's score and/or comment on the path it was on",
    "description": f"A batch of at most {MAX_BATCH} entries (docs/feedback.md). A score is a whole number from "
                   f"{SCORE_MIN} to {SCORE_MAX}; a comment at most 2000 characters (scrubbed of e-mail addresses, "
                   "long numbers and tokens on arrival). `202` with the count stored; entries for flags the "
                   "key's environment does not have are skipped and named. A bad field answers `400` naming it "
                   "(`feedback[2].score`), a body over the limit `413`. Throttled like every SDK endpoint.",
    "request": inline_serializer(name="SdkFeedbackBatch", fields={
        "sdk": serializers.DictField(child=serializers.CharField(allow_null=True), required=False),
        "feedback": inline_serializer(name="SdkFeedbackEntry", fields=_ENTRY_FIELDS, many=True)}),
    "responses": {202: inline_serializer(name="SdkFeedbackAccepted", fields={
        "accepted": serializers.IntegerField(),
        "unknown_flags": serializers.ListField(child=serializers.CharField())}),
        413: ERROR_RESPONSES[400], **ERROR_RESPONSES},
    "tags": ["sdk"],
}})
def sdk_feedback(request: HttpRequest) -> HttpResponse:
    guarded = sdk_guard(request)
    if isinstance(guarded, HttpResponse):
        return guarded
    principal, version = guarded
    try:
        entries = parse_feedback(read_json(request, max_bytes=get_setting("FEEDBACK_MAX_BODY")))
    except BadRequest as exc:
        return bad_request(exc)

    def decide(flag: str, key: str | None) -> str:
        compiled = compiled_ruleset(principal.environment_id, environment=principal.environment, version=version)
        if compiled is None:
            return "legacy"
        return str(compiled.ruleset.decide(flag, key).path)

    stored = feedback_record(environment_id=principal.environment_id, entries=entries, decide=decide)
    return json_response({"accepted": stored.accepted, "unknown_flags": stored.unknown_flags}, status=202)


# -- management ---------------------------------------------------------------------------------------


class FeedbackOutput(serializers.Serializer[Any]):
    report = FeedbackReportOutput()
    entries = FeedbackEntryOutput(many=True)
    next_before = serializers.IntegerField(allow_null=True, help_text="pass as `before` for the next page")


def _digits(request: Request, name: str, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 12 or not 1 <= int(raw) <= high:
        raise ValidationFailed.field(name, f"must be a whole number from 1 to {high}")
    return int(raw)


class FeedbackView(RolloutView):
    @extend_schema(operation_id="rollout_feedback", summary="User feedback per path, and the newest entries",
                   parameters=[*STATE_PARAMS,
                               OpenApiParameter("path", OpenApiTypes.STR, enum=FeedbackPath.values),
                               OpenApiParameter("limit", OpenApiTypes.INT, description=f"1 to {PAGE_MAX} (50)"),
                               OpenApiParameter("before", OpenApiTypes.INT, description="an entry id: older ones")],
                   tags=TAGS, responses={200: FeedbackOutput, **errors(400, 404)},
                   description="The aggregate per path over the rule's window (counts, average score, score "
                               "distribution, latest comments, the rule's status) and the newest entries.")
    def get(self, request: Request, key: str, env: str) -> Response:
        path = request.query_params.get("path") or None
        if path is not None and path not in FeedbackPath.values:
            raise ValidationFailed.field("path", "must be 'legacy' or 'parallel'")
        limit = _digits(request, "limit", PAGE_MAX) or 50
        before = _digits(request, "before", 2**62)
        state = flag_state_get(key, env)
        entries: list[Feedback] = feedback_entries(state, path=path, before=before, limit=limit)
        return Response(FeedbackOutput({
            "report": feedback_report(state), "entries": entries,
            "next_before": entries[-1].pk if len(entries) == limit else None}).data)


class FeedbackRuleInput(ChangeInput):
    max_score_drop = serializers.DecimalField(max_digits=3, decimal_places=2, min_value=0,
                                              max_value=SCORE_MAX - SCORE_MIN, required=False, allow_null=True,
                                              help_text="score points parallel's average may fall below legacy's; "
                                                        "null removes the rule")
    min_responses = serializers.IntegerField(required=False, min_value=1, max_value=1_000_000,
                                             help_text="scored responses needed on each path to judge")
    window_days = serializers.IntegerField(required=False, min_value=1, max_value=365,
                                           help_text="feedback of the last so many days counts")


class FeedbackRuleView(RolloutView):
    capabilities = {"PUT": Capability.EDIT}

    @extend_schema(operation_id="rollout_feedback_rule_set", summary="Set the user-feedback readiness rule",
                   parameters=[*STATE_PARAMS, IF_MATCH], tags=TAGS, request=FeedbackRuleInput,
                   responses=SUBMIT_RESPONSES,
                   description="Readiness fails when parallel's average score is more than `max_score_drop` below "
                               "legacy's, once each path has `min_responses` scores in the last `window_days` days "
                               "(not yet before). An omitted field keeps its value; `max_score_drop: null` removes "
                               "the rule. Audited; waits for approval where the environment requires it.")
    def put(self, request: Request, key: str, env: str) -> Response:
        data = FeedbackRuleInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = {k: v for k, v in data.validated_data.items() if k in {"max_score_drop", "min_responses",
                                                                         "window_days"}}
        if fields.get("max_score_drop") is not None:
            fields["max_score_drop"] = str(fields["max_score_drop"])
        return self.submit(request, key, env, Action.FLAG_STATE_FEEDBACK_RULE_SET, fields, data.validated_data)

