"""Every role × every management endpoint × method → the expected status (one permission layer).

Each row builds its world once; the six roles' requests each run in a savepoint rolled back after
it (a subtest per role), so the 500-odd cases cost 85 fixture builds instead of 500.

The last test walks the URLconf, so a new endpoint under /api/v1/ cannot slip in without rows here.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, resolve

pytestmark = pytest.mark.django_db

EXCLUDED_PREFIXES = ("api/v1/sdk/", "api/v1/audit/", "api/v1/schema/", "api/v1/docs/")
ROLE_ORDER = ("anonymous", "viewer", "editor", "approver", "admin", "compliance")


def row(method: str, path: str, body: Any, **statuses: int) -> tuple[str, str, Any, dict[str, int]]:
    return method, path, body, statuses


def read() -> dict[str, int]:
    return {"anonymous": 401, "viewer": 200, "editor": 200, "approver": 200, "admin": 200, "compliance": 200}


def edit(ok: int) -> dict[str, int]:
    """Global objects: editors, approvers and admins."""
    return {"anonymous": 401, "viewer": 403, "editor": ok, "approver": ok, "admin": ok, "compliance": 403}


def admin_only(ok: int) -> dict[str, int]:
    return {"anonymous": 401, "viewer": 403, "editor": 403, "approver": 403, "admin": ok, "compliance": 403}


def own_or_admin(ok: int) -> dict[str, int]:
    """Another user's (the viewer's) token: its owner and admins; others do not even see it."""
    return {"anonymous": 401, "viewer": ok, "editor": 404, "approver": 404, "admin": ok, "compliance": 404}


def propose(ok: int) -> dict[str, int]:
    """Where approval applies: editors and approvers get a change request (202), admins change directly."""
    return {"anonymous": 401, "viewer": 403, "editor": 202, "approver": 202, "admin": ok, "compliance": 403}


def approvers(ok: int) -> dict[str, int]:
    """Deciding someone else's change: approvers and admins."""
    return {"anonymous": 401, "viewer": 403, "editor": 403, "approver": ok, "admin": ok, "compliance": 403}


def anyone(ok: int) -> dict[str, int]:
    return {"anonymous": 401, "viewer": ok, "editor": ok, "approver": ok, "admin": ok, "compliance": ok}


S = "/api/v1/flags/invoice-engine/states/staging/"
P = "/api/v1/flags/invoice-engine/states/production/"
OFF_S = "/api/v1/flags/dark-launch/states/staging/"
OFF_P = "/api/v1/flags/dark-launch/states/production/"
# Rollouts: plan-a has a plan that has not started; plan-b started (and was killed in production by the editor).
A_S = "/api/v1/flags/plan-a/states/staging/"
A_P = "/api/v1/flags/plan-a/states/production/"
B_S = "/api/v1/flags/plan-b/states/staging/"
B_P = "/api/v1/flags/plan-b/states/production/"
# A data migration: staging at dual_write, production at shadow, each with one unresolved divergence.
M_S = "/api/v1/flags/move-store/states/staging/migration/"
M_P = "/api/v1/flags/move-store/states/production/migration/"
# Configuration as code: files that create one workload (a global object), planned against nothing yet.
CONFIG = {"files": {"workloads.yaml": "turnout: 1\nworkloads:\n- key: search\n  name: Search\n"}}

