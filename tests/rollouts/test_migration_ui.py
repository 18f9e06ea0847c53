"""The migration stage card's controls on the flag page (issue 15): moving forward (base, share, cohort, limit),
rolling back with a reason and the divergences at risk, marking divergences resolved — each through the action
layer with the API's policy (viewer refused, approval → change request, ``complete`` irreversible), per-origin
charts, and the readiness report's per-origin figures."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from turnout.wire import LATENCY_BUCKETS_MS

from actions.submit import submit_state
from common import clock
from common.actors import Actor
from rollout.models import ChangeRequest, Divergence, FlagState, MigrationMinute
from rollout.services.flags import flag_create
from rollout.services.workloads import workload_create
from tests.ui_support import HTMX, text

pytestmark = pytest.mark.django_db
FLAG = "accounts-store"
ROLES = ("viewer", "editor", "admin", "compliance")


@pytest.fixture
def world(envs: dict[str, Any], actor: Actor) -> dict[str, Client]:
    """accounts-store at ``shadow`` in staging and production, one unresolved divergence in each, the pilot
    cohort, and a signed-in client per role."""
    from django.contrib.auth import get_user_model

    from cohorts.services import cohort_create
    from rollout.access.users import user_create

    workload_create(actor=actor, key="accounts", name="Accounts", risk="medium", reversibility="dual_write")
    flag_create(actor=actor, key=FLAG, workload="accounts", bucket_by="tenant_id", kind="migration")
    cohort_create(actor=actor, key="pilot-eu", name="Pilot EU")
    for env in ("staging", "production"):
        walk(actor, "dual_write", "shadow", env=env)
        divergence(env, "row-1")
    clients = {}
    for role in ROLES:
        user_create(actor=actor, username=role, password=None, roles=[role])
        clients[role] = Client()
        clients[role].force_login(get_user_model().objects.get(username=role))
    return clients


def walk(actor: Actor, *stages: str, env: str = "staging") -> None:
    for stage in stages:
        submit_state(actor=actor, flag=FLAG, environment=env, action="migration.stage_set", params={"stage": stage})


def divergence(env: str, identifier: str, *, at: Any = None, origin: str = "parallel") -> Divergence:
    at = at or clock.now()
    return Divergence.objects.create(flag_state=state(env), key_hash=identifier.ljust(64, "0")[:64], origin=origin,
                                     identifier=identifier, stage="shadow", count=2, first_seen=at, last_seen=at,
                                     last_error="OSError: parallel store down")


def state(env: str = "staging") -> FlagState:
    return FlagState.objects.select_related("migration").get(flag__key=FLAG, environment__key=env)


def card(client: Client, env: str = "staging") -> str:
    """The environment's state card with its migration card, as the flag page polls it."""
    return text(client.get(f"/flags/{FLAG}/{env}/card/", **HTMX))


def post(client: Client, env: str, what: str, data: dict[str, Any]) -> Any:
    return client.post(f"/flags/{FLAG}/{env}/migration/{what}/", data, **HTMX)


# -- the policy: every role × every control -----------------------------------------------------------------

APPLIED, REQUEST, REFUSED = "applied", "request", 403


def editors(outcome: Any) -> dict[str, Any]:
    """Approvers change things as editors do (deciding others' requests is tests/rollouts/test_change_requests.py's
    subject), so the matrix runs the four roles that differ here."""
    return {"viewer": REFUSED, "editor": outcome, "admin": APPLIED, "compliance": REFUSED}


# (control, environment, form data, {role: outcome}): the API's policy (tests/api/test_role_matrix.py, M_S/M_P)
MATRIX = [
    # dual writes and shadow reads never wait; entering live waits for a second person where approval applies
    ("advance", "staging", {"move": "base", "stage": "live"}, editors(APPLIED)),
    ("advance", "production", {"move": "base", "stage": "live"}, editors(REQUEST)),
    ("advance", "production", {"move": "split", "stage": "live", "percentage": "10"}, editors(REQUEST)),
    ("advance", "production", {"move": "limit", "max_divergences": "25"}, editors(APPLIED)),
    # a rollback never waits (break-glass where approval applies)
    ("rollback", "staging", {"reason": "parallel store corrupt"}, editors(APPLIED)),
    ("rollback", "production", {"reason": "parallel store corrupt"}, editors(APPLIED)),
    # resolving is gated by the environment's approval only
    ("resolve", "staging", {"scope": "all", "reason": "backfilled"}, editors(APPLIED)),
    ("resolve", "production", {"scope": "all", "reason": "backfilled"}, editors(REQUEST)),
]
ACTIONS = {"advance": "migration.stage_set", "rollback": "migration.rolled_back",
           "resolve": "migration.divergences_resolved"}


