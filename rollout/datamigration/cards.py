"""What the flag page's migration stage card shows (docs/migrations.md, "API and UI"): where each tier stands,
the next allowed step and what the policy makes of it for the person looking, per-origin figures and charts,
the divergences (and, for a rollback, those written since parallel became authoritative).

Reads only; the card's forms post to ``rollout.datamigration.views``, which submit through the action layer.
"""

from __future__ import annotations

from typing import Any, TypedDict

from actions.submit import preview
from audit.names import Action
from cohorts.models import Cohort
from common.actors import Actor
from common.permissions import Capability, can
from rollout.datamigration.reports import (
    DEFAULT_WINDOW,
    MigrationStatus,
    divergence_list,
    migration_charts,
    migration_status,
    origin_series,
)
from rollout.datamigration.rules import MEANING, PARALLEL_AUTHORITATIVE, STAGES, Config, position, state_of
from rollout.datamigration.services import divergence_summary, rollback_target
from rollout.models import Divergence, FlagKind, FlagState, MigrationStage
from rollout.policy import Ruling, Verdict

#: unresolved divergences listed on the card (newest first); the export has every one
LISTED = 50
#: divergences at risk listed in the rollback panel
AT_RISK_LISTED = 20


class RollbackPreview(TypedDict):
    description: str
    from_authoritative: bool  # leaving live/rampdown: what legacy missed is at risk
    since: str | None
    summary: dict[str, Any] | None
    rows: list[Divergence]
    break_glass: bool


def _preview(actor: Actor, state: FlagState, action: str, params: dict[str, Any]) -> Ruling:
    """The action layer's own ruling for this person (the same answer the API gives), without a lock."""
    return preview(actor=actor, action=action, params=params, obj=state)


def describe_rollback(old: Config) -> str:
    """What a rollback does to ``old``, in one sentence."""
    new = rollback_target(old)
    furthest = old.furthest
    if furthest == old.stage:
        return f"Everyone at '{old.stage}' goes back to '{new.stage}' at once."
    back = STAGES[position(furthest) - 1]
    parts = []
    if any(s["stage"] == furthest for s in old.splits):
        parts.append(f"the share of subjects at '{furthest}' goes back to '{back}'")
    moved = [c["cohort"] for c in old.cohorts if c["stage"] == furthest]
    if moved:
        parts.append(f"cohort{'s' if len(moved) > 1 else ''} {', '.join(moved)} go{'' if len(moved) > 1 else 'es'} "
                     f"back to '{back}'")
    return (" and ".join(parts) or f"subjects at '{furthest}' go back to '{back}'").capitalize() + " at once."


def rollback_preview(actor: Actor, state: FlagState, config: Config) -> RollbackPreview:
    m = state_of(state)
    since = m.authoritative_since if m is not None else None
    from_authoritative = config.furthest in PARALLEL_AUTHORITATIVE
    rows: list[Divergence] = []
    summary = None
    if from_authoritative:
        summary = divergence_summary(state, since=since)
        at_risk = Divergence.objects.filter(flag_state=state).order_by("-last_seen", "id")
        rows = list((at_risk.filter(last_seen__gte=since) if since is not None else at_risk)[:AT_RISK_LISTED])
    ruling = _preview(actor, state, Action.MIGRATION_ROLLED_BACK, {})
    return {"description": describe_rollback(config), "from_authoritative": from_authoritative,
            "since": since.isoformat() if since is not None else None, "summary": summary, "rows": rows,
            "break_glass": bool(ruling.break_glass)}


def _stage_choices(config: Config, *, after_base: bool) -> list[tuple[str, str]]:
    """Stages a split (after the base) or a cohort may be put at now: at most one beyond where anyone
    stands, never ``complete`` (only the base completes)."""
    limit = min(position(config.furthest) + 1, position(MigrationStage.RAMPDOWN))
    low = position(config.stage) + 1 if after_base else 0
    return [(s, f"{s} — {MEANING[s]}") for s in STAGES[low:limit + 1]]


def migration_card(user: Any, state: FlagState, *, panel: str = "",
                   window_seconds: int = DEFAULT_WINDOW) -> dict[str, Any]:
    """The card's context (``{"migration": None}`` for a release flag)."""
    if state.flag.kind != FlagKind.MIGRATION:
        return {"migration": None}
    status: MigrationStatus = migration_status(state, window_seconds=window_seconds)
    config = Config.of(state_of(state))
    env = state.environment
    actor = Actor.for_user(user)
    may_edit = can(user, Capability.EDIT)
    may_rollback = can(user, Capability.EMERGENCY, environment=env)
    nxt = status["next_stage"]
    context: dict[str, Any] = {
        "migration": status, "state": state, "env": env, "panel": panel, "may_edit": may_edit,
        "may_rollback": may_rollback,
        "next_meaning": MEANING[nxt] if nxt else "",
        "max_divergences": getattr(state_of(state), "max_divergences", None),
        "charts": migration_charts(origin_series(state, window_seconds=window_seconds), environment=env.key),
        "unresolved": list(divergence_list(state, resolved=False)[:LISTED]),
    }
    if may_edit and nxt:
        advance = _preview(actor, state, Action.MIGRATION_STAGE_SET, {"stage": nxt})
        # a share moved into live: the policy's word on parallel becoming authoritative for more subjects
        into_live = _preview(actor, state, Action.MIGRATION_STAGE_SET,
                             {"splits": [{"stage": MigrationStage.LIVE, "percentage": 100.0}]}
                             if position(config.stage) < position(MigrationStage.LIVE) else {"stage": nxt})
        resolve = _preview(actor, state, Action.MIGRATION_DIVERGENCES_RESOLVED, {"divergences": "all"})
        context.update({
            "advance_requests": advance.verdict is Verdict.REQUEST,
            "advance_refused": advance.message if advance.verdict is Verdict.REFUSE else "",
            "live_requests": into_live.verdict is Verdict.REQUEST,
            "resolve_requests": resolve.verdict is Verdict.REQUEST,
            "split_stages": _stage_choices(config, after_base=True),
            "cohort_stages": _stage_choices(config, after_base=False),
            "cohorts": list(Cohort.objects.order_by("key").values_list("key", "name")),
        })
    if may_rollback and config.furthest != MigrationStage.OFF and config.stage != MigrationStage.COMPLETE:
        context["rollback"] = rollback_preview(actor, state, config)
    return context
