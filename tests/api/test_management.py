"""The management API end to end through HTTP: bodies, versions, errors, audit."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from cohorts.models import Cohort, CohortMember
from rollout.models import ApiToken, FlagState, SdkKey, Workload
from tests.api.conftest import bearer_client, make_user

pytestmark = pytest.mark.django_db

STATE = "/api/v1/flags/invoice-engine/states/staging/"


def assert_error(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["fields"], dict)
    return body["error"]


def test_workload_flag_cohort__created_through_api__one_audit_event_each_naming_the_token(admin_api, envs,
                                                                                          audit_events):
    assert admin_api.post("/api/v1/workloads/", {"key": "billing", "name": "Billing", "risk": "high"},
                          format="json").status_code == 201
    assert admin_api.post("/api/v1/flags/", {"key": "invoice-engine", "workload": "billing"},
                          format="json").status_code == 201
    response = admin_api.post("/api/v1/cohorts/", {"key": "pilot", "name": "Pilot", "rules": {
        "attr": "country", "op": "in", "values": ["DE"]}}, format="json")
    assert response.status_code == 201
    assert response.json()["version"] == 1 and response.json()["rules"]["op"] == "in"
    events = audit_events()
    assert [e.action for e in events] == ["workload.created", "flag.created", "cohort.created"]
    token = ApiToken.objects.get(user__username="admin")
    assert {(e.actor_type, e.actor) for e in events} == {("token", f"admin via {token.prefix}")}


def test_workload_create__bad_fields__400_naming_each_and_nothing_saved(admin_api, audit_events):
    error = assert_error(admin_api.post("/api/v1/workloads/", {"key": "Bad Key", "name": "", "risk": "extreme"},
                                        format="json"), 400, "invalid")
    assert {"key", "name", "risk"} <= set(error["fields"])
    assert not Workload.objects.exists() and audit_events() == []


def test_workload_create__duplicate_key__400_on_key(admin_api):
    admin_api.post("/api/v1/workloads/", {"key": "w", "name": "W"}, format="json")
    error = assert_error(admin_api.post("/api/v1/workloads/", {"key": "w", "name": "W"}, format="json"), 400,
                         "invalid")
    assert "key" in error["fields"]


@pytest.mark.parametrize("body", ["[]", '"text"', "{", "null", '{"key": "w\\u0000", "name": "x"}'])
def test_workload_create__malformed_body__4xx_with_error_body(admin_api, body):
    response = admin_api.generic("POST", "/api/v1/workloads/", body, content_type="application/json")
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"code", "message", "fields"}


def test_workload_list__filter_order_paginate__as_asked(admin_api, actor):
    from rollout.services.workloads import workload_create

    for n, risk in enumerate(["low", "high", "high", "critical"]):
        workload_create(actor=actor, key=f"w{n}", name=f"W{n}", risk=risk)
    body = admin_api.get("/api/v1/workloads/?risk=high&ordering=-key").json()
    assert [w["key"] for w in body["results"]] == ["w2", "w1"] and body["count"] == 2
    page = admin_api.get("/api/v1/workloads/?limit=1&offset=1").json()
    assert [w["key"] for w in page["results"]] == ["w1"] and page["next"] and page["previous"]
    assert_error(admin_api.get("/api/v1/workloads/?risk=extreme"), 400, "invalid")


def test_workload_update__version_rules__428_missing_409_stale_200_fresh(admin_api, actor, audit_events):
    from rollout.services.workloads import workload_create

    workload_create(actor=actor, key="w", name="W")
    assert_error(admin_api.patch("/api/v1/workloads/w/", {"name": "X"}, format="json"), 428, "version_required")
    ok = admin_api.patch("/api/v1/workloads/w/", {"name": "X", "version": 1}, format="json")
    assert ok.status_code == 200 and ok.json()["version"] == 2 and ok["ETag"] == '"2"'
    stale = assert_error(admin_api.patch("/api/v1/workloads/w/", {"name": "Y"}, format="json",
                                         HTTP_IF_MATCH='"1"'), 409, "conflict")
    assert stale["current_version"] == 2
    assert Workload.objects.get().name == "X"
    assert [e.action for e in audit_events()] == ["workload.created", "workload.updated"]


def test_workload_delete__if_match__204_and_audited(admin_api, actor, audit_events):
    from rollout.services.workloads import workload_create

    workload_create(actor=actor, key="w", name="W")
    assert_error(admin_api.delete("/api/v1/workloads/w/"), 428, "version_required")
    assert_error(admin_api.delete("/api/v1/workloads/w/", HTTP_IF_MATCH="7"), 409, "conflict")
    assert admin_api.delete("/api/v1/workloads/w/?reason=unused", HTTP_IF_MATCH='W/"1"').status_code == 204
    assert audit_events()[-1].action == "workload.deleted" and audit_events()[-1].reason == "unused"


@pytest.mark.parametrize("if_match", ['"1"', "1", 'W/"1"', " 1 "])
def test_flag_state_update__if_match_forms__accepted(admin_api, flag, if_match):
    response = admin_api.patch(STATE, {"percentage": "12.5"}, format="json", HTTP_IF_MATCH=if_match)
    assert response.status_code == 200, response.content
    assert (response.json()["percentage"], response.json()["version"]) == (12.5, 2)


def test_flag_state_update__if_match_not_a_number__400(admin_api, flag):
    error = assert_error(admin_api.patch(STATE, {"percentage": 5}, format="json", HTTP_IF_MATCH="abc"), 400,
                         "invalid")
    assert "If-Match" in error["fields"]


def test_flag_state_update__body_and_if_match_disagree__400(admin_api, flag):
    assert_error(admin_api.patch(STATE, {"percentage": 5, "version": 1}, format="json", HTTP_IF_MATCH='"2"'), 400,
                 "invalid")


@pytest.mark.parametrize(("value", "expected"), [(25, 25.0), ("33.3333", 33.3333), (0.5, 0.5), ("100", 100.0)])
def test_flag_state_update__percentage_number_or_string__stored(admin_api, flag, value, expected):
    response = admin_api.patch(STATE, {"percentage": value, "version": 1}, format="json")
    assert response.status_code == 200 and response.json()["percentage"] == expected


@pytest.mark.parametrize("value", [-1, 100.5, "12.34567", "abc", True, None, [], "NaN", "1e400"])
def test_flag_state_update__bad_percentage__400_and_unchanged(admin_api, flag, audit_events, value):
    error = assert_error(admin_api.patch(STATE, {"percentage": value, "version": 1}, format="json"), 400, "invalid")
    assert "percentage" in error["fields"]
    assert FlagState.objects.get(environment__key="staging").version == 1
    assert audit_events() == []


def test_flag_state_update__full_body__all_fields_change_in_one_event(admin_api, world, audit_events):
    body = {"version": 1, "enabled": True, "percentage": 10, "compare_percentage": "5.5",
            "include_cohorts": ["pilot"], "overrides": {"u1": "parallel"}, "reason": "pilot"}
    response = admin_api.patch(STATE, body, format="json")
    assert response.status_code == 200, response.content
    out = response.json()
    assert (out["enabled"], out["include_cohorts"], out["overrides"], out["compare_percentage"]) == (
        True, ["pilot"], {"u1": "parallel"}, 5.5)
    [event] = audit_events()
    assert (event.action, event.reason, event.after["version"]) == ("flag_state.updated", "pilot", 2)


@pytest.mark.parametrize("body", [
    {"include_cohorts": ["nope"]},
    {"overrides": {"u1": "sideways"}},
    {"overrides": ["u1"]},
    {"overrides": {"u\u0000": "legacy"}},
    {"include_cohorts": ["pilot"], "exclude_cohorts": ["pilot"]},
    {"enabled": "maybe"},
])
def test_flag_state_update__bad_input__400_and_nothing_half_saved(admin_api, world, audit_events, body):
    response = admin_api.patch(STATE, {"version": 1, "percentage": 50, **body}, format="json")
    assert_error(response, 400, "invalid")
    state = FlagState.objects.get(environment__key="staging")
    assert (state.version, state.percentage, state.include_cohorts.count()) == (1, 0, 0)
    assert audit_events() == []


def test_flag_state_actions__kill_resume_retire__each_audited_with_version(admin_api, flag, audit_events):
    assert admin_api.patch(STATE, {"version": 1, "enabled": True, "percentage": 100}, format="json").status_code == 200
    killed = admin_api.post(STATE + "kill/", {"reason": "errors spiking"}, format="json")
    assert killed.status_code == 200 and killed.json()["enabled"] is False and killed.json()["version"] == 3
    assert_error(admin_api.post(STATE + "kill/", {}, format="json"), 409, "conflict")
    assert_error(admin_api.post(STATE + "resume/", {}, format="json"), 428, "version_required")
    assert admin_api.post(STATE + "resume/", {"version": 3}, format="json").json()["enabled"] is True
    retired = admin_api.post(STATE + "retire/", {}, format="json", HTTP_IF_MATCH='"4"')
    assert retired.status_code == 200 and retired.json()["retired"] is True
    assert [e.action for e in audit_events()] == [
        "flag_state.updated", "flag_state.killed", "flag_state.resumed", "flag_state.retired"]
    assert audit_events()[1].reason == "errors spiking"


def test_flag_state__unknown_flag_or_env__404(admin_api, flag):
    assert_error(admin_api.get("/api/v1/flags/nope/states/staging/"), 404, "not_found")
    assert_error(admin_api.get("/api/v1/flags/invoice-engine/states/moon/"), 404, "not_found")
    assert_error(admin_api.patch("/api/v1/flags/invoice-engine/states/moon/", {"version": 1}, format="json"), 404,
                 "not_found")


def test_flag_state_list__every_environment__in_order(admin_api, flag):
    body = admin_api.get("/api/v1/flags/invoice-engine/states/").json()
    assert [s["environment"] for s in body] == ["staging", "production"]


def test_flag_state_update__editor_in_approval_env__202_change_request_saying_why(as_role, flag, audit_events):
    response = as_role("editor").patch("/api/v1/flags/invoice-engine/states/production/",
                                       {"version": 1, "percentage": 5}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["change_request"]["status"] == "pending"
    [event] = audit_events()
    assert event.action == "change_request.created"
    assert "production" in event.after["why"] and "requires approval" in event.after["why"]
    assert FlagState.objects.get(flag__key="invoice-engine", environment__key="production").percentage == 0


def test_flag_state_kill__editor_in_approval_env__allowed_break_glass(as_role, flag, actor):
    from rollout.services.flags import flag_state_update

    flag_state_update(actor=actor, flag="invoice-engine", environment="production", version=1, enabled=True)
    response = as_role("editor").post("/api/v1/flags/invoice-engine/states/production/kill/", {}, format="json")
    assert response.status_code == 200 and response.json()["enabled"] is False


def test_flag_update__salt_change_where_live_in_approval_env__editor_change_request(as_role, flag, actor):
    from rollout.services.flags import flag_state_update

    flag_state_update(actor=actor, flag="invoice-engine", environment="production", version=1, enabled=True)
    editor = as_role("editor")
    body = {"salt": "new-salt", "reason": "reshuffle"}
    assert editor.patch("/api/v1/flags/invoice-engine/", body, format="json").status_code == 202
    assert editor.patch("/api/v1/flags/invoice-engine/", {"description": "d"}, format="json").status_code == 200
    assert as_role("viewer").patch("/api/v1/flags/invoice-engine/", body, format="json").status_code == 403
    assert as_role("admin").patch("/api/v1/flags/invoice-engine/", body, format="json").json()["salt"] == "new-salt"


def test_cohort_change__used_in_approval_env__editor_change_request_for_rules_and_members(as_role, world, actor):
    from rollout.services.flags import flag_state_update

    flag_state_update(actor=actor, flag="invoice-engine", environment="production", version=1,
                      include_cohorts=["pilot"])
    editor = as_role("editor")
    assert editor.post("/api/v1/cohorts/pilot/members/", {"add": ["t3"]}, format="json").status_code == 202
    assert editor.patch("/api/v1/cohorts/pilot/", {"version": 2, "rules": None, "match_on": "x"},
                        format="json").status_code == 202
    assert editor.patch("/api/v1/cohorts/pilot/", {"version": 2, "name": "Pilot tenants"},
                        format="json").status_code == 200


def test_cohort_update__bad_rules__400_naming_the_bad_part(admin_api, world):
    error = assert_error(admin_api.patch("/api/v1/cohorts/pilot/", {"version": 2, "rules": {"all": "x"}},
                                         format="json"), 400, "invalid")
    assert "rules.all" in error["message"]


def test_cohort_members__json_add_and_remove__one_event_counts_and_new_version(admin_api, world, audit_events):
    response = admin_api.post("/api/v1/cohorts/pilot/members/",
                              {"add": ["t3", "t4", "t1"], "remove": ["t2", "zz"], "kind": "include"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"added": 2, "moved": 0, "unchanged": 1, "removed": 1, "not_members": 1, "version": 3}
    assert set(CohortMember.objects.values_list("subject", flat=True)) == {"t1", "t3", "t4"}
    [event] = audit_events()
    assert event.action == "cohort.members_changed"


def test_cohort_members__stale_version__409_and_nothing_changes(admin_api, world, audit_events):
    error = assert_error(admin_api.post("/api/v1/cohorts/pilot/members/", {"add": ["t9"], "version": 1},
                                        format="json"), 409, "conflict")
    assert error["current_version"] == 2
    assert not CohortMember.objects.filter(subject="t9").exists() and audit_events() == []


def test_cohort_members__same_subject_added_and_removed__400(admin_api, world):
    assert_error(admin_api.post("/api/v1/cohorts/pilot/members/", {"add": ["x"], "remove": ["x"]}, format="json"),
                 400, "invalid")


def test_cohort_members__csv_body__added_with_header_and_blank_lines(admin_api, world, audit_events):
    body = "subject\nt3\n\n\"t,4\"\nt1\n"
    response = admin_api.generic("POST", "/api/v1/cohorts/pilot/members/?kind=exclude&reason=import", body,
                                 content_type="text/csv")
    assert response.status_code == 200, response.content
    assert (response.json()["added"], response.json()["moved"]) == (2, 1)
    assert set(CohortMember.objects.filter(kind="exclude").values_list("subject", flat=True)) == {"t1", "t3", "t,4"}
    [event] = audit_events()
    assert (event.action, event.reason, event.after["kind"]) == ("cohort.members_added", "import", "exclude")


def test_cohort_members__csv_remove__removed(admin_api, world):
    response = admin_api.generic("POST", "/api/v1/cohorts/pilot/members/?action=remove", "t1\nt2\n",
                                 content_type="text/csv; charset=utf-8")
    assert response.json()["removed"] == 2 and not CohortMember.objects.exists()


def test_cohort_members__csv_bad_rows__400_by_line_number_and_nothing_saved(admin_api, world, audit_events):
    body = "a\nb\n" + "x" * 300 + "\nc,d\nok\n"
    error = assert_error(admin_api.generic("POST", "/api/v1/cohorts/pilot/members/", body, content_type="text/csv"),
                         400, "invalid")
    assert error["fields"]["csv"] == ["line 3: longer than 255 characters",
                                      "line 4: expected one column (the subject key)"]
    assert CohortMember.objects.count() == 2 and audit_events() == []


def test_cohort_members__csv_not_utf8__400_naming_the_line(admin_api, world):
    error = assert_error(admin_api.generic("POST", "/api/v1/cohorts/pilot/members/", b"ok\n\xff\xfe\n",
                                           content_type="text/csv"), 400, "invalid")
    assert "line 2" in error["message"]


def test_cohort_members__multipart_file__added(admin_api, world):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("members.csv", b"subject\nm1\nm2\n", content_type="text/csv")
    response = admin_api.post("/api/v1/cohorts/pilot/members/", {"file": upload, "kind": "include"},
                              format="multipart")
    assert response.status_code == 200, response.content
    assert response.json()["added"] == 2


def test_cohort_members__100k_csv_keys__all_added_in_one_event(admin_api, world, audit_events):
    import time

    body = "subject\n" + "".join(f"tenant-{n:06d}\n" for n in range(100_000))
    started = time.perf_counter()
    response = admin_api.generic("POST", "/api/v1/cohorts/pilot/members/", body, content_type="text/csv")
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.content
    assert response.json()["added"] == 100_000
    assert Cohort.objects.get(key="pilot").members.count() == 100_002
    assert [e.action for e in audit_events()] == ["cohort.members_added"]
    print(f"100k CSV members upload: {elapsed:.2f}s")


def test_cohort_members__100k_json_keys__all_removed(admin_api, world, actor):
    from cohorts.services import cohort_members_add

    keys = [f"k{n}" for n in range(100_000)]
    cohort_members_add(actor=actor, key="pilot", subjects=keys)
    response = admin_api.post("/api/v1/cohorts/pilot/members/", {"remove": keys}, format="json")
    assert response.status_code == 200 and response.json()["removed"] == 100_000


def test_cohort_members__over_100k__400(admin_api, world):
    body = "".join(f"s{n}\n" for n in range(100_001))
    error = assert_error(admin_api.generic("POST", "/api/v1/cohorts/pilot/members/", body, content_type="text/csv"),
                         400, "invalid")
    assert "100000" in error["message"]


def test_cohort_members_list__kind_filter_and_pages(admin_api, world, actor):
    from cohorts.services import cohort_members_add

    cohort_members_add(actor=actor, key="pilot", subjects=["x1"], kind="exclude")
    body = admin_api.get("/api/v1/cohorts/pilot/members/?kind=exclude").json()
    assert [m["subject"] for m in body["results"]] == ["x1"]
    assert admin_api.get("/api/v1/cohorts/pilot/members/?limit=1").json()["count"] == 3


def test_cohort_delete__used_by_a_flag__409(admin_api, world, actor):
    from rollout.services.flags import flag_state_update

    flag_state_update(actor=actor, flag="invoice-engine", environment="staging", version=1,
                      include_cohorts=["pilot"])
    assert_error(admin_api.delete("/api/v1/cohorts/pilot/", HTTP_IF_MATCH='"2"'), 409, "conflict")


def test_sdk_key_create__admin__secret_shown_once_stored_hashed_and_works(admin_api, flag, client,
                                                                         django_capture_on_commit_callbacks):
    response = admin_api.post("/api/v1/sdk-keys/", {"environment": "staging", "name": "billing-svc"}, format="json")
    assert response.status_code == 201
    secret = response.json()["secret"]
    key = SdkKey.objects.get()
    assert secret.startswith("sdk_") and secret not in (key.secret_hash, key.prefix)
    listed = admin_api.get("/api/v1/sdk-keys/").json()["results"]
    assert "secret" not in listed[0] and listed[0]["prefix"] == key.prefix
    assert client.get("/api/v1/sdk/ruleset", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        revoked = admin_api.post(f"/api/v1/sdk-keys/{key.prefix}/revoke/", {"reason": "leaked"}, format="json")
    assert revoked.json()["revoked_at"]
    assert client.get("/api/v1/sdk/ruleset", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 401


def test_sdk_key__used_on_management_api__401(admin_api, flag):
    secret = admin_api.post("/api/v1/sdk-keys/", {"environment": "staging", "name": "svc"}, format="json").json()
    assert_error(bearer_client(secret["secret"]).get("/api/v1/flags/"), 401, "not_authenticated")


def test_api_token__own_tokens__created_listed_revoked_then_refused(as_role, tokens, audit_events):
    viewer = as_role("viewer")
    created = viewer.post("/api/v1/tokens/", {"name": "script"}, format="json")
    assert created.status_code == 201 and created.json()["user"] == "viewer"
    new = bearer_client(created.json()["secret"])
    assert new.get("/api/v1/workloads/").status_code == 200
    prefixes = {t["prefix"] for t in viewer.get("/api/v1/tokens/").json()["results"]}
    assert prefixes == set(ApiToken.objects.filter(user__username="viewer").values_list("prefix", flat=True))
    prefix = created.json()["prefix"]
    assert viewer.post(f"/api/v1/tokens/{prefix}/revoke/", {}, format="json").status_code == 200
    assert_error(new.get("/api/v1/workloads/"), 401, "authentication_failed")
    assert [e.action for e in audit_events()] == ["api_token.created", "api_token.revoked"]


def test_api_token__someone_elses__404_for_non_admin_visible_to_admin(as_role, tokens):
    admin_prefix = ApiToken.objects.get(user__username="admin").prefix
    assert_error(as_role("editor").get(f"/api/v1/tokens/{admin_prefix}/"), 404, "not_found")
    assert_error(as_role("editor").post(f"/api/v1/tokens/{admin_prefix}/revoke/", {}, format="json"), 404,
                 "not_found")
    assert_error(as_role("editor").post("/api/v1/tokens/", {"name": "x", "username": "admin"}, format="json"), 403,
                 "forbidden")
    assert as_role("admin").get(f"/api/v1/tokens/{admin_prefix}/").status_code == 200
    assert as_role("admin").post("/api/v1/tokens/", {"name": "bot", "username": "editor"},
                                 format="json").status_code == 201


def test_api_token__last_used__recorded(as_role, tokens):
    as_role("viewer").get("/api/v1/workloads/")
    assert ApiToken.objects.get(user__username="viewer").last_used_at is not None


def test_users__admin_creates_sets_roles_deactivates__each_audited(admin_api, tokens, audit_events):
    created = admin_api.post("/api/v1/users/", {"username": "ci-bot", "roles": ["editor"]}, format="json")
    assert created.status_code == 201 and created.json()["roles"] == ["editor"]
    changed = admin_api.patch("/api/v1/users/ci-bot/", {"roles": ["viewer", "compliance"]}, format="json")
    assert changed.json()["roles"] == ["compliance", "viewer"]
    _, secret = make_user("temp", ["viewer"])
    deactivated = admin_api.post("/api/v1/users/temp/deactivate/", {"reason": "left"}, format="json")
    assert deactivated.json()["is_active"] is False
    assert_error(bearer_client(secret).get("/api/v1/workloads/"), 401, "authentication_failed")
    actions = [e.action for e in audit_events()]
    assert actions[:2] == ["user.created", "user.roles_changed"] and actions[-1] == "user.deactivated"


def test_users__bad_role__400(admin_api, tokens):
    assert_error(admin_api.patch("/api/v1/users/viewer/", {"roles": ["god"]}, format="json"), 400, "invalid")


def test_session_write__without_csrf_token__403_and_with_it__201(django_user_model, envs):
    from django.test import Client

    from common.actors import Actor
    from rollout.access.users import user_create

    user_create(actor=Actor.system("test"), username="alice", password=None, roles=["editor"])
    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.get(username="alice"))
    body = {"key": "w", "name": "W"}
    refused = client.post("/api/v1/workloads/", body, content_type="application/json")
    assert_error(refused, 403, "forbidden")
    assert "CSRF" in refused.json()["error"]["message"]
    client.get("/login/")
    token = client.cookies["csrftoken"].value
    accepted = client.post("/api/v1/workloads/", body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 201
    assert AuditEvent.objects.get(action="workload.created").actor == "alice"


def test_api_response__security_headers__present(admin_api):
    response = admin_api.get("/api/v1/workloads/")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def test_api__unauthenticated__401_with_error_body_and_challenge(client):
    response = client.get("/api/v1/workloads/")
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_api__garbage_token__401(client, db):
    assert_error(client.get("/api/v1/workloads/", HTTP_AUTHORIZATION="Bearer tok_nope"), 401,
                 "authentication_failed")
