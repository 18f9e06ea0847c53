"""One way in: the same change gets the same outcome (applied, change request, refused) from every entrance.

The table enumerates action × entrance (UI form, per-object API, the change-requests endpoint) × role ×
environment (approval-gated or not) × workload risk, and compares every entrance with an oracle written
from the policy's rules (docs/rollouts.md), not from the code under test. Then one named test per
reproduction from the issue "One way to change anything".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client
from rest_framework.test import APIClient

from audit.models import AuditEvent
from cohorts.models import Cohort, CohortMember
from common.actors import Actor
from rollout.models import ChangeRequest, Flag, FlagState, ReviewItem, Workload

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("test")
ROLES = ("viewer", "editor", "approver", "admin")
STATE = "/api/v1/flags/invoice-engine/states"


def _api(username: str) -> APIClient:
    client = APIClient()
    client.force_authenticate(get_user_model().objects.get(username=username))
    return client


def _ui(username: str) -> Client:
    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    return client


@pytest.fixture
def house(db: Any, envs: dict[str, Any]) -> dict[str, Any]:
    """A rolling-out flag in staging (no approval) and production (approval), a cohort it uses, a user per role."""
    from cohorts.services import cohort_create, cohort_members_add
    from rollout.access.users import user_create
    from rollout.plans.stages import plan_set, plan_template, rollout_advance
    from rollout.services.flags import flag_create, flag_state_update
    from rollout.services.workloads import workload_create

    for role in ROLES:
        user_create(actor=SYSTEM, username=role, password=None, roles=[role])
    workload_create(actor=SYSTEM, key="billing", name="Billing", risk="medium")
    flag_create(actor=SYSTEM, key="invoice-engine", workload="billing", bucket_by="tenant_id")
    cohort_create(actor=SYSTEM, key="pilot", name="Pilot", rules={"all": [{"attr": "country", "op": "eq",
                                                                          "values": ["DE"]}]})
    cohort_members_add(actor=SYSTEM, key="pilot", subjects=["t-1"])
    stages = plan_template("standard", pilot_cohorts=["pilot"], soak_seconds=0)
    for env in ("staging", "production"):
        plan_set(actor=SYSTEM, flag="invoice-engine", environment=env, version=None, stages=stages)
        rollout_advance(actor=SYSTEM, flag="invoice-engine", environment=env)
        rollout_advance(actor=SYSTEM, flag="invoice-engine", environment=env)
        flag_state_update(actor=SYSTEM, flag="invoice-engine", environment=env, version=None,
                          include_cohorts=["pilot"])
    return envs


def _state(env: str) -> FlagState:
    return FlagState.objects.select_related("flag__workload").get(flag__key="invoice-engine", environment__key=env)


def _set_risk(risk: str) -> None:
    Workload.objects.filter(key="billing").update(risk=risk)


# -- the actions, each with its entrances --------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "state" (gated by the environment) or "cohort" / "workload" / "flag" (gated by what they reach)
    emergency: bool
    entrances: dict[str, Callable[[str, str], Any]]  # entrance -> fn(username, env) -> response


def _v(env: str) -> int:
    return _state(env).version


def _api_percentage(user: str, env: str) -> Any:
    return _api(user).patch(f"{STATE}/{env}/", {"percentage": 42, "version": _v(env)}, format="json")


def _ui_percentage(user: str, env: str) -> Any:
    return _ui(user).post(f"/flags/invoice-engine/{env}/percentage/", {"percentage": "42", "version": _v(env)},
                          HTTP_HX_REQUEST="true")


def _cr(action: str, target: str, params: dict[str, Any], version: int | None) -> Callable[[str, str], Any]:
    def post(user: str, env: str) -> Any:
        body = {"action": action, "target": target.replace("{env}", env), "params": params, "reason": "table"}
        if version is not None:
            body["version"] = version
        return _api(user).post("/api/v1/change-requests/", body, format="json")
    return post


def _cr_state(action: str, params: dict[str, Any]) -> Callable[[str, str], Any]:
    def post(user: str, env: str) -> Any:
        return _cr(action, "invoice-engine@{env}", params, _v(env))(user, env)
    return post


def _api_guardrails(user: str, env: str) -> Any:
    return _api(user).put(f"{STATE}/{env}/guardrails/", {"max_error_rate": 5, "version": _v(env)}, format="json")


def _ui_guardrails(user: str, env: str) -> Any:
    return _ui(user).post(f"/flags/invoice-engine/{env}/guardrails/", {
        "max_error_rate": "5", "min_sample_size": "100", "window_seconds": "300", "action": "rollback",
        "version": _v(env)}, HTTP_HX_REQUEST="true")


def _api_advance(user: str, env: str) -> Any:
    return _api(user).post(f"{STATE}/{env}/advance/", {"version": _v(env)}, format="json")


def _ui_advance(user: str, env: str) -> Any:
    return _ui(user).post(f"/flags/invoice-engine/{env}/advance/", {"version": _v(env)}, HTTP_HX_REQUEST="true")


def _api_rollback(user: str, env: str) -> Any:
    return _api(user).post(f"{STATE}/{env}/rollback/", {"version": _v(env), "reason": "pager"}, format="json")


def _ui_rollback(user: str, env: str) -> Any:
    return _ui(user).post(f"/flags/invoice-engine/{env}/rollback/", {"version": _v(env), "reason": "pager"},
                          HTTP_HX_REQUEST="true")


def _api_kill(user: str, env: str) -> Any:
    return _api(user).post(f"{STATE}/{env}/kill/", {"reason": "pager"}, format="json")


def _ui_kill(user: str, env: str) -> Any:
    return _ui(user).post(f"/flags/invoice-engine/{env}/kill/", {"reason": "pager"}, HTTP_HX_REQUEST="true")


RULES = {"all": [{"attr": "country", "op": "in", "values": ["DE", "FR"]}]}


def _api_cohort_rules(user: str, env: str) -> Any:
    version = Cohort.objects.get(key="pilot").version
    return _api(user).patch("/api/v1/cohorts/pilot/", {"rules": RULES, "version": version}, format="json")


def _ui_cohort_rules(user: str, env: str) -> Any:
    cohort = Cohort.objects.get(key="pilot")
    import json

    return _ui(user).post("/cohorts/pilot/edit/", {"name": cohort.name, "description": "", "match_on": "",
                                                   "rules": json.dumps(RULES), "version": cohort.version})


def _api_members(user: str, env: str) -> Any:
    return _api(user).post("/api/v1/cohorts/pilot/members/", {"add": ["t-9"]}, format="json")


def _ui_members_upload(user: str, env: str) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return _ui(user).post("/cohorts/pilot/members/", {
        "file": SimpleUploadedFile("m.csv", b"subject\nt-9\n", content_type="text/csv"), "kind": "include"})


def _ui_members_remove(user: str, env: str) -> Any:
    return _ui(user).post("/cohorts/pilot/members/remove/", {"subjects": "t-1"}, HTTP_HX_REQUEST="true")


def _api_risk(user: str, env: str) -> Any:
    version = Workload.objects.get(key="billing").version
    return _api(user).patch("/api/v1/workloads/billing/", {"risk": "low", "version": version}, format="json")


def _ui_risk(user: str, env: str) -> Any:
    w = Workload.objects.get(key="billing")
    return _ui(user).post("/workloads/billing/edit/", {
        "name": w.name, "description": w.description, "owner": w.owner, "risk": "low", "phase": w.phase,
        "reversibility": w.reversibility, "legacy_system": w.legacy_system, "parallel_system": w.parallel_system,
        "version": w.version})


def _api_salt(user: str, env: str) -> Any:
    return _api(user).patch("/api/v1/flags/invoice-engine/", {"salt": "reshuffled", "reason": "table"},
                            format="json")


CASES = [
    Case("percentage", "state", False, {"ui": _ui_percentage, "api": _api_percentage,
                                        "change-requests": _cr_state("flag_state.updated", {"percentage": 42})}),
    Case("guardrails", "state", False, {"ui": _ui_guardrails, "api": _api_guardrails,
                                        "change-requests": _cr_state("flag_state.guardrails_set",
                                                                     {"max_error_rate": 5})}),
    Case("advance", "state", False, {"ui": _ui_advance, "api": _api_advance,
                                     "change-requests": _cr_state("flag_state.advanced", {})}),
    Case("rollback", "state", True, {"ui": _ui_rollback, "api": _api_rollback,
                                     "change-requests": _cr_state("flag_state.rolled_back", {})}),
    Case("kill", "state", True, {"ui": _ui_kill, "api": _api_kill,
                                 "change-requests": _cr_state("flag_state.killed", {})}),
    Case("cohort-rules", "cohort", False, {"ui": _ui_cohort_rules, "api": _api_cohort_rules,
                                           "change-requests": _cr("cohort.updated", "pilot", {"rules": RULES},
                                                                  None)}),
    Case("cohort-members", "cohort", False, {"ui-upload": _ui_members_upload, "ui-remove": _ui_members_remove,
                                             "api": _api_members,
                                             "change-requests": _cr("cohort.members_added", "pilot",
                                                                    {"subjects": ["t-9"]}, None)}),
    Case("workload-risk", "workload", False, {"ui": _ui_risk, "api": _api_risk,
                                              "change-requests": _cr("workload.updated", "billing", {"risk": "low"},
                                                                     None)}),
    Case("flag-salt", "flag", False, {"api": _api_salt,
                                      "change-requests": _cr("flag.updated", "invoice-engine", {"salt": "s2"},
                                                             None)}),
]


def expected(case: Case, role: str, env: str, risk: str) -> str:
    """The policy, written out independently: 'applied', 'requested' or 'refused'."""
    if role == "viewer":
        return "refused"
    if case.emergency:
        return "applied"
    high = risk == "high"
    if case.kind == "state":
        gated = env == "production" or high
    elif case.kind == "workload":  # risk high -> low: gated by the current (high) risk only
        gated = high
    else:  # cohort and salt changes reach both environments (production requires approval)
        gated = True
    if gated and role != "admin":
        return "requested"
    return "applied"


def observed(before: dict[str, int]) -> str:
    """What a request did, read from the database (never from the entrance's own words)."""
    if ChangeRequest.objects.count() > before["requests"]:
        return "requested"
    if AuditEvent.objects.count() > before["events"]:
        return "applied"
    return "refused"


ENTRANCES = [(case, entrance) for case in CASES for entrance in case.entrances]


COMBINATIONS = [(role, env, risk) for role in ROLES for env in ("staging", "production") for risk in ("medium", "high")]


@pytest.mark.parametrize(("case", "entrance"), ENTRANCES, ids=[f"{c.name}-{e}" for c, e in ENTRANCES])
def test_every_entrance__same_change__same_outcome(house: Any, subtests: Any, case: Case, entrance: str) -> None:
    """Every entrance of every action against the one oracle: so every entrance agrees with every other.

    The house is built once per action and entrance; each role × environment × risk runs in a savepoint
    that is rolled back afterwards (with the on-commit work it registered), so each starts from the same
    house as a test of its own would.
    """
    for role, env, risk in COMBINATIONS:
        with subtests.test(role=role, env=env, risk=risk):
            savepoint = transaction.savepoint()
            try:
                _set_risk(risk)
                before = {"requests": ChangeRequest.objects.count(), "events": AuditEvent.objects.count()}
                response = case.entrances[entrance](role, env)
                seen = observed(before)
                assert seen == expected(case, role, env, risk), (response.status_code, response.content[:300])
                if entrance in ("api", "change-requests"):
                    assert response.status_code == {"applied": 200, "requested": 202, "refused": 403}[seen]
            finally:
                transaction.savepoint_rollback(savepoint)


# -- the reproductions ---------------------------------------------------------------------------------


def test_cohort_edit__editor_production_cohort_from_ui__change_request_not_applied(house: Any) -> None:
    response = _ui_cohort_rules("editor", "production")
    assert response.status_code in (200, 302)
    assert Cohort.objects.get(key="pilot").rules != RULES
    cr = ChangeRequest.objects.get(action="cohort.updated")
    assert (cr.target_type, cr.target_key, cr.status) == ("cohort", "pilot", "pending")
    assert _api_cohort_rules("editor", "production").status_code == 202  # the API answers the same


def test_cohort_members__editor_production_cohort_from_ui__change_request_nobody_added_or_removed(house: Any) -> None:
    _ui_members_upload("editor", "production")
    _ui_members_remove("editor", "production")
    assert sorted(CohortMember.objects.values_list("subject", flat=True)) == ["t-1"]
    assert sorted(ChangeRequest.objects.values_list("action", flat=True)) == [
        "cohort.members_added", "cohort.members_removed"]


def test_cohort_change_request__approved_by_another__applied_with_approval_in_audit(house: Any) -> None:
    _api_cohort_rules("editor", "production")
    cr = ChangeRequest.objects.get(action="cohort.updated")
    response = _api("approver").post(f"/api/v1/change-requests/{cr.pk}/approve/", {}, format="json")
    assert response.status_code == 200, response.json()
    assert Cohort.objects.get(key="pilot").rules == RULES
    event = AuditEvent.objects.filter(action="cohort.updated").latest("sequence")
    assert event.after["approval"] == {"change_request": cr.pk, "requested_by": "editor", "approved_by": "approver"}


def test_workload_risk__editor_lowers_high_to_low__change_request_risk_unchanged(house: Any) -> None:
    _set_risk("high")
    assert _api_risk("editor", "production").status_code == 202
    assert Workload.objects.get(key="billing").risk == "high"


def test_workload_reversibility__admin_makes_irreversible_reversible__change_request(house: Any) -> None:
    Workload.objects.filter(key="billing").update(reversibility="irreversible")
    version = Workload.objects.get(key="billing").version
    response = _api("admin").patch("/api/v1/workloads/billing/", {"reversibility": "stateless", "version": version},
                                   format="json")
    assert response.status_code == 202, response.json()
    assert Workload.objects.get(key="billing").reversibility == "irreversible"


def test_advance__irreversible_workload_admin__change_request(house: Any) -> None:
    Workload.objects.filter(key="billing").update(reversibility="irreversible")
    assert _api_advance("admin", "staging").status_code == 202


def test_flag_salt__high_risk_workload_editor__change_request_not_reshuffled(house: Any) -> None:
    _set_risk("high")
    assert _api_salt("editor", "staging").status_code == 202
    assert Flag.objects.get(key="invoice-engine").salt == "invoice-engine"


def test_cohort_rules__high_risk_workload_staging_only__change_request(house: Any) -> None:
    from rollout.services.flags import flag_state_update

    flag_state_update(actor=SYSTEM, flag="invoice-engine", environment="production", version=None,
                      include_cohorts=[])
    _set_risk("high")
    assert _api_cohort_rules("editor", "staging").status_code == 202


@pytest.mark.parametrize("call", [_api_percentage, _ui_percentage], ids=["api", "ui"])
def test_percentage__approval_env_editor__change_request_from_both(house: Any, call: Any) -> None:
    call("editor", "production")
    assert ChangeRequest.objects.filter(action="flag_state.updated", status="pending").count() == 1
    assert _state("production").percentage != 42


def test_resume__approval_env_editor_api__change_request_not_403(house: Any) -> None:
    from rollout.services.flags import flag_state_kill

    flag_state_kill(actor=SYSTEM, flag="invoice-engine", environment="production")
    response = _api("editor").post(f"{STATE}/production/resume/", {"version": _v("production")}, format="json")
    assert response.status_code == 202, response.json()
    assert _state("production").enabled is False


def test_rollback__stale_version__409_and_not_rolled_back_twice(house: Any) -> None:
    version = _v("production")
    first = _api("editor").post(f"{STATE}/production/rollback/", {"version": version, "reason": "a"}, format="json")
    second = _api("admin").post(f"{STATE}/production/rollback/", {"version": version, "reason": "b"}, format="json")
    assert (first.status_code, second.status_code) == (200, 409)
    assert _state("production").stage == 1


def test_kill__without_version__applied_and_records_replaced_version(house: Any) -> None:
    version = _v("production")
    assert _api_kill("editor", "production").status_code == 200
    event = AuditEvent.objects.filter(action="flag_state.killed").latest("sequence")
    assert event.after["replaced_version"] == version


def test_review_item__long_username_via_token__own_item_refused(house: Any) -> None:
    from actions.submit import review_item_acknowledge
    from common.errors import Forbidden
    from rollout.access.keys import api_token_create
    from rollout.access.users import user_create

    long_name = "a" * 150
    user_create(actor=SYSTEM, username=long_name, password=None, roles=["approver"])
    user = get_user_model().objects.get(username=long_name)
    token, _secret = api_token_create(actor=SYSTEM, username=long_name, name="ci")
    breaker = Actor.for_token(token)
    from rollout.services.flags import flag_state_kill

    flag_state_kill(actor=breaker, flag="invoice-engine", environment="production", reason="pager")
    item = ReviewItem.objects.get()
    assert item.actor_user_id == user.pk
    with pytest.raises(Forbidden):
        review_item_acknowledge(actor=Actor.for_user(user), review_item=item.pk)
    review_item_acknowledge(actor=Actor.for_user(get_user_model().objects.get(username="approver")),
                            review_item=item.pk)


def test_service__person_calls_service_directly_in_approval_env__refused_without_approval(house: Any) -> None:
    """The services guard themselves: an entrance that forgot the action layer still cannot skip policy."""
    from cohorts.services import cohort_update
    from rollout.policy import ApprovalRequired

    editor = Actor.for_user(get_user_model().objects.get(username="editor"))
    with pytest.raises(ApprovalRequired):
        cohort_update(actor=editor, key="pilot", rules=RULES)
