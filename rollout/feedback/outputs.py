"""What the feedback reads look like on the API (the readiness report embeds ``FeedbackReportOutput``)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from common.schema import AttributeValueField


class PathFeedbackOutput(serializers.Serializer[Any]):
    responses = serializers.IntegerField()
    scores = serializers.IntegerField(help_text="responses with a score")
    average_score = serializers.FloatField(allow_null=True)
    distribution = serializers.DictField(child=serializers.IntegerField(), help_text="count per score, '1'..'5'")
    comments = serializers.IntegerField()


class FeedbackCommentOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    at = serializers.CharField()
    path = serializers.CharField()
    score = serializers.IntegerField(allow_null=True)
    comment = serializers.CharField()
    truncated = serializers.BooleanField()


class FeedbackRuleConfigOutput(serializers.Serializer[Any]):
    max_score_drop = serializers.FloatField()
    min_responses = serializers.IntegerField()
    window_days = serializers.IntegerField()


class FeedbackRuleStatusOutput(serializers.Serializer[Any]):
    config = FeedbackRuleConfigOutput(allow_null=True)
    status = serializers.ChoiceField(choices=["unset", "insufficient", "fail", "pass"])
    message = serializers.CharField()


class FeedbackReportOutput(serializers.Serializer[Any]):
    since = serializers.CharField()
    window_days = serializers.IntegerField()
    legacy = PathFeedbackOutput()
    parallel = PathFeedbackOutput()
    score_drop = serializers.FloatField(allow_null=True, help_text="legacy's average minus parallel's")
    latest_comments = FeedbackCommentOutput(many=True)
    rule = FeedbackRuleStatusOutput()


class FeedbackEntryOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="pk")
    path = serializers.CharField()
    path_source = serializers.CharField()
    version = serializers.IntegerField(allow_null=True)
    score = serializers.IntegerField(allow_null=True)
    comment = serializers.CharField()
    attributes = serializers.DictField(child=AttributeValueField(), help_text="as sent, redacted and scrubbed")
    truncated = serializers.BooleanField()
    at = serializers.DateTimeField()
    received_at = serializers.DateTimeField()
