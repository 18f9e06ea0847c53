"""What a person can be told about, and how an audit event becomes one of those (pure: no database)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from audit.names import Action


class Kind(StrEnum):
    CHANGE_REQUEST_WAITING = "change_request.waiting"  # for me to decide
    CHANGE_REQUEST_APPROVED = "change_request.approved"  # mine
    CHANGE_REQUEST_REJECTED = "change_request.rejected"  # mine
    CHANGE_REQUEST_STALE = "change_request.stale"  # mine
    KILLED = "kill_switch.pulled"
    ROLLED_BACK = "rollout.rolled_back"  # by a person or a guardrail
    GUARDRAIL_BREACHED = "guardrail.breached"
    REVIEW_WAITING = "break_glass.review_waiting"  # for me (an approver other than who did it)
    DIVERGENCES = "migration.divergences"  # new unresolved divergences of a data migration
    STALE_FLAGS = "flags.stale"  # the stale-flag report found flags whose code paths should go


LABELS: dict[Kind, str] = {
    Kind.CHANGE_REQUEST_WAITING: "A change request waits for my approval",
    Kind.CHANGE_REQUEST_APPROVED: "My change request was approved",
    Kind.CHANGE_REQUEST_REJECTED: "My change request was rejected",
    Kind.CHANGE_REQUEST_STALE: "My change request went stale",
    Kind.KILLED: "A kill switch was pulled",
    Kind.ROLLED_BACK: "A rollout was rolled back (by a person or a guardrail)",
    Kind.GUARDRAIL_BREACHED: "A guardrail was breached",
    Kind.REVIEW_WAITING: "A break-glass action waits for my review",
    Kind.DIVERGENCES: "A data migration has new divergences (one notice per burst)",
    Kind.STALE_FLAGS: "Flags became stale (their code paths should be deleted)",
}


class Audience(StrEnum):
    EVERYONE = "everyone"  # every subscriber who may read
    APPROVERS = "approvers"  # subscribers who may approve, other than the actor
    REQUESTER = "requester"  # the person who asked for the change


@dataclass(frozen=True)
class Notice:
    """One thing to tell: its kind, who it is for, and the words."""

    kind: Kind
    audience: Audience
    subject: str
    text: str
    change_request: int | None = None  # for REQUESTER: whose


#: Audit actions worth a look after commit (the rest never reach the notification task).
WATCHED = frozenset({
    Action.CHANGE_REQUEST_CREATED, Action.CHANGE_REQUEST_APPROVED, Action.CHANGE_REQUEST_REJECTED,
    Action.CHANGE_REQUEST_STALE, Action.FLAG_STATE_KILLED, Action.FLAG_STATE_ROLLED_BACK, Action.FLAG_STATE_PAUSED,
    Action.MIGRATION_DIVERGENCES_DETECTED, Action.FLAGS_STALE_DETECTED, Action.USER_INVITED,
})


def watched(action: str, after: Any) -> bool:
    """Whether an event may notify anyone: its action is watched, or it carries out an approval."""
    return action in WATCHED or (isinstance(after, Mapping) and "approval" in after)


def notices(*, action: str, actor: str, object_key: str, environment: str, before: Any, after: Any,
            reason: str) -> list[Notice]:
    """The notices one audit event gives (none for most)."""
    after = after if isinstance(after, Mapping) else {}
    where = f"{object_key}" + (f" in {environment}" if environment and "@" not in object_key else "")
    why = f" Reason: {reason}" if reason else ""
    out: list[Notice] = []
    if action == Action.CHANGE_REQUEST_CREATED:
        summary = after.get("summary", "")
        out.append(Notice(Kind.CHANGE_REQUEST_WAITING, Audience.APPROVERS,
                          f"Change request #{object_key} waits for approval",
                          f"{actor} asks: {summary}.{why}", int(object_key)))
    elif action in (Action.CHANGE_REQUEST_REJECTED, Action.CHANGE_REQUEST_STALE, Action.CHANGE_REQUEST_APPROVED):
        kind = {Action.CHANGE_REQUEST_REJECTED: Kind.CHANGE_REQUEST_REJECTED,
                Action.CHANGE_REQUEST_STALE: Kind.CHANGE_REQUEST_STALE,
                Action.CHANGE_REQUEST_APPROVED: Kind.CHANGE_REQUEST_APPROVED}[Action(action)]
        word = kind.value.split(".")[1]
        out.append(Notice(kind, Audience.REQUESTER, f"Change request #{object_key} {word}",
                          f"Change request #{object_key} ({after.get('summary', '')}) is {word} by {actor}.{why}",
                          int(object_key)))
    approval = after.get("approval")
    if isinstance(approval, Mapping) and isinstance(approval.get("change_request"), int) and approval[
            "change_request"] > 0:
        pk = approval["change_request"]
        out.append(Notice(Kind.CHANGE_REQUEST_APPROVED, Audience.REQUESTER, f"Change request #{pk} approved",
                          f"Change request #{pk} was approved by {approval.get('approved_by')} and applied: "
                          f"{action} of {where}.", pk))
    guardrail = after.get("guardrail")
    if isinstance(guardrail, Mapping) and action in (Action.FLAG_STATE_KILLED, Action.FLAG_STATE_ROLLED_BACK,
                                                     Action.FLAG_STATE_PAUSED):
        breaches = "; ".join(str(b) for b in guardrail.get("breaches") or [])
        out.append(Notice(Kind.GUARDRAIL_BREACHED, Audience.EVERYONE, f"Guardrail breached: {where}",
                          f"The guardrail of {where} was breached ({breaches}); it {action.split('.')[1]} the "
                          "rollout."))
    if action == Action.FLAG_STATE_KILLED:
        out.append(Notice(Kind.KILLED, Audience.EVERYONE, f"Kill switch pulled: {where}",
                          f"{actor} pulled the kill switch of {where}: every subject takes legacy.{why}"))
    if action == Action.FLAG_STATE_ROLLED_BACK:
        out.append(Notice(Kind.ROLLED_BACK, Audience.EVERYONE, f"Rolled back: {where}",
                          f"{actor} rolled {where} back to stage {after.get('stage')}.{why}"))
    if action == Action.MIGRATION_DIVERGENCES_DETECTED:
        origins = ", ".join(f"{n} {what}" for what, n in (after.get("by_origin") or {}).items())
        out.append(Notice(Kind.DIVERGENCES, Audience.EVERYONE, f"New divergences: {where}",
                          f"{after.get('new')} new unresolved divergence(s) in the data migration of {where}"
                          f" ({origins}); {after.get('open')} unresolved in all. Reconcile them and resolve them "
                          "on the flag's migration page."))
    if action == Action.FLAGS_STALE_DETECTED:
        new = [row for row in after.get("new") or [] if isinstance(row, Mapping)]
        lines = "\n".join(f"- {row.get('key')} ({row.get('workload')}): {row.get('why')}" for row in new)
        out.append(Notice(Kind.STALE_FLAGS, Audience.EVERYONE, f"{len(new)} flag(s) became stale",
                          f"Unchanged, retired or at 100% for {after.get('days')} days — delete their code paths, "
                          f"then archive them on the stale-flag report:\n{lines}"))
    if after.get("break_glass"):
        out.append(Notice(Kind.REVIEW_WAITING, Audience.APPROVERS, f"Break-glass review waiting: {where}",
                          f"{actor} made an emergency change ({action}) of {where} where approval applies; an "
                          f"approver other than them acknowledges it on the reviews page.{why}"))
    return out
