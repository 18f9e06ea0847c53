"""The migration stage card's changes from the flag page (docs/migrations.md, "API and UI"): move forward,
roll back, mark divergences resolved.

Each view checks the role like the API's endpoint (editing for moves and resolutions, the emergency right for
a rollback), submits the same action through the action layer — applied, a change request for a second
person, or refused, exactly as the API answers — and renders the environment's state card with what
happened (or, without htmx, redirects to the flag page).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.views.decorators.http import require_POST

from actions.submit import submit_state
from audit.names import Action
from common.errors import Forbidden, NotFound, ServiceError
from common.permissions import Capability
from common.ui import INVALID, HtmxHttpRequest, actor, error_status, require
from rollout.datamigration.forms import MigrationReasonForm, MigrationStageForm
from rollout.datamigration.rules import Config, state_of
from rollout.models import FlagState, MigrationStage
from rollout.selectors import flag_state_get
from rollout.views import state_card_response


def _state(key: str, env: str) -> FlagState:
    try:
        return flag_state_get(key, env)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _submit(request: HtmxHttpRequest, state: FlagState, action: Action, params: dict[str, Any], *,
            version: int | None, reason: str, done: str, panel: str) -> HttpResponse:
    key, env = state.flag.key, state.environment.key
    try:
        outcome = submit_state(actor=actor(request), flag=key, environment=env, action=action, params=params,
                               version=version, reason=reason)
    except Forbidden as exc:  # the policy refuses this person: 403, as the API answers
        raise PermissionDenied(exc.message) from None
    except ServiceError as exc:
        return state_card_response(request, key, env, status=error_status(exc), error=exc.message,
                                   migration_panel=panel)
    cr = outcome.change_request
    if cr is not None:
        return state_card_response(request, key, env,
                                   message=f"Waiting for approval: change request #{cr.pk} ({cr.summary}).")
    return state_card_response(request, key, env, message=done)


def _done(params: dict[str, Any], env: str) -> str:
    if params.get("stage") == MigrationStage.COMPLETE:
        return f"The migration is complete in {env}: legacy is no longer written (irreversible)."
    if "stage" in params:
        return f"Everyone in {env} moved to '{params['stage']}'."
    if "splits" in params:
        shares = ", ".join(f"{s['percentage']:g}% at '{s['stage']}' or beyond" for s in params["splits"])
        return f"Shares ahead in {env}: {shares or 'none'}."
    if "cohorts" in params:
        return f"Cohorts placed in {env}: " + ", ".join(f"{c['cohort']} at '{c['stage']}'" for c in params["cohorts"])
    limit = params.get("max_divergences")
    return f"Divergence limit in {env}: {'none' if limit is None else limit}."


@require_POST
@login_required
def migration_advance(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    """``migration.stage_set``: one move forward (base, share, cohort) or the divergence limit."""
    require(request, Capability.EDIT)
    state = _state(key, env)
    form = MigrationStageForm(request.POST)
    panel = "complete" if request.POST.get("stage") == MigrationStage.COMPLETE else "advance"
    if not form.is_valid():
        return state_card_response(request, key, env, status=INVALID, error=form.first_error(),
                                   migration_panel=panel)
    params = form.params(Config.of(state_of(state)))
    return _submit(request, state, Action.MIGRATION_STAGE_SET, params, version=form.cleaned_data.get("version"),
                   reason=form.cleaned_data.get("reason") or "", done=_done(params, state.environment.name),
                   panel=panel)


@require_POST
@login_required
def migration_rollback(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    """``migration.rolled_back``: the furthest tier one stage back at once, with a reason (never waits)."""
    state = _state(key, env)
    require(request, Capability.EMERGENCY, environment=state.environment)
    form = MigrationReasonForm(request.POST)
    form.is_valid()
    return _submit(request, state, Action.MIGRATION_ROLLED_BACK, {}, version=form.cleaned_data.get("version"),
                   reason=form.cleaned_data.get("reason") or "", panel="rollback",
                   done=f"Rolled back one stage in {state.environment.name}.")


@require_POST
@login_required
def migration_resolve(request: HtmxHttpRequest, key: str, env: str) -> HttpResponse:
    """``migration.divergences_resolved``: the divergences ticked (or every unresolved one), with how."""
    require(request, Capability.EDIT)
    state = _state(key, env)
    form = MigrationReasonForm(request.POST)
    form.is_valid()
    ticked = request.POST.getlist("divergences")
    if form.cleaned_data.get("scope") == "all":
        divergences: Any = "all"
    elif ticked and all(t.isdigit() and len(t) < 19 for t in ticked):
        divergences = [int(t) for t in ticked]
    else:
        return state_card_response(request, key, env, status=INVALID, migration_panel="divergences",
                                   error="Tick the divergences that were reconciled, or choose every unresolved one.")
    count = "every unresolved divergence" if divergences == "all" else f"{len(divergences)} divergence(s)"
    return _submit(request, state, Action.MIGRATION_DIVERGENCES_RESOLVED, {"divergences": divergences},
                   version=None, reason=form.cleaned_data.get("reason") or "", panel="divergences",
                   done=f"Marked {count} resolved in {state.environment.name}.")