MATRIX = [
    ("GET", "/api/v1/environments/", None, read()),
    ("POST", "/api/v1/environments/", {"key": "qa", "name": "QA"}, admin_only(201)),
    ("GET", "/api/v1/environments/staging/", None, read()),
    ("PATCH", "/api/v1/environments/staging/", {"name": "Stage"}, admin_only(200)),
    ("GET", "/api/v1/workloads/", None, read()),
    ("POST", "/api/v1/workloads/", {"key": "search", "name": "Search"}, edit(201)),
    ("GET", "/api/v1/workloads/billing/", None, read()),
    ("PATCH", "/api/v1/workloads/billing/", {"version": 1, "owner": "team"}, edit(200)),
    ("DELETE", "/api/v1/workloads/spare/?version=1", None, edit(204)),
    ("GET", "/api/v1/flags/", None, read()),
    ("POST", "/api/v1/flags/", {"key": "new-flag", "workload": "billing"}, edit(201)),
    ("GET", "/api/v1/flags/dark-launch/", None, read()),
    ("PATCH", "/api/v1/flags/dark-launch/", {"description": "off for now"}, edit(200)),
    ("DELETE", "/api/v1/flags/dark-launch/", None, edit(204)),
    ("GET", "/api/v1/stale-flags/", None, read()),
    ("POST", "/api/v1/flags/dark-launch/archive/", {"reason": "code paths deleted"}, edit(200)),
    ("POST", "/api/v1/flags/dark-launch/restore/", {}, edit(409)),  # not archived
    ("GET", "/api/v1/flags/invoice-engine/states/", None, read()),
    ("GET", S, None, read()),
    ("PATCH", S, {"version": 2, "percentage": 50}, edit(200)),
    # Production requires approval: editors and approvers propose (202), admins change it directly; kill is
    # break-glass for editors too.
    ("PATCH", P, {"version": 2, "percentage": 50}, propose(200)),
    ("POST", S + "kill/", {"reason": "errors"}, edit(200)),
    ("POST", P + "kill/", {"reason": "errors"}, edit(200)),
    ("POST", OFF_S + "resume/", {"version": 1}, edit(200)),
    ("POST", OFF_P + "resume/", {"version": 1}, propose(200)),
    ("POST", S + "retire/", {"version": 2}, edit(200)),
    ("POST", P + "retire/", {"version": 2}, propose(200)),
    ("GET", "/api/v1/cohorts/", None, read()),
    ("POST", "/api/v1/cohorts/", {"key": "beta", "name": "Beta"}, edit(201)),
    ("GET", "/api/v1/cohorts/pilot/", None, read()),
    ("PATCH", "/api/v1/cohorts/pilot/", {"version": 2, "description": "volunteers"}, edit(200)),
    ("DELETE", "/api/v1/cohorts/spare/?version=1", None, edit(204)),
    ("GET", "/api/v1/cohorts/pilot/members/", None, read()),
    ("POST", "/api/v1/cohorts/pilot/members/", {"add": ["t9"]}, edit(200)),
    ("GET", "/api/v1/sdk-keys/", None, admin_only(200)),
    ("POST", "/api/v1/sdk-keys/", {"environment": "staging", "name": "svc"}, admin_only(201)),
    ("GET", "/api/v1/sdk-keys/{sdk}/", None, admin_only(200)),
    ("POST", "/api/v1/sdk-keys/{sdk}/revoke/", {"reason": "rotated"}, admin_only(200)),
    ("GET", "/api/v1/tokens/", None, anyone(200)),
    ("POST", "/api/v1/tokens/", {"name": "script"}, anyone(201)),
    ("GET", "/api/v1/tokens/{token}/", None, own_or_admin(200)),
    ("POST", "/api/v1/tokens/{token}/revoke/", {}, own_or_admin(200)),
    ("GET", "/api/v1/users/", None, admin_only(200)),
    ("POST", "/api/v1/users/", {"username": "newbie", "roles": ["viewer"]}, admin_only(201)),
    ("GET", "/api/v1/users/viewer/", None, admin_only(200)),
    ("PATCH", "/api/v1/users/editor/", {"roles": ["editor", "approver"]}, admin_only(200)),
    ("POST", "/api/v1/users/editor/deactivate/", {"reason": "left"}, admin_only(200)),
    ("POST", "/api/v1/users/invitee/invite/", {}, admin_only(200)),
    ("GET", A_S + "stages/", None, read()),
    ("PUT", A_S + "stages/", {"version": 2, "template": "standard"}, edit(200)),
    ("PUT", A_P + "stages/", {"version": 2, "template": "standard"}, propose(200)),
    ("POST", A_S + "advance/", {"version": 2}, edit(200)),
    ("POST", A_P + "advance/", {"version": 2}, propose(200)),
    # Pause and rollback never wait for approval (a rollback where it would apply is break-glass), but name
    # the version they read.
    ("POST", B_S + "pause/", {"reason": "hold", "version": 3}, edit(200)),
    ("POST", B_P + "rollback/", {"reason": "errors", "version": 4}, edit(200)),
    ("GET", A_S + "guardrails/", None, read()),
    ("PUT", A_S + "guardrails/", {"version": 2, "max_error_rate": 5}, edit(200)),
    ("PUT", A_P + "guardrails/", {"version": 2, "max_error_rate": 5}, propose(200)),
    ("GET", A_S + "readiness/", None, read()),
    ("GET", A_S + "mismatches/", None, read()),
    ("POST", A_S + "mismatches/{group}/known/", {"reason": "rounding, as agreed"}, edit(200)),
    # User feedback: anyone may read it; its readiness rule is changed like the guardrails (production's
    # change request: tests/feedback).
    ("GET", A_S + "feedback/", None, read()),
    ("PUT", A_S + "feedback/rule/", {"version": 2, "max_score_drop": 0.5}, edit(200)),
    # The gate answers 409 while the rollout is not ready (here: the plan has not started).
    ("GET", "/api/v1/gates/plan-a/staging", None, {**read(), **dict.fromkeys(ROLE_ORDER[1:], 409)}),
    ("GET", "/api/v1/change-requests/", None, read()),
    ("POST", "/api/v1/change-requests/", {"flag": "plan-a", "environment": "staging", "action": "advance",
                                          "version": 2}, edit(200)),
    ("GET", "/api/v1/change-requests/{cr}/", None, read()),
    ("POST", "/api/v1/change-requests/{cr}/approve/", {}, approvers(200)),
    ("POST", "/api/v1/change-requests/{cr}/reject/", {}, approvers(200)),
    # Only the requester (the editor) withdraws a request.
    ("POST", "/api/v1/change-requests/{cr}/cancel/", {}, {**edit(403), "editor": 200}),
    ("GET", "/api/v1/review-items/", None, read()),
    ("POST", "/api/v1/review-items/{review}/acknowledge/", {}, approvers(200)),
    # Promotion copies staging's plan onto production: an environment change like any other.
    ("POST", "/api/v1/flags/plan-a/states/staging/promote/", {"from_environment": "production"}, edit(200)),
    ("POST", A_P + "promote/", {"from_environment": "staging"}, propose(200)),
    # Data migrations: dual writes and shadow reads apply at once; parallel becoming authoritative (live)
    # waits for a second person where approval applies; rollback never waits; resolving is gated by the
    # environment's approval only.
    ("GET", M_S, None, read()),
    ("POST", M_S, {"version": 2, "stage": "shadow"}, edit(200)),
    ("POST", M_P, {"version": 3, "splits": [{"stage": "live", "percentage": 10}]}, propose(200)),
    ("POST", M_S + "rollback/", {"version": 2, "reason": "parallel store corrupt"}, edit(200)),
    ("POST", M_P + "rollback/", {"version": 3, "reason": "parallel store corrupt"}, edit(200)),
    ("GET", M_S + "divergences/", None, read()),
    ("GET", M_S + "divergences/export", None, read()),
    ("POST", M_S + "divergences/resolve/", {"divergences": "all", "reason": "backfilled"}, edit(200)),
    ("POST", M_P + "divergences/resolve/", {"divergences": "all", "reason": "backfilled"}, propose(200)),
    # Configuration as code: a plan reads only, so any role may ask (refusals are in its rulings).
    ("GET", "/api/v1/config/schema", None, read()),
    ("GET", "/api/v1/config/export", None, read()),
    ("POST", "/api/v1/config/plan", CONFIG, anyone(200)),
    ("POST", "/api/v1/config/apply", {**CONFIG, "versions": {}}, edit(200)),
]