def test_migration_card__role_matrix__same_policy_as_the_api(world: dict[str, Client], subtests: Any) -> None:
    """Every control × environment × role from the same starting point: each attempt runs in a savepoint that
    is rolled back afterwards (so the world is built once)."""
    from audit.models import AuditEvent

    for control, env, data, outcomes in MATRIX:
        for role, expected in outcomes.items():
            with subtests.test(control=control, env=env, move=data.get("move", ""), role=role):
                savepoint = transaction.savepoint()
                try:
                    response = post(world[role], env, control, {**data, "version": state(env).version})
                    applied = AuditEvent.objects.filter(action=ACTIONS[control], actor=role).exists()
                    requested = ChangeRequest.objects.filter(requested_by__username=role).first()
                    if expected == REFUSED:
                        assert (response.status_code, applied, requested) == (403, False, None)
                    else:
                        assert response.status_code == 200, text(response)[:600]
                        assert (applied, requested is not None) == (expected == APPLIED, expected == REQUEST)
                        if requested is not None:
                            assert f"Waiting for approval: change request #{requested.pk}" in text(response)
                finally:
                    transaction.savepoint_rollback(savepoint)


def test_migration_card__every_route_in_the_role_matrix() -> None:
    from config import ui_urls

    routes = {p.name for p in ui_urls.urlpatterns
              if getattr(p.callback, "__module__", "") == "rollout.datamigration.views"}
    assert routes == {f"migration-card-{control}" for control, _, _, _ in MATRIX}


def test_migration_card__viewer__figures_and_list_but_no_control(world: dict[str, Client]) -> None:
    page = card(world["viewer"])
    assert "Unresolved divergences (1)" in page and "<code>row-1</code>" in page
    for control in ("advance", "rollback", "resolve"):
        assert f"/migration/{control}/" not in page
    assert 'name="divergences"' not in page  # no ticking either


# -- moving forward ---------------------------------------------------------------------------------------


def test_migration_card__share_then_cohort_then_base__ruleset_follows_and_covered_shares_drop(
        world: dict[str, Client], audit_events: Any) -> None:
    from rollout.delivery.ruleset import build_document
    from rollout.models import Environment

    editor = world["editor"]
    page = text(post(editor, "staging", "advance", {"move": "split", "stage": "live", "percentage": "20",
                                                    "reason": "first tenants", "version": state().version}))
    assert "Shares ahead in Staging: 20% at &#x27;live&#x27; or beyond." in page
    assert "20% of subjects</dt><dd>at live or beyond" in page
    post(editor, "staging", "advance", {"move": "cohort", "cohort": "pilot-eu", "stage": "live",
                                        "version": state().version})
    # the base reaches live: the live share is covered (everyone is there), so it goes; the cohort stays
    response = post(editor, "staging", "advance", {"move": "base", "stage": "live", "version": state().version})
    assert response.status_code == 200
    rule = build_document(Environment.objects.get(key="staging"))["flags"][FLAG]["migration"]
    assert rule == {"stage": "live", "splits": [], "cohorts": [{"cohort": "pilot-eu", "stage": "live"}]}
    moves = [e for e in audit_events() if e.action == "migration.stage_set"]
    assert [m.after["migration"]["stage"] for m in moves] == ["shadow", "shadow", "live"]
    assert [m.reason for m in moves] == ["first tenants", "", ""]


def test_migration_card__skipping_a_stage__422_naming_it_and_the_panel_reopened(world: dict[str, Client]) -> None:
    before = state().version
    response = post(world["editor"], "staging", "advance", {"move": "base", "stage": "rampdown", "version": before})
    assert response.status_code == 422
    page = text(response)
    assert "the base stage can move one stage at a time" in page
    assert 'class="migration-advance" open' in page
    assert state().version == before


def test_migration_card__stale_version__409_and_nothing_changes(world: dict[str, Client]) -> None:
    response = post(world["editor"], "staging", "advance", {"move": "base", "stage": "live", "version": 1})
    assert response.status_code == 409 and state().migration.stage == "shadow"


