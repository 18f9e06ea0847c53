"""Feedback per path, and the readiness rule's judgement (readiness report, API, UI).

``feedback_report`` aggregates one flag state's feedback over a window (the rule's ``window_days``, else
``DEFAULT_WINDOW_DAYS``): per path the responses, the scored ones, the average and the distribution of
scores, the comments; the latest comments of both paths (as stored: redacted by the caller and scrubbed on
arrival); and the rule's status:

* ``unset`` — no rule: feedback is shown, never judged;
* ``insufficient`` — a path has fewer than ``min_responses`` scores in the window;
* ``fail`` — parallel's average is more than ``max_score_drop`` below legacy's;
* ``pass`` — otherwise.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal, TypedDict

from django.db.models import Count, Q

from common import clock
from rollout.feedback.models import Feedback, FeedbackRule
from rollout.models import FlagState

DEFAULT_WINDOW_DAYS = 14
LATEST_COMMENTS = 5

RuleStatus = Literal["unset", "insufficient", "fail", "pass"]


class PathFeedback(TypedDict):
    responses: int
    scores: int
    average_score: float | None
    distribution: dict[str, int]
    comments: int


class FeedbackComment(TypedDict):
    id: int
    at: str
    path: str
    score: int | None
    comment: str
    truncated: bool


class FeedbackRuleConfig(TypedDict):
    max_score_drop: float
    min_responses: int
    window_days: int


class FeedbackRuleStatus(TypedDict):
    config: FeedbackRuleConfig | None
    status: RuleStatus
    message: str


class FeedbackReport(TypedDict):
    since: str
    window_days: int
    legacy: PathFeedback
    parallel: PathFeedback
    #: legacy's average minus parallel's (positive: parallel scores lower); None without scores on both
    score_drop: float | None
    latest_comments: list[FeedbackComment]
    rule: FeedbackRuleStatus


def rule_config(rule: FeedbackRule | None) -> FeedbackRuleConfig | None:
    if rule is None:
        return None
    return {"max_score_drop": float(rule.max_score_drop), "min_responses": rule.min_responses,
            "window_days": rule.window_days}


def _paths(state: FlagState, since: datetime) -> dict[str, PathFeedback]:
    out: dict[str, PathFeedback] = {
        path: {"responses": 0, "scores": 0, "average_score": None, "distribution": {}, "comments": 0}
        for path in ("legacy", "parallel")}
    rows = (Feedback.objects.filter(flag_state=state, received_at__gte=since).values("path", "score")
            .annotate(n=Count("pk"), comments=Count("pk", filter=~Q(comment=""))).order_by())
    totals: dict[str, float] = {}
    for row in rows:
        figures = out[row["path"]]
        figures["responses"] += row["n"]
        figures["comments"] += row["comments"]
        if row["score"] is not None:
            figures["scores"] += row["n"]
            figures["distribution"][str(row["score"])] = row["n"]
            totals[row["path"]] = totals.get(row["path"], 0.0) + row["score"] * row["n"]
    for path, figures in out.items():
        if figures["scores"]:
            figures["average_score"] = round(totals[path] / figures["scores"], 2)
        figures["distribution"] = {str(s): figures["distribution"].get(str(s), 0) for s in range(1, 6)}
    return out


def judge(rule: FeedbackRule | None, legacy: PathFeedback, parallel: PathFeedback) -> FeedbackRuleStatus:
    """The rule's status over the two paths' figures."""
    config = rule_config(rule)
    if rule is None or config is None:
        return {"config": None, "status": "unset", "message": "no feedback rule: feedback is shown, not judged"}
    need = rule.min_responses
    if legacy["scores"] < need or parallel["scores"] < need:
        return {"config": config, "status": "insufficient",
                "message": f"not enough user feedback yet to judge: {legacy['scores']} scored responses on legacy "
                           f"and {parallel['scores']} on parallel in {rule.window_days} days ({need} needed on each)"}
    assert legacy["average_score"] is not None and parallel["average_score"] is not None  # both have scores
    drop = round(legacy["average_score"] - parallel["average_score"], 2)
    allowed = float(rule.max_score_drop)
    if drop > allowed:
        return {"config": config, "status": "fail",
                "message": f"user feedback: parallel's average score {parallel['average_score']:.2f} is {drop:.2f} "
                           f"below legacy's {legacy['average_score']:.2f} (at most {allowed:.2f} allowed; "
                           f"{parallel['scores']} and {legacy['scores']} responses)"}
    return {"config": config, "status": "pass",
            "message": f"user feedback: parallel's average score {parallel['average_score']:.2f}, legacy's "
                       f"{legacy['average_score']:.2f} (at most {allowed:.2f} below allowed)"}


def feedback_report(state: FlagState, *, now: datetime | None = None) -> FeedbackReport:
    now = now or clock.now()
    rule = FeedbackRule.objects.filter(flag_state=state).first()
    days = rule.window_days if rule is not None else DEFAULT_WINDOW_DAYS
    since = now - timedelta(days=days)
    paths = _paths(state, since)
    latest = (Feedback.objects.filter(flag_state=state, received_at__gte=since).exclude(comment="")
              .order_by("-received_at", "-pk").only("pk", "at", "path", "score", "comment", "truncated")
              [:LATEST_COMMENTS])
    legacy_avg, parallel_avg = paths["legacy"]["average_score"], paths["parallel"]["average_score"]
    return {
        "since": since.isoformat(),
        "window_days": days,
        "legacy": paths["legacy"],
        "parallel": paths["parallel"],
        "score_drop": None if legacy_avg is None or parallel_avg is None else round(legacy_avg - parallel_avg, 2),
        "latest_comments": [{"id": f.pk, "at": f.at.isoformat(), "path": f.path, "score": f.score,
                             "comment": f.comment, "truncated": f.truncated} for f in latest],
        "rule": judge(rule, paths["legacy"], paths["parallel"]),
    }


def feedback_entries(state: FlagState, *, path: str | None = None, before: int | None = None,
                     limit: int = 50) -> list[Feedback]:
    """The newest entries first (``before``: an entry id, for the next page)."""
    rows = Feedback.objects.filter(flag_state=state)
    if path:
        rows = rows.filter(path=path)
    if before is not None:
        rows = rows.filter(pk__lt=before)
    return list(rows.order_by("-pk")[:limit])


def feedback_verdict(verdict: str, reasons: list[str], rule: FeedbackRuleStatus) -> tuple[str, list[str]]:
    """The readiness verdict with the rule's say: a failed rule makes it ``failing``, too few responses
    ``not_yet`` (a ready rollout's "ready" reason gives way); no rule, or a passed one, changes nothing."""
    if rule["status"] == "fail":
        return "failing", [*(reasons if verdict == "failing" else []), rule["message"]]
    if rule["status"] == "insufficient" and verdict != "failing":
        return "not_yet", [*(reasons if verdict == "not_yet" else []), rule["message"]]
    return verdict, reasons


def feedback_rule_status(state: FlagState, *, now: datetime | None = None) -> FeedbackRuleStatus | None:
    """The rule's status alone (None without a rule: one query), for advances and automatic checks."""
    rule = FeedbackRule.objects.filter(flag_state=state).first()
    if rule is None:
        return None
    paths = _paths(state, (now or clock.now()) - timedelta(days=rule.window_days))
    return judge(rule, paths["legacy"], paths["parallel"])


def feedback_holds(state: FlagState, *, now: datetime | None = None) -> str | None:
    """Why the feedback rule holds an automatic advance back (it failed or lacks responses), or None."""
    rule = feedback_rule_status(state, now=now)
    return rule["message"] if rule is not None and rule["status"] in ("fail", "insufficient") else None