ROWS = [pytest.param(method, path, body, statuses, id=f"{method}-{path}") for method, path, body, statuses in MATRIX]


@pytest.fixture
def matrix_world(request: pytest.FixtureRequest, world: dict[str, Any], tokens: dict[str, str],
                 actor: Any) -> dict[str, str]:
    from cohorts.services import cohort_create
    from rollout.access.keys import api_token_create, sdk_key_create
    from rollout.access.users import user_create
    from rollout.services.flags import flag_create, flag_state_update
    from rollout.services.workloads import workload_create

    workload_create(actor=actor, key="spare", name="Spare")
    cohort_create(actor=actor, key="spare", name="Spare")
    flag_create(actor=actor, key="dark-launch", workload="billing")
    for env in ("staging", "production"):
        flag_state_update(actor=actor, flag="invoice-engine", environment=env, version=1, enabled=True,
                          percentage_value=100)
    sdk, _ = sdk_key_create(actor=actor, environment="staging", name="billing-svc")
    token, _ = api_token_create(actor=actor, username="viewer", name="second")
    user_create(actor=actor, username="invitee", password=None, roles=["viewer"], email="invitee@example.org")
    if "move-store" in request.node.callspec.params["path"]:  # only the migration rows pay for it
        _migration_world(actor)
    return {"sdk": sdk.prefix, "token": token.prefix, **_rollout_world(actor)}