def test_migration_card__complete__blocked_then_says_irreversible_and_needs_the_confirmation(
        world: dict[str, Client], actor: Actor) -> None:
    submit_state(actor=actor, flag=FLAG, environment="staging", action="migration.stage_set",
                 params={"cohorts": [{"cohort": "pilot-eu", "stage": "dual_write"}]})  # held back
    walk(actor, "live", "rampdown")
    editor = world["editor"]
    blocked = card(editor)
    assert "Not yet: cohort(s) pilot-eu are not at &#x27;rampdown&#x27;; 1 unresolved divergence(s)." in blocked
    assert 'name="confirm_irreversible"' not in blocked
    # the held-back cohort catches up from the same card
    caught_up = post(editor, "staging", "advance", {"move": "cohort", "cohort": "pilot-eu", "stage": "rampdown",
                                                    "version": state().version})
    assert "Cohorts placed in Staging: pilot-eu at &#x27;rampdown&#x27;" in text(caught_up)
    Divergence.objects.all().delete()
    page = card(editor)
    assert "Complete the migration (irreversible)" in page and "no rollback and no later stage change" in page
    refused = post(editor, "staging", "advance", {"move": "base", "stage": "complete", "version": state().version})
    assert refused.status_code == 422 and "cannot be undone" in text(refused)
    assert 'class="migration-complete" open' in text(refused)
    done = post(editor, "staging", "advance", {"move": "base", "stage": "complete", "confirm_irreversible": "on",
                                               "reason": "legacy schema dropped next week",
                                               "version": state().version})
    assert "The migration is complete in Staging: legacy is no longer written (irreversible)." in text(done)
    assert state().migration.stage == "complete"
    assert "/migration/advance/" not in text(done) and "/migration/rollback/" not in text(done)  # final
    late = post(editor, "staging", "rollback", {"reason": "oops", "version": state().version})
    assert late.status_code == 409 and "irreversible" in text(late)


# -- rolling back ----------------------------------------------------------------------------------------


def test_migration_card__rollback_from_live__shows_divergences_since_authoritative_and_records_them(
        world: dict[str, Client], actor: Actor, audit_events: Any) -> None:
    divergence("staging", "row-old", at=clock.now() - timedelta(hours=2))
    walk(actor, "live")
    divergence("staging", "acct-77", origin="legacy")
    editor = world["editor"]
    page = card(editor)
    panel = page[page.index('class="migration-rollback"'):page.index("Roll back now")]
    assert "Everyone at &#x27;live&#x27; goes back to &#x27;shadow&#x27; at once." in panel
    assert "<code>acct-77</code>" in panel and "row-old" not in panel
    assert "since parallel became authoritative at" in panel
    # no reason: refused with the service's words, the panel open again, nothing moved
    missing = post(editor, "staging", "rollback", {"reason": " ", "version": state().version})
    assert missing.status_code == 422 and "say why the migration is rolled back" in text(missing)
    assert 'class="migration-rollback" open' in text(missing) and state().migration.stage == "live"
    done = post(editor, "staging", "rollback", {"reason": "legacy reads drift", "version": state().version})
    assert "Rolled back one stage in Staging." in text(done) and state().migration.stage == "shadow"
    [event] = [e for e in audit_events() if e.action == "migration.rolled_back"]
    assert event.reason == "legacy reads drift" and event.actor == "editor"
    at_risk = event.after["divergences_since_authoritative"]
    assert (at_risk["records"], at_risk["unresolved"]) == (1, 1)  # acct-77: written after parallel took over


# -- resolving ----------------------------------------------------------------------------------------------


def test_migration_card__resolve_ticked__only_those_with_the_reason(world: dict[str, Client],
                                                                    audit_events: Any) -> None:
    other = divergence("staging", "row-2")
    editor = world["editor"]
    assert f'name="divergences" value="{other.pk}"' in card(editor)
    nothing = post(editor, "staging", "resolve", {"scope": "selected", "reason": "backfilled"})
    assert nothing.status_code == 422 and "Tick the divergences" in text(nothing)
    # without JavaScript the form posts and the flag page comes back with the outcome
    plain = editor.post(f"/flags/{FLAG}/staging/migration/resolve/", {"scope": "selected", "reason": "x"})
    assert (plain.status_code, plain["Location"]) == (302, f"/flags/{FLAG}/?env=staging#state-staging")
    no_reason = post(editor, "staging", "resolve", {"scope": "selected", "divergences": [other.pk], "reason": ""})
    assert no_reason.status_code == 422 and "say how the divergences were reconciled" in text(no_reason)
    done = post(editor, "staging", "resolve", {"scope": "selected", "divergences": [other.pk],
                                               "reason": "row-2 copied by the backfill job"})
    assert "Marked 1 divergence(s) resolved in Staging." in text(done)
    other.refresh_from_db()
    assert (other.resolved_by, other.resolution) == ("editor", "row-2 copied by the backfill job")
    assert Divergence.objects.filter(flag_state=state(), resolved_at__isnull=True).count() == 1
    [event] = [e for e in audit_events() if e.action == "migration.divergences_resolved"]
    assert event.reason == "row-2 copied by the backfill job"


# -- charts and the readiness report ------------------------------------------------------------------------


def minute_rows(env: str = "staging") -> None:
    """Two minutes of SDK reports: reads compared (one inconsistent), writes, a failed parallel write."""
    from rollout.models import Environment

    environment = Environment.objects.get(key=env)
    now = clock.now().replace(second=0, microsecond=0)
    histogram = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    for minute in (now - timedelta(minutes=2), now - timedelta(minutes=1)):
        for origin, operation, counts, bucket in (
                ("legacy", "read", {"calls": 40, "checks": 40, "inconsistent": 1}, 7),
                ("parallel", "read", {"calls": 40}, 6),
                ("legacy", "write", {"calls": 10}, 8),
                ("parallel", "write", {"calls": 10, "errors": 1, "divergences": 1}, len(LATENCY_BUCKETS_MS))):
            latency = list(histogram)
            latency[bucket] = counts["calls"]
            MigrationMinute.objects.create(environment=environment, flag_key=FLAG, stage="shadow", origin=origin,
                                           operation=operation, minute=minute, latency_ms=latency, **counts)


def test_readiness__migration_flag__figures_per_origin_and_operation(world: dict[str, Client], flag: Any) -> None:
    from rollout.plans.readiness import readiness

    minute_rows()
    section = readiness(state())["migration"]
    assert section is not None
    figures = {(o["origin"], o["operation"]): o for o in section["origins"]}
    assert figures[("legacy", "read")]["calls"] == 80
    assert figures[("legacy", "read")]["consistency_rate"] == 97.5  # 2 of 80 compared reads disagreed
    assert figures[("parallel", "write")]["error_rate"] == 10.0
    assert figures[("parallel", "write")]["p95_ms"] == 5000.0  # beyond the last bucket: "at least" its bound
    assert figures[("legacy", "write")]["p50_ms"] == 50.0
    assert (section["stage"], section["unresolved_divergences"]) == ("shadow", 1)
    api = world["admin"].get(f"/api/v1/flags/{FLAG}/states/staging/readiness/").json()
    assert api["migration"]["origins"][0]["origin"] == "legacy"
    assert world["admin"].get("/api/v1/flags/invoice-engine/states/staging/readiness/").json()["migration"] is None
    page = text(world["viewer"].get(f"/flags/{FLAG}/staging/readiness/", **HTMX))
    assert "Data migration: per origin and operation" in page and "97.5%" in page
    assert "1 unresolved divergence" in page


def test_migration_status__latency_beyond_the_last_bucket__200_with_the_last_bound(world: dict[str, Client]) -> None:
    minute_rows()
    response = world["admin"].get(f"/api/v1/flags/{FLAG}/states/staging/migration/")
    assert response.status_code == 200
    writes = [o for o in response.json()["origins"] if (o["origin"], o["operation"]) == ("parallel", "write")]
    assert writes[0]["p95_ms"] == 5000.0


def test_migration_card__charts__per_origin_and_operation_and_consistency(world: dict[str, Client]) -> None:
    minute_rows()
    page = card(world["viewer"])
    charts = {}
    for chart_id in ("calls", "errors", "latency", "consistency"):
        element = f'id="migration-chart-staging-{chart_id}" data-chart="'
        start = page.index(element) + len(element)
        charts[chart_id] = json.loads(page[start:page.index('"', start)].replace("&quot;", '"'))
    assert [s["label"] for s in charts["calls"]["series"]] == ["legacy read", "legacy write", "parallel read",
                                                                 "parallel write"]
    assert charts["calls"]["series"][0]["data"] == [40, 40]
    assert charts["errors"]["series"][3]["data"] == [1, 1]
    assert charts["consistency"]["series"][0]["data"] == [97.5, 97.5]


def test_migration_card__many_divergences_and_minutes__same_number_of_queries(
        world: dict[str, Client], django_assert_num_queries: Any) -> None:
    """The card is rendered by every state-card poll (every 5 s per open flag page): its queries do not grow
    with the divergences or the minutes reported."""
    from django.contrib.auth import get_user_model

    from rollout.datamigration.cards import migration_card

    editor = get_user_model().objects.get(username="editor")
    migration_card(editor, state())  # the user's roles are read once and kept on the user, as in a request
    queries = _card_queries(editor)
    minute_rows()
    for n in range(60):
        divergence("staging", f"row-{n + 10}")
    with django_assert_num_queries(queries):
        context = migration_card(editor, state())
    assert len(context["unresolved"]) == 50 and context["charts"][0]["labels"]


def _card_queries(user: Any) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from rollout.datamigration.cards import migration_card

    with CaptureQueriesContext(connection) as captured:
        migration_card(user, state())
    return len(captured.captured_queries)