def _migration_world(actor: Any) -> None:
    from datetime import UTC, datetime

    from actions.submit import submit_state
    from rollout.models import Divergence, FlagState
    from rollout.services.flags import flag_create

    flag_create(actor=actor, key="move-store", workload="billing", bucket_by="tenant_id", kind="migration")
    for env, stages in (("staging", ("dual_write",)), ("production", ("dual_write", "shadow"))):
        for stage in stages:
            submit_state(actor=actor, flag="move-store", environment=env, action="migration.stage_set",
                         params={"stage": stage})
        now = datetime.now(UTC)
        Divergence.objects.create(flag_state=FlagState.objects.get(flag__key="move-store", environment__key=env),
                                  key_hash="0" * 64, origin="parallel", identifier="row-7", stage=stages[-1],
                                  count=1, first_seen=now, last_seen=now)


def _rollout_world(actor: Any) -> dict[str, str]:
    from datetime import UTC, datetime

    from django.contrib.auth import get_user_model

    from actions.submit import submit_state
    from common.actors import Actor
    from rollout.models import Environment, MismatchGroup, MismatchSample, ReviewItem
    from rollout.plans.stages import plan_set, rollout_advance
    from rollout.services.flags import flag_create, flag_state_kill
    from rollout.telemetry.mismatches import mismatch_groups_refresh

    editor = Actor.for_user(get_user_model().objects.get(username="editor"))
    stages = [{"name": "validate", "compare_percentage": 10}, {"name": "all", "percentage": 100}]
    for key in ("plan-a", "plan-b"):
        flag_create(actor=actor, key=key, workload="billing")
        for env in ("staging", "production"):
            plan_set(actor=actor, flag=key, environment=env, version=1, stages=stages)
    for env in ("staging", "production"):
        rollout_advance(actor=actor, flag="plan-b", environment=env)
    flag_state_kill(actor=editor, flag="plan-b", environment="production", reason="pager")
    cr = submit_state(actor=editor, flag="plan-a", environment="production", action="advance", params={},
                               version=2).change_request
    now = datetime.now(UTC)
    MismatchSample.objects.create(environment=Environment.objects.get(key="staging"), flag_key="plan-a",
                                  key_hash="0" * 64, legacy={"total": 1}, parallel={"total": 2}, at=now, minute=now)
    mismatch_groups_refresh()
    assert cr is not None
    return {"cr": str(cr.pk), "review": str(ReviewItem.objects.get().pk), "group": str(MismatchGroup.objects.get().pk)}


@pytest.mark.parametrize(("method", "path", "body", "statuses"), ROWS)
def test_role_matrix__role_endpoint_method__expected_status(as_role, matrix_world, subtests, method, path, body,
                                                            statuses):
    """The world is built once per row; each role's request runs in a savepoint rolled back after it."""
    from django.db import transaction

    from tests.conftest import forget_process_state

    assert set(statuses) == set(ROLE_ORDER)
    for role in ROLE_ORDER:
        with subtests.test(role=role):
            savepoint = transaction.savepoint()
            try:
                response = as_role(role).generic(method, path.format(**matrix_world),
                                                 data="" if body is None else _json(body),
                                                 content_type="application/json")
            finally:
                transaction.savepoint_rollback(savepoint)
                forget_process_state()
            assert response.status_code == statuses[role], (role, response.content)
            if statuses[role] >= 400:
                assert set(response.json()["error"]) >= {"code", "message", "fields"}


def _json(body: Any) -> str:
    import json

    return json.dumps(body)


def _api_routes(resolver: URLResolver | None = None, prefix: str = "") -> list[tuple[str, Any]]:
    resolver = resolver or get_resolver()
    routes: list[tuple[str, Any]] = []
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            routes.extend(_api_routes(pattern, route))
        elif isinstance(pattern, URLPattern) and route.startswith("api/v1/"):
            routes.append((route, getattr(pattern.callback, "view_class", None)))
    return routes


def test_role_matrix__covers_every_management_endpoint_and_method():
    expected = set()
    for route, view_class in _api_routes():
        if route.startswith(EXCLUDED_PREFIXES) or view_class is None:
            continue
        for method in ("get", "post", "put", "patch", "delete"):
            if hasattr(view_class, method):
                expected.add((route, method.upper()))
    covered = {(resolve(path.split("?")[0].format(sdk="p", token="t", cr="1", review="1", group="1")).route, method)
               for method, path, _, _ in MATRIX}
    assert expected - covered == set(), "endpoints without role-matrix rows"
    assert covered - expected == set(), "rows for endpoints that do not exist"
