"""The completeness registry: one scenario per service function and per write endpoint.

``tests/audit/test_completeness.py`` discovers every service (a public ``<entity>_<action>`` function
taking ``actor`` in any ``services.py`` or ``services/`` module of our apps) and every write endpoint
in the URLconf, and FAILS for one without a scenario here. Adding a service or an endpoint? Add its
scenario: set up what it needs (through other services), and say which one event it must leave.

A service scenario returns ``Expect``; ``call(actor)`` is the call under test, made with a fresh
actor and a known request id. An endpoint scenario gets an ``Api`` (an admin with an API token,
plus helpers; ``api.login()`` signs its client in by session, for the web UI's form posts) and returns
``EndpointExpect``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.actors import Actor

SETUP = Actor.system("setup")


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


@dataclass
class Expect:
    call: Callable[[Actor], Any]
    action: str
    object_type: str
    object_key: str | Callable[[Any], str]
    environment: str = ""
    before: Any = ANY  # ANY, None (must be absent) or a dict of keys that must match
    after: Any = ANY
    user: str | None = None  # call as this user (not a system actor): for services only a person may call


ServiceScenario = Callable[[], Expect]
SERVICE_SCENARIOS: dict[str, ServiceScenario] = {}


def service_scenario(name: str) -> Callable[[ServiceScenario], ServiceScenario]:
    def register(fn: ServiceScenario) -> ServiceScenario:
        assert name not in SERVICE_SCENARIOS, f"two scenarios for {name}"
        SERVICE_SCENARIOS[name] = fn
        return fn

    return register


# --- setup helpers (all through services) ---------------------------------------------------------


def envs() -> None:
    from rollout.services.environments import environment_create

    environment_create(actor=SETUP, key="staging", name="Staging", order=0)
    environment_create(actor=SETUP, key="production", name="Production", order=1, requires_approval=True)


def flag(key: str = "invoice-engine") -> None:
    from rollout.services.flags import flag_create
    from rollout.services.workloads import workload_create

    envs()
    workload_create(actor=SETUP, key="billing", name="Billing")
    flag_create(actor=SETUP, key=key, workload="billing")


def flag_on(percentage: int = 50) -> None:
    from rollout.services.flags import flag_state_update

    flag()
    flag_state_update(actor=SETUP, flag="invoice-engine", environment="staging", version=None, enabled=True,
                      percentage_value=percentage)


def cohort(key: str = "pilot") -> None:
    from cohorts.services import cohort_create

    cohort_create(actor=SETUP, key=key, name="Pilot")


def user(username: str = "dana", roles: tuple[str, ...] = ("editor",)) -> Any:
    from rollout.access.users import user_create

    return user_create(actor=SETUP, username=username, password=None, roles=roles)


# --- rollout: environments, workloads, flags, flag states -----------------------------------------


@service_scenario("environment_create")
def _environment_create() -> Expect:
    from rollout.services.environments import environment_create

    return Expect(lambda a: environment_create(actor=a, key="qa", name="QA"), "environment.created", "environment",
                  "qa", environment="qa", before=None, after={"key": "qa", "name": "QA"})


@service_scenario("environment_update")
def _environment_update() -> Expect:
    from rollout.services.environments import environment_update

    envs()
    return Expect(lambda a: environment_update(actor=a, key="staging", name="Stage", reason="rename"),
                  "environment.updated", "environment", "staging", environment="staging",
                  before={"name": "Staging"}, after={"name": "Stage"})


@service_scenario("workload_create")
def _workload_create() -> Expect:
    from rollout.services.workloads import workload_create

    return Expect(lambda a: workload_create(actor=a, key="billing", name="Billing", risk="high"),
                  "workload.created", "workload", "billing", before=None, after={"key": "billing", "risk": "high"})


@service_scenario("workload_update")
def _workload_update() -> Expect:
    from rollout.services.workloads import workload_create, workload_update

    workload_create(actor=SETUP, key="billing", name="Billing", risk="low")
    return Expect(lambda a: workload_update(actor=a, key="billing", version=1, risk="high", reason="money"),
                  "workload.updated", "workload", "billing", before={"risk": "low", "version": 1},
                  after={"risk": "high", "version": 2})


@service_scenario("workload_delete")
def _workload_delete() -> Expect:
    from rollout.services.workloads import workload_create, workload_delete

    workload_create(actor=SETUP, key="billing", name="Billing")
    return Expect(lambda a: workload_delete(actor=a, key="billing", reason="gone"), "workload.deleted", "workload",
                  "billing", before={"key": "billing"}, after=None)


@service_scenario("flag_create")
def _flag_create() -> Expect:
    from rollout.services.flags import flag_create
    from rollout.services.workloads import workload_create

    envs()
    workload_create(actor=SETUP, key="billing", name="Billing")
    return Expect(lambda a: flag_create(actor=a, key="invoice-engine", workload="billing", bucket_by="tenant_id"),
                  "flag.created", "flag", "invoice-engine", before=None,
                  after={"key": "invoice-engine", "workload": "billing", "bucket_by": "tenant_id"})


@service_scenario("flag_update")
def _flag_update() -> Expect:
    from rollout.services.flags import flag_update

    flag()
    return Expect(lambda a: flag_update(actor=a, key="invoice-engine", description="new"), "flag.updated", "flag",
                  "invoice-engine", before={"description": ""}, after={"description": "new"})


@service_scenario("flag_delete")
def _flag_delete() -> Expect:
    from rollout.services.flags import flag_delete

    flag()
    return Expect(lambda a: flag_delete(actor=a, key="invoice-engine", reason="done"), "flag.deleted", "flag",
                  "invoice-engine", before={"key": "invoice-engine"}, after=None)


@service_scenario("flag_state_update")
def _flag_state_update() -> Expect:
    from rollout.services.flags import flag_state_update

    flag()
    return Expect(lambda a: flag_state_update(actor=a, flag="invoice-engine", environment="staging", version=1,
                                              enabled=True, percentage_value=10, reason="pilot"),
                  "flag_state.updated", "flag_state", "invoice-engine@staging", environment="staging",
                  before={"enabled": False, "percentage": 0.0, "version": 1},
                  after={"enabled": True, "percentage": 10.0, "version": 2})


@service_scenario("flag_state_kill")
def _flag_state_kill() -> Expect:
    from rollout.services.flags import flag_state_kill

    flag_on()
    return Expect(lambda a: flag_state_kill(actor=a, flag="invoice-engine", environment="staging", reason="errors"),
                  "flag_state.killed", "flag_state", "invoice-engine@staging", environment="staging",
                  before={"enabled": True}, after={"enabled": False})


@service_scenario("flag_state_resume")
def _flag_state_resume() -> Expect:
    from rollout.services.flags import flag_state_kill, flag_state_resume

    flag_on()
    flag_state_kill(actor=SETUP, flag="invoice-engine", environment="staging")
    return Expect(lambda a: flag_state_resume(actor=a, flag="invoice-engine", environment="staging"),
                  "flag_state.resumed", "flag_state", "invoice-engine@staging", environment="staging",
                  before={"enabled": False}, after={"enabled": True})


@service_scenario("flag_state_retire")
def _flag_state_retire() -> Expect:
    from rollout.services.flags import flag_state_retire

    flag_on(100)
    return Expect(lambda a: flag_state_retire(actor=a, flag="invoice-engine", environment="staging"),
                  "flag_state.retired", "flag_state", "invoice-engine@staging", environment="staging",
                  before={"retired": False}, after={"retired": True})


# --- keys, tokens, users ----------------------------------------------------------------------------


@service_scenario("sdk_key_create")
def _sdk_key_create() -> Expect:
    from rollout.access.keys import sdk_key_create

    envs()
    return Expect(lambda a: sdk_key_create(actor=a, environment="staging", name="billing-svc"), "sdk_key.created",
                  "sdk_key", lambda result: result[0].prefix, environment="staging", before=None,
                  after={"name": "billing-svc", "environment": "staging"})


@service_scenario("sdk_key_revoke")
def _sdk_key_revoke() -> Expect:
    from rollout.access.keys import sdk_key_create, sdk_key_revoke

    envs()
    key, _ = sdk_key_create(actor=SETUP, environment="staging", name="billing-svc")
    return Expect(lambda a: sdk_key_revoke(actor=a, prefix=key.prefix, reason="leaked"), "sdk_key.revoked",
                  "sdk_key", key.prefix, environment="staging", before={"revoked": False}, after={"revoked": True})


@service_scenario("api_token_create")
def _api_token_create() -> Expect:
    from rollout.access.keys import api_token_create

    user()
    return Expect(lambda a: api_token_create(actor=a, username="dana", name="ci"), "api_token.created", "api_token",
                  lambda result: result[0].prefix, before=None, after={"name": "ci", "user": "dana"})


@service_scenario("api_token_revoke")
def _api_token_revoke() -> Expect:
    from rollout.access.keys import api_token_create, api_token_revoke

    user()
    token, _ = api_token_create(actor=SETUP, username="dana", name="ci")
    return Expect(lambda a: api_token_revoke(actor=a, prefix=token.prefix), "api_token.revoked", "api_token",
                  token.prefix, before={"revoked": False}, after={"revoked": True, "user": "dana"})


@service_scenario("user_create")
def _user_create() -> Expect:
    from rollout.access.users import user_create

    return Expect(lambda a: user_create(actor=a, username="erin", password=None, roles=["compliance"]),
                  "user.created", "user", "erin", before=None,
                  after={"username": "erin", "roles": ["compliance"], "is_superuser": False})


@service_scenario("user_update_roles")
def _user_update_roles() -> Expect:
    from rollout.access.users import user_update_roles

    user()
    return Expect(lambda a: user_update_roles(actor=a, username="dana", roles=["approver"], reason="promoted"),
                  "user.roles_changed", "user", "dana", before={"roles": ["editor"]}, after={"roles": ["approver"]})


@service_scenario("user_deactivate")
def _user_deactivate() -> Expect:
    from rollout.access.keys import api_token_create
    from rollout.access.users import user_deactivate

    user()
    api_token_create(actor=SETUP, username="dana", name="ci")
    return Expect(lambda a: user_deactivate(actor=a, username="dana", reason="left"), "user.deactivated", "user",
                  "dana", before={"is_active": True}, after={"is_active": False, "tokens_revoked": 1})


# --- cohorts ------------------------------------------------------------------------------------------


@service_scenario("cohort_create")
def _cohort_create() -> Expect:
    from cohorts.services import cohort_create

    return Expect(lambda a: cohort_create(actor=a, key="pilot", name="Pilot", match_on="tenant_id"),
                  "cohort.created", "cohort", "pilot", before=None, after={"key": "pilot", "match_on": "tenant_id"})


@service_scenario("cohort_update")
def _cohort_update() -> Expect:
    from cohorts.services import cohort_update

    cohort()
    return Expect(lambda a: cohort_update(actor=a, key="pilot", version=1, name="Pilot EU"), "cohort.updated",
                  "cohort", "pilot", before={"name": "Pilot"}, after={"name": "Pilot EU"})


@service_scenario("cohort_delete")
def _cohort_delete() -> Expect:
    from cohorts.services import cohort_delete

    cohort()
    return Expect(lambda a: cohort_delete(actor=a, key="pilot"), "cohort.deleted", "cohort", "pilot",
                  before={"key": "pilot", "members": 0}, after=None)


@service_scenario("cohort_members_add")
def _cohort_members_add() -> Expect:
    from cohorts.services import cohort_members_add

    cohort()
    return Expect(lambda a: cohort_members_add(actor=a, key="pilot", subjects=["u1", "u2"]), "cohort.members_added",
                  "cohort", "pilot", before=None, after={"kind": "include", "added": 2, "sample": ["u1", "u2"]})


@service_scenario("cohort_members_remove")
def _cohort_members_remove() -> Expect:
    from cohorts.services import cohort_members_add, cohort_members_remove

    cohort()
    cohort_members_add(actor=SETUP, key="pilot", subjects=["u1", "u2"])
    return Expect(lambda a: cohort_members_remove(actor=a, key="pilot", subjects=["u1"]), "cohort.members_removed",
                  "cohort", "pilot", before={"removed": 1, "sample": ["u1"]}, after={"version": 3})


@service_scenario("cohort_members_change")
def _cohort_members_change() -> Expect:
    from cohorts.services import cohort_members_add, cohort_members_change

    cohort()
    cohort_members_add(actor=SETUP, key="pilot", subjects=["u1", "u2"])
    return Expect(lambda a: cohort_members_change(actor=a, key="pilot", add=["u3"], remove=["u1"]),
                  "cohort.members_changed", "cohort", "pilot", before={"removed": 1, "sample": ["u1"]},
                  after={"added": 1, "sample": ["u3"]})


# --- audit: exports and sign-ins ------------------------------------------------------------------------


@service_scenario("audit_export_create")
def _audit_export_create() -> Expect:
    from audit.services import audit_export_create

    flag()
    return Expect(lambda a: audit_export_create(actor=a, format="csv", filters={"object_type": "flag"}),
                  "audit.exported", "audit_export", lambda export: str(export.pk), before=None,
                  after={"format": "csv", "filters": {"object_type": "flag"}, "count": 1, "background": False})


@service_scenario("auth_login_recorded")
def _auth_login_recorded() -> Expect:
    from audit.services import auth_login_recorded

    return Expect(lambda a: auth_login_recorded(actor=a, username="dana", remote_addr="127.0.0.1"), "auth.login",
                  "user", "dana", before=None, after={"remote_addr": "127.0.0.1"})


@service_scenario("auth_login_failed_recorded")
def _auth_login_failed_recorded() -> Expect:
    from audit.services import auth_login_failed_recorded

    return Expect(lambda a: auth_login_failed_recorded(actor=a, username="x" * 80), "auth.login_failed", "user",
                  "x" * 64, before=None, after={"username_truncated": True})


@service_scenario("auth_login_failed_burst_recorded")
def _auth_login_failed_burst_recorded() -> Expect:
    from datetime import timedelta

    from django.utils import timezone

    from audit.services import auth_login_failed_burst_recorded, auth_login_failed_recorded
    from common.conf import get_setting

    earlier = timezone.now() - timedelta(seconds=2 * get_setting("LOGIN_AUDIT_WINDOW"))
    for _ in range(get_setting("LOGIN_AUDIT_INDIVIDUAL") + 2):  # two more than get events of their own
        auth_login_failed_recorded(actor=Actor.anonymous(), username="dana", remote_addr="192.0.2.1", now=earlier)
    return Expect(lambda a: auth_login_failed_burst_recorded(actor=a), "auth.login_failed_burst", "user", "*",
                  before=None, after={"count": 2, "usernames": {"dana": get_setting("LOGIN_AUDIT_INDIVIDUAL") + 2}})


@service_scenario("auth_logout_recorded")
def _auth_logout_recorded() -> Expect:
    from audit.services import auth_logout_recorded

    return Expect(lambda a: auth_logout_recorded(actor=a, username="dana"), "auth.logout", "user", "dana",
                  before=None)


# --- write endpoints ------------------------------------------------------------------------------------


@dataclass
class Api:
    """An admin with an API token; ``headers`` authenticate as it (its actor label is ``actor``)."""

    client: Any
    token: str
    actor: str
    password: str = "correct horse battery staple 9"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def login(self, username: str = "root") -> str:
        """Sign the client in by session, as the web UI is used; returns that person's actor label.

        ``force_login`` is not a sign-in (no ``auth.login`` event), and it happens during setup anyway.
        """
        self.client.force_login(user_model().objects.get(username=username))
        return username


@dataclass
class EndpointExpect:
    """One request; ``action`` None means the endpoint changes nothing and must leave no event."""

    method: str
    path: str
    data: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    action: str | None = None
    object_type: str = ""
    object_key: str | Callable[[Any], str] = ""
    actor: str = ""
    form: bool = False  # send as an HTML form (the UI) instead of JSON
    reason: str = ""  # for action None: why this write endpoint records nothing
    # For action None: tables (model labels) it may still write, as bookkeeping rather than a change
    # (a key's last-used time, the session); every other row must stay as it was.
    touches: tuple[str, ...] = ()


EndpointScenario = Callable[[Api], EndpointExpect]
# (URL name, or the route when unnamed; HTTP method) -> scenario
ENDPOINT_SCENARIOS: dict[tuple[str, str], EndpointScenario] = {}


def endpoint_scenario(route: str, method: str) -> Callable[[EndpointScenario], EndpointScenario]:
    def register(fn: EndpointScenario) -> EndpointScenario:
        assert (route, method) not in ENDPOINT_SCENARIOS, f"two scenarios for {method} {route}"
        ENDPOINT_SCENARIOS[(route, method)] = fn
        return fn

    return register


@endpoint_scenario("login", "POST")
def _login(api: Api) -> EndpointExpect:
    return EndpointExpect("POST", "/login/", {"username": "root", "password": api.password}, status=302, form=True,
                          action="auth.login", object_type="user", object_key="root", actor="root")


@endpoint_scenario("login", "PUT")
def _login_put(api: Api) -> EndpointExpect:
    return EndpointExpect("PUT", "/login/", "username=root", status=200, form=True,
                          reason="LoginView answers PUT like POST, but Django parses no form body for PUT: the form "
                                 "is empty and nobody signs in")


@endpoint_scenario("logout", "POST")
def _logout(api: Api) -> EndpointExpect:
    api.client.post("/login/", {"username": "root", "password": api.password})
    return EndpointExpect("POST", "/logout/", {}, status=302, form=True, action="auth.logout", object_type="user",
                          object_key="root", actor="root")


@endpoint_scenario("audit-export", "GET")
def _audit_export(api: Api) -> EndpointExpect:
    return EndpointExpect("GET", "/api/v1/audit/export?format=jsonl&action=user.created", headers=api.headers,
                          action="audit.exported", object_type="audit_export",
                          object_key=lambda response: response["X-Audit-Export-Id"], actor=api.actor)


@endpoint_scenario("audit-evidence", "GET")
def _audit_evidence(api: Api) -> EndpointExpect:
    flag()
    return EndpointExpect("GET", "/api/v1/audit/evidence/workload/billing", headers=api.headers,
                          action="audit.evidence_exported", object_type="audit_export",
                          object_key=lambda response: response["X-Audit-Export-Id"], actor=api.actor)


# --- the management API (rollout/api, cohorts/api) ------------------------------------------------------


def _json(method: str, path: str, data: Any, status: int, api: Api, action: str, object_type: str,
          object_key: str | Callable[[Any], str], **headers: str) -> EndpointExpect:
    return EndpointExpect(method, path, data, status=status, headers={**api.headers, **headers}, action=action,
                          object_type=object_type, object_key=object_key, actor=api.actor)


@endpoint_scenario("environment-list", "POST")
def _environment_list_post(api: Api) -> EndpointExpect:
    return _json("POST", "/api/v1/environments/", {"key": "qa", "name": "QA"}, 201, api, "environment.created",
                 "environment", "qa")


@endpoint_scenario("environment-detail", "PATCH")
def _environment_detail_patch(api: Api) -> EndpointExpect:
    envs()
    return _json("PATCH", "/api/v1/environments/staging/", {"name": "Stage"}, 200, api, "environment.updated",
                 "environment", "staging")


@endpoint_scenario("workload-list", "POST")
def _workload_list_post(api: Api) -> EndpointExpect:
    return _json("POST", "/api/v1/workloads/", {"key": "billing", "name": "Billing"}, 201, api, "workload.created",
                 "workload", "billing")


@endpoint_scenario("workload-detail", "PATCH")
def _workload_detail_patch(api: Api) -> EndpointExpect:
    from rollout.services.workloads import workload_create

    workload_create(actor=SETUP, key="billing", name="Billing")
    return _json("PATCH", "/api/v1/workloads/billing/", {"name": "Invoicing", "version": 1}, 200, api,
                 "workload.updated", "workload", "billing")


@endpoint_scenario("workload-detail", "DELETE")
def _workload_detail_delete(api: Api) -> EndpointExpect:
    from rollout.services.workloads import workload_create

    workload_create(actor=SETUP, key="billing", name="Billing")
    return _json("DELETE", "/api/v1/workloads/billing/?reason=unused", None, 204, api, "workload.deleted",
                 "workload", "billing", **{"If-Match": '"1"'})


@endpoint_scenario("flag-list", "POST")
def _flag_list_post(api: Api) -> EndpointExpect:
    from rollout.services.workloads import workload_create

    envs()
    workload_create(actor=SETUP, key="billing", name="Billing")
    return _json("POST", "/api/v1/flags/", {"key": "invoice-engine", "workload": "billing"}, 201, api,
                 "flag.created", "flag", "invoice-engine")


@endpoint_scenario("flag-detail", "PATCH")
def _flag_detail_patch(api: Api) -> EndpointExpect:
    flag()
    return _json("PATCH", "/api/v1/flags/invoice-engine/", {"description": "new engine"}, 200, api, "flag.updated",
                 "flag", "invoice-engine")


@endpoint_scenario("flag-detail", "DELETE")
def _flag_detail_delete(api: Api) -> EndpointExpect:
    flag()
    return _json("DELETE", "/api/v1/flags/invoice-engine/?reason=done", None, 204, api, "flag.deleted", "flag",
                 "invoice-engine")


STATE_URL = "/api/v1/flags/invoice-engine/states/staging/"


@endpoint_scenario("flag-state-detail", "PATCH")
def _flag_state_detail_patch(api: Api) -> EndpointExpect:
    flag()
    return _json("PATCH", STATE_URL, {"version": 1, "enabled": True, "percentage": 5}, 200, api,
                 "flag_state.updated", "flag_state", "invoice-engine@staging")


@endpoint_scenario("flag-state-kill", "POST")
def _flag_state_kill_post(api: Api) -> EndpointExpect:
    flag_on()
    return _json("POST", STATE_URL + "kill/", {"reason": "errors"}, 200, api, "flag_state.killed", "flag_state",
                 "invoice-engine@staging")


@endpoint_scenario("flag-state-resume", "POST")
def _flag_state_resume_post(api: Api) -> EndpointExpect:
    from rollout.services.flags import flag_state_kill

    flag_on()
    flag_state_kill(actor=SETUP, flag="invoice-engine", environment="staging")
    return _json("POST", STATE_URL + "resume/", {"version": 3}, 200, api, "flag_state.resumed", "flag_state",
                 "invoice-engine@staging")


@endpoint_scenario("flag-state-retire", "POST")
def _flag_state_retire_post(api: Api) -> EndpointExpect:
    flag_on(100)
    return _json("POST", STATE_URL + "retire/", {"version": 2}, 200, api, "flag_state.retired", "flag_state",
                 "invoice-engine@staging")


@endpoint_scenario("sdk-key-list", "POST")
def _sdk_key_list_post(api: Api) -> EndpointExpect:
    envs()
    return _json("POST", "/api/v1/sdk-keys/", {"environment": "staging", "name": "billing-svc"}, 201, api,
                 "sdk_key.created", "sdk_key", lambda response: response.json()["prefix"])


@endpoint_scenario("sdk-key-revoke", "POST")
def _sdk_key_revoke_post(api: Api) -> EndpointExpect:
    from rollout.access.keys import sdk_key_create

    envs()
    key, _ = sdk_key_create(actor=SETUP, environment="staging", name="billing-svc")
    return _json("POST", f"/api/v1/sdk-keys/{key.prefix}/revoke/", {"reason": "leaked"}, 200, api,
                 "sdk_key.revoked", "sdk_key", key.prefix)


@endpoint_scenario("api-token-list", "POST")
def _api_token_list_post(api: Api) -> EndpointExpect:
    return _json("POST", "/api/v1/tokens/", {"name": "script"}, 201, api, "api_token.created", "api_token",
                 lambda response: response.json()["prefix"])


@endpoint_scenario("api-token-revoke", "POST")
def _api_token_revoke_post(api: Api) -> EndpointExpect:
    from rollout.access.keys import api_token_create

    token, _ = api_token_create(actor=SETUP, username="root", name="old")
    return _json("POST", f"/api/v1/tokens/{token.prefix}/revoke/", {}, 200, api, "api_token.revoked", "api_token",
                 token.prefix)


@endpoint_scenario("user-list", "POST")
def _user_list_post(api: Api) -> EndpointExpect:
    return _json("POST", "/api/v1/users/", {"username": "ci-bot", "roles": ["editor"]}, 201, api, "user.created",
                 "user", "ci-bot")


@endpoint_scenario("user-detail", "PATCH")
def _user_detail_patch(api: Api) -> EndpointExpect:
    user()
    return _json("PATCH", "/api/v1/users/dana/", {"roles": ["viewer", "compliance"]}, 200, api,
                 "user.roles_changed", "user", "dana")


@endpoint_scenario("user-deactivate", "POST")
def _user_deactivate_post(api: Api) -> EndpointExpect:
    user()
    return _json("POST", "/api/v1/users/dana/deactivate/", {"reason": "left"}, 200, api, "user.deactivated", "user",
                 "dana")


@endpoint_scenario("cohort-list", "POST")
def _cohort_list_post(api: Api) -> EndpointExpect:
    return _json("POST", "/api/v1/cohorts/", {"key": "pilot", "name": "Pilot"}, 201, api, "cohort.created",
                 "cohort", "pilot")


@endpoint_scenario("cohort-detail", "PATCH")
def _cohort_detail_patch(api: Api) -> EndpointExpect:
    cohort()
    return _json("PATCH", "/api/v1/cohorts/pilot/", {"name": "Pilot EU", "version": 1}, 200, api, "cohort.updated",
                 "cohort", "pilot")


@endpoint_scenario("cohort-detail", "DELETE")
def _cohort_detail_delete(api: Api) -> EndpointExpect:
    cohort()
    return _json("DELETE", "/api/v1/cohorts/pilot/", None, 204, api, "cohort.deleted", "cohort", "pilot",
                 **{"If-Match": '"1"'})


@endpoint_scenario("cohort-members", "POST")
def _cohort_members_post(api: Api) -> EndpointExpect:
    cohort()
    return _json("POST", "/api/v1/cohorts/pilot/members/", {"add": ["t1", "t2"], "kind": "include"}, 200, api,
                 "cohort.members_changed", "cohort", "pilot")


# --- rollouts: plans, stages, guardrails, known differences, change requests, reviews ----------------

STAGES = [{"name": "validate", "percentage": 0, "compare_percentage": 10},
          {"name": "5%", "percentage": 5, "compare_percentage": 5},
          {"name": "100%", "percentage": 100, "compare_percentage": 1}]


def planned(*environments: str) -> None:
    """invoice-engine with a three-stage plan in the given environments (default: staging)."""
    from rollout.plans.stages import plan_set

    flag()
    for env in environments or ("staging",):
        plan_set(actor=SETUP, flag="invoice-engine", environment=env, version=None, stages=STAGES)


def advanced(environment: str = "staging") -> None:
    from rollout.plans.stages import rollout_advance

    planned(environment)
    rollout_advance(actor=SETUP, flag="invoice-engine", environment=environment)


def mismatch_group() -> Any:
    from common import clock
    from rollout.models import FlagState, MismatchGroup

    advanced()
    now = clock.now()
    return MismatchGroup.objects.create(
        flag_state=FlagState.objects.get(flag__key="invoice-engine", environment__key="staging"),
        fingerprint="f" * 64, shape=[["$.total", "changed", "int", "int"]], example={}, count=3, first_seen=now,
        last_seen=now)


def pending_change_request() -> Any:
    """ed (editor) asks to start the plan in production, which needs approval; ann (approver) may decide."""
    from actions.submit import submit_state

    planned("production")
    user("ed", ("editor",))
    user("ann", ("approver",))
    ed = Actor.for_user(user_model().objects.get(username="ed"))
    return submit_state(actor=ed, flag="invoice-engine", environment="production", action="advance",
                                 params={}, version=None, reason="start").change_request


def user_model() -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model()


@service_scenario("plan_set")
def _plan_set() -> Expect:
    from rollout.plans.stages import plan_set

    flag()
    return Expect(lambda a: plan_set(actor=a, flag="invoice-engine", environment="staging", version=1, stages=STAGES),
                  "flag_state.plan_set", "flag_state", "invoice-engine@staging", environment="staging",
                  before={"version": 1, "plan": []},
                  after={"version": 2, "stage": 0})


@service_scenario("rollout_advance")
def _rollout_advance() -> Expect:
    from rollout.plans.stages import rollout_advance

    planned()
    return Expect(lambda a: rollout_advance(actor=a, flag="invoice-engine", environment="staging", version=2),
                  "flag_state.advanced", "flag_state", "invoice-engine@staging", environment="staging",
                  before={"stage": 0, "enabled": False, "version": 2},
                  after={"stage": 1, "enabled": True, "compare_percentage": 10.0, "version": 3, "from_stage": None,
                         "to_stage": {"position": 1, "name": "validate"}})


@service_scenario("rollout_pause")
def _rollout_pause() -> Expect:
    from rollout.plans.stages import rollout_pause

    advanced()
    return Expect(lambda a: rollout_pause(actor=a, flag="invoice-engine", environment="staging", reason="look"),
                  "flag_state.paused", "flag_state", "invoice-engine@staging", environment="staging",
                  before={"paused": False, "stage": 1}, after={"paused": True, "stage": 1})


@service_scenario("rollout_rollback")
def _rollout_rollback() -> Expect:
    from rollout.plans.stages import rollout_advance, rollout_rollback

    advanced()
    rollout_advance(actor=SETUP, flag="invoice-engine", environment="staging")
    return Expect(lambda a: rollout_rollback(actor=a, flag="invoice-engine", environment="staging", reason="errors"),
                  "flag_state.rolled_back", "flag_state", "invoice-engine@staging", environment="staging",
                  before={"stage": 2, "percentage": 5.0, "paused": False},
                  after={"stage": 1, "percentage": 0.0, "paused": True,
                         "from_stage": {"position": 2, "name": "5%"}, "to_stage": {"position": 1, "name": "validate"}})


@service_scenario("guardrail_set")
def _guardrail_set() -> Expect:
    from rollout.plans.guardrails import guardrail_set

    planned()
    return Expect(lambda a: guardrail_set(actor=a, flag="invoice-engine", environment="staging", version=2,
                                          max_error_rate=2, action="rollback"),
                  "flag_state.guardrails_set", "flag_state", "invoice-engine@staging", environment="staging",
                  before={"guardrail": None, "version": 2},
                  after={"version": 3})


@service_scenario("feedback_rule_set")
def _feedback_rule_set() -> Expect:
    from rollout.feedback.services import feedback_rule_set

    planned()
    return Expect(lambda a: feedback_rule_set(actor=a, flag="invoice-engine", environment="staging", version=2,
                                              max_score_drop="0.5", min_responses=10),
                  "flag_state.feedback_rule_set", "flag_state", "invoice-engine@staging", environment="staging",
                  before={"feedback_rule": None, "version": 2},
                  after={"version": 3, "feedback_rule": {"max_score_drop": 0.5, "min_responses": 10, "window_days": 14}})


@service_scenario("mismatch_group_mark_known")
def _mismatch_group_mark_known() -> Expect:
    from rollout.telemetry.mismatches import mismatch_group_mark_known

    group = mismatch_group()
    return Expect(lambda a: mismatch_group_mark_known(actor=a, flag="invoice-engine", environment="staging",
                                                      group=group.pk, reason="rounding differs, expected"),
                  "mismatch_group.known", "mismatch_group", f"invoice-engine@staging#{group.pk}",
                  environment="staging", before={"id": group.pk, "known": False, "known_reason": ""},
                  after={"id": group.pk, "known": True, "known_reason": "rounding differs, expected",
                         "flag": "invoice-engine"})


@service_scenario("submit_state")
def _submit_state() -> Expect:
    from actions.submit import submit_state

    planned("production")
    user("ed", ("editor",))
    return Expect(lambda a: submit_state(actor=a, flag="invoice-engine", environment="production",
                                                  action="advance", params={}, version=2, reason="start"),
                  "change_request.created", "change_request", lambda result: str(result.change_request.pk),
                  environment="production", before=None,
                  after={"action": "flag_state.advanced", "status": "pending", "requested_by": "ed", "based_on_version": 2},
                  user="ed")


@service_scenario("change_request_approve")
def _change_request_approve() -> Expect:
    from actions.submit import change_request_approve

    cr = pending_change_request()
    # Approving applies the change: the one event is the change itself, carrying the approval.
    return Expect(lambda a: change_request_approve(actor=a, change_request=cr.pk, reason="fine"),
                  "flag_state.advanced", "flag_state", "invoice-engine@production", environment="production",
                  before={"stage": 0, "version": 2},
                  after={"stage": 1, "version": 3,
                         "approval": {"change_request": cr.pk, "requested_by": "ed", "approved_by": "ann"}},
                  user="ann")


@service_scenario("change_request_reject")
def _change_request_reject() -> Expect:
    from actions.submit import change_request_reject

    cr = pending_change_request()
    return Expect(lambda a: change_request_reject(actor=a, change_request=cr.pk, reason="not now"),
                  "change_request.rejected", "change_request", str(cr.pk), environment="production",
                  before={"status": "pending"},
                  after={"status": "rejected", "decided_by": "ann", "decision_reason": "not now"}, user="ann")


@service_scenario("change_request_cancel")
def _change_request_cancel() -> Expect:
    from actions.submit import change_request_cancel

    cr = pending_change_request()
    return Expect(lambda a: change_request_cancel(actor=a, change_request=cr.pk, reason="wrong env"),
                  "change_request.cancelled", "change_request", str(cr.pk), environment="production",
                  before={"status": "pending"},
                  after={"status": "cancelled", "decided_by": "ed", "decision_reason": "wrong env"}, user="ed")


def break_glass_review_item() -> Any:
    """ed rolls back a high-risk workload's rollout: break-glass, so a review item is opened."""
    from rollout.models import ReviewItem
    from rollout.plans.stages import rollout_rollback
    from rollout.services.workloads import workload_update

    advanced()
    workload_update(actor=SETUP, key="billing", risk="high")
    user("ed", ("editor",))
    user("ann", ("approver",))
    ed = Actor.for_user(user_model().objects.get(username="ed"))
    rollout_rollback(actor=ed, flag="invoice-engine", environment="staging", reason="bad")
    return ReviewItem.objects.get()


@service_scenario("review_item_acknowledge")
def _review_item_acknowledge() -> Expect:
    from actions.submit import review_item_acknowledge

    item = break_glass_review_item()
    return Expect(lambda a: review_item_acknowledge(actor=a, review_item=item.pk, note="valid"),
                  "review_item.acknowledged", "review_item", str(item.pk), environment="staging", before=None,
                  after={"id": item.pk, "action": "rollback", "audit_sequence": item.audit_sequence,
                         "broken_by": "ed", "note": "valid"}, user="ann")


@endpoint_scenario("rollout-stages", "PUT")
def _rollout_stages_put(api: Api) -> EndpointExpect:
    flag()
    return _json("PUT", STATE_URL + "stages/", {"version": 1, "stages": STAGES}, 200, api, "flag_state.plan_set",
                 "flag_state", "invoice-engine@staging")


@endpoint_scenario("rollout-advance", "POST")
def _rollout_advance_post(api: Api) -> EndpointExpect:
    planned()
    return _json("POST", STATE_URL + "advance/", {"version": 2}, 200, api, "flag_state.advanced", "flag_state",
                 "invoice-engine@staging")


@endpoint_scenario("rollout-pause", "POST")
def _rollout_pause_post(api: Api) -> EndpointExpect:
    advanced()
    return _json("POST", STATE_URL + "pause/", {"reason": "look", "version": 3}, 200, api, "flag_state.paused", "flag_state",
                 "invoice-engine@staging")


@endpoint_scenario("rollout-rollback", "POST")
def _rollout_rollback_post(api: Api) -> EndpointExpect:
    advanced()
    return _json("POST", STATE_URL + "rollback/", {"reason": "errors", "version": 3}, 200, api, "flag_state.rolled_back",
                 "flag_state", "invoice-engine@staging")


@endpoint_scenario("rollout-guardrails", "PUT")
def _rollout_guardrails_put(api: Api) -> EndpointExpect:
    planned()
    return _json("PUT", STATE_URL + "guardrails/", {"version": 2, "max_error_rate": 2}, 200, api,
                 "flag_state.guardrails_set", "flag_state", "invoice-engine@staging")


@endpoint_scenario("rollout-feedback-rule", "PUT")
def _rollout_feedback_rule_put(api: Api) -> EndpointExpect:
    planned()
    return _json("PUT", STATE_URL + "feedback/rule/", {"version": 2, "max_score_drop": 0.5}, 200, api,
                 "flag_state.feedback_rule_set", "flag_state", "invoice-engine@staging")


@endpoint_scenario("rollout-mismatch-known", "POST")
def _rollout_mismatch_known_post(api: Api) -> EndpointExpect:
    group = mismatch_group()
    return _json("POST", STATE_URL + f"mismatches/{group.pk}/known/", {"reason": "rounding"}, 200, api,
                 "mismatch_group.known", "mismatch_group", f"invoice-engine@staging#{group.pk}")


@endpoint_scenario("change-requests", "POST")
def _change_requests_post(api: Api) -> EndpointExpect:
    planned("production")
    # root is an admin: the change applies at once, and its event is the change itself.
    return _json("POST", "/api/v1/change-requests/", {"flag": "invoice-engine", "environment": "production",
                                                      "action": "advance", "params": {}, "version": 2}, 200, api,
                 "flag_state.advanced", "flag_state", "invoice-engine@production")


@endpoint_scenario("change-request-approve", "POST")
def _change_request_approve_post(api: Api) -> EndpointExpect:
    cr = pending_change_request()
    return _json("POST", f"/api/v1/change-requests/{cr.pk}/approve/", {"reason": "fine"}, 200, api,
                 "flag_state.advanced", "flag_state", "invoice-engine@production")


@endpoint_scenario("change-request-reject", "POST")
def _change_request_reject_post(api: Api) -> EndpointExpect:
    cr = pending_change_request()
    return _json("POST", f"/api/v1/change-requests/{cr.pk}/reject/", {"reason": "no"}, 200, api,
                 "change_request.rejected", "change_request", str(cr.pk))


@endpoint_scenario("change-request-cancel", "POST")
def _change_request_cancel_post(api: Api) -> EndpointExpect:
    from rollout.access.keys import api_token_create

    cr = pending_change_request()
    # Only the requester may withdraw a request: ed cancels with his own token.
    token, secret = api_token_create(actor=SETUP, username="ed", name="ed-cli")
    return EndpointExpect("POST", f"/api/v1/change-requests/{cr.pk}/cancel/", {"reason": "wrong env"},
                          headers={"Authorization": f"Bearer {secret}"}, action="change_request.cancelled",
                          object_type="change_request", object_key=str(cr.pk), actor=f"ed via {token.prefix}")


@endpoint_scenario("review-item-acknowledge", "POST")
def _review_item_acknowledge_post(api: Api) -> EndpointExpect:
    item = break_glass_review_item()
    return _json("POST", f"/api/v1/review-items/{item.pk}/acknowledge/", {"reason": "valid"}, 200, api,
                 "review_item.acknowledged", "review_item", str(item.pk))


# --- SDK and OFREP: POSTs that read (evaluations) or report telemetry; neither changes configuration ---


def _sdk_headers() -> dict[str, str]:
    from rollout.access.keys import sdk_key_create

    flag_on()
    _, secret = sdk_key_create(actor=SETUP, environment="staging", name="billing-svc")
    return {"Authorization": f"Bearer {secret}"}


EVALUATION = "an evaluation: reads the ruleset and answers, changes nothing"
KEY_USED = ("rollout.SdkKey",)  # the SDK key's last-used time
CONTEXT = {"key": "t1", "attributes": {"tenant_id": "t1"}}


@endpoint_scenario("sdk-evaluate", "POST")
def _sdk_evaluate(api: Api) -> EndpointExpect:
    return EndpointExpect("POST", "/api/v1/sdk/evaluate", {"flag": "invoice-engine", "context": CONTEXT},
                          headers=_sdk_headers(), reason=EVALUATION, touches=KEY_USED)


@endpoint_scenario("sdk-evaluate-bulk", "POST")
def _sdk_evaluate_bulk(api: Api) -> EndpointExpect:
    return EndpointExpect("POST", "/api/v1/sdk/evaluate/bulk", {"context": CONTEXT}, headers=_sdk_headers(),
                          reason=EVALUATION, touches=KEY_USED)


@endpoint_scenario("ofrep-evaluate-flag", "POST")
def _ofrep_evaluate_flag(api: Api) -> EndpointExpect:
    return EndpointExpect("POST", "/ofrep/v1/evaluate/flags/invoice-engine", {"context": {"targetingKey": "t1"}},
                          headers=_sdk_headers(), reason=EVALUATION, touches=KEY_USED)


@endpoint_scenario("ofrep-evaluate-flags", "POST")
def _ofrep_evaluate_flags(api: Api) -> EndpointExpect:
    return EndpointExpect("POST", "/ofrep/v1/evaluate/flags", {"context": {"targetingKey": "t1"}},
                          headers=_sdk_headers(), reason=EVALUATION, touches=KEY_USED)


@endpoint_scenario("sdk-metrics", "POST")
def _sdk_metrics(api: Api) -> EndpointExpect:
    batch = {"sdk": {"name": "turnout-python", "version": "0.1.0"},
             "window": {"start": "2026-11-26T10:00:00Z", "end": "2026-11-26T10:00:10Z"},
             "flags": [], "mismatch_samples": [], "breaker_events": [], "dropped": {}}
    return EndpointExpect("POST", "/api/v1/sdk/metrics", batch, status=202, headers=_sdk_headers(),
                          reason="telemetry from services (call counts, latencies, mismatches), not a change to "
                                 "configuration; what it triggers (a guardrail pause) is audited by that service",
                          touches=KEY_USED)


@endpoint_scenario("sdk-feedback", "POST")
def _sdk_feedback(api: Api) -> EndpointExpect:
    batch = {"feedback": [{"flag": "invoice-engine", "key": "t1", "path": "parallel", "score": 4,
                           "comment": "faster than before"}]}
    return EndpointExpect("POST", "/api/v1/sdk/feedback", batch, status=202, headers=_sdk_headers(),
                          reason="feedback from the subjects of services (telemetry, like metrics), not a change to "
                                 "configuration; the readiness rule that judges it is set through an audited action",
                          touches=(*KEY_USED, "feedback.Feedback"))


# --- the web UI (config/ui_urls.py): form posts by a person signed in by session ---------------------
#
# Their actor is the person's username (no token). Posts the page sends through htmx carry HX-Request
# and get the fragment back (200); plain form posts get a redirect (302).

HTMX = {"HX-Request": "true"}
UI_STATE = "/flags/invoice-engine/staging/"


def _ui(api: Api, path: str, data: Any, action: str | None, object_type: str = "",
        object_key: str | Callable[[Any], str] = "", *, status: int = 200, htmx: bool = True, user: str = "root",
        reason: str = "", touches: tuple[str, ...] = ()) -> EndpointExpect:
    return EndpointExpect("POST", path, data, status=status, headers=HTMX if htmx else {}, action=action,
                          object_type=object_type, object_key=object_key, actor=api.login(user), form=True,
                          reason=reason, touches=touches)


def _state(api: Api, name: str, data: dict[str, Any], action: str) -> EndpointExpect:
    return _ui(api, UI_STATE + f"{name}/", data, action, "flag_state", "invoice-engine@staging")


@endpoint_scenario("switch-environment", "POST")
def _ui_switch_environment(api: Api) -> EndpointExpect:
    envs()
    return _ui(api, "/environment/", {"environment": "production", "next": "/flags/"}, None, status=302,
               htmx=False, reason="remembers which environment the person is looking at, in their session; "
                                  "no configuration changes", touches=("sessions.Session",))


@endpoint_scenario("workload-create", "POST")
def _ui_workload_create(api: Api) -> EndpointExpect:
    return _ui(api, "/workloads/new/", {"key": "billing", "name": "Billing", "risk": "medium",
                                        "phase": "development", "reversibility": "stateless"},
               "workload.created", "workload", "billing", status=302, htmx=False)


@endpoint_scenario("workload-update", "POST")
def _ui_workload_update(api: Api) -> EndpointExpect:
    from rollout.services.workloads import workload_create

    workload_create(actor=SETUP, key="billing", name="Billing")
    return _ui(api, "/workloads/billing/edit/", {"name": "Invoicing", "risk": "high", "phase": "pilot",
                                                 "reversibility": "stateless", "version": 1, "reason": "money"},
               "workload.updated", "workload", "billing")


@endpoint_scenario("flag-create", "POST")
def _ui_flag_create(api: Api) -> EndpointExpect:
    from rollout.services.workloads import workload_create

    envs()
    workload_create(actor=SETUP, key="billing", name="Billing")
    return _ui(api, "/flags/new/", {"key": "invoice-engine", "workload": "billing", "bucket_by": "tenant_id"},
               "flag.created", "flag", "invoice-engine", status=302, htmx=False)


@endpoint_scenario("state-kill", "POST")
def _ui_state_kill(api: Api) -> EndpointExpect:
    flag_on()
    return _state(api, "kill", {"reason": "errors"}, "flag_state.killed")


@endpoint_scenario("state-resume", "POST")
def _ui_state_resume(api: Api) -> EndpointExpect:
    from rollout.services.flags import flag_state_kill

    flag_on()
    flag_state_kill(actor=SETUP, flag="invoice-engine", environment="staging")
    return _state(api, "resume", {"version": 3}, "flag_state.resumed")


@endpoint_scenario("state-retire", "POST")
def _ui_state_retire(api: Api) -> EndpointExpect:
    flag_on(100)
    return _state(api, "retire", {"version": 2, "reason": "done"}, "flag_state.retired")


@endpoint_scenario("state-percentage", "POST")
def _ui_state_percentage(api: Api) -> EndpointExpect:
    flag()
    return _state(api, "percentage", {"percentage": "5", "version": 1, "reason": "pilot"}, "flag_state.updated")


@endpoint_scenario("state-targeting", "POST")
def _ui_state_targeting(api: Api) -> EndpointExpect:
    flag()
    cohort()
    return _state(api, "targeting", {"include_cohorts": ["pilot"], "overrides": "t1 = parallel", "version": 1},
                  "flag_state.updated")


@endpoint_scenario("state-plan", "POST")
def _ui_state_plan(api: Api) -> EndpointExpect:
    flag()
    return _state(api, "plan", {"template": "standard", "soak_seconds": 3600, "version": 1},
                  "flag_state.plan_set")


@endpoint_scenario("state-advance", "POST")
def _ui_state_advance(api: Api) -> EndpointExpect:
    planned()
    return _state(api, "advance", {"version": 2}, "flag_state.advanced")


@endpoint_scenario("state-pause", "POST")
def _ui_state_pause(api: Api) -> EndpointExpect:
    advanced()
    return _state(api, "pause", {"reason": "look"}, "flag_state.paused")


@endpoint_scenario("state-rollback", "POST")
def _ui_state_rollback(api: Api) -> EndpointExpect:
    advanced()
    return _state(api, "rollback", {"reason": "errors"}, "flag_state.rolled_back")


@endpoint_scenario("state-promote", "POST")
def _ui_state_promote(api: Api) -> EndpointExpect:
    flag()
    return _ui(api, "/flags/invoice-engine/production/promote/", {"from_environment": "staging", "version": 1},
               "flag_state.promoted", "flag_state", "invoice-engine@production")


@endpoint_scenario("state-undo-rollback", "POST")
def _ui_state_undo_rollback(api: Api) -> EndpointExpect:
    from rollout.models import FlagState
    from rollout.plans.stages import rollout_advance, rollout_rollback

    advanced()
    rollout_advance(actor=SETUP, flag="invoice-engine", environment="staging")
    rollout_rollback(actor=SETUP, flag="invoice-engine", environment="staging", reason="errors")
    version = FlagState.objects.get(flag__key="invoice-engine", environment__key="staging").version
    # Undoing the rollback is one advance that also lifts the pause: one event.
    return _state(api, "rollback/undo", {"version": version, "stage": 2}, "flag_state.advanced")


@endpoint_scenario("plan-editor", "POST")
def _ui_plan_editor(api: Api) -> EndpointExpect:
    flag()
    data = {"stages-count": "2", "version": 1, "op": "save", "reason": "custom"}
    for n, (name, pct, soak) in enumerate((("shadow", "0", "1"), ("all", "100", "2"))):
        data |= {f"stages-{n}-name": name, f"stages-{n}-percentage": pct, f"stages-{n}-compare_percentage": "5",
                 f"stages-{n}-soak": soak, f"stages-{n}-soak_unit": "hours", f"stages-{n}-gate": "manual"}
    return _ui(api, UI_STATE + "plan/edit/", data, "flag_state.plan_set", "flag_state", "invoice-engine@staging",
               status=302, htmx=False)


@endpoint_scenario("state-guardrails", "POST")
def _ui_state_guardrails(api: Api) -> EndpointExpect:
    planned()
    return _state(api, "guardrails", {"max_error_rate": "2", "min_sample_size": 100, "window_seconds": 300,
                                      "action": "rollback", "version": 2}, "flag_state.guardrails_set")


@endpoint_scenario("feedback-rule", "POST")
def _ui_feedback_rule(api: Api) -> EndpointExpect:
    planned()
    return _state(api, "feedback-rule", {"max_score_drop": "0.5", "min_responses": 20, "window_days": 14,
                                         "version": 2}, "flag_state.feedback_rule_set")


@endpoint_scenario("change-approve", "POST")
def _ui_change_approve(api: Api) -> EndpointExpect:
    cr = pending_change_request()
    # Approving applies the change: the one event is the change itself, carrying the approval.
    return _ui(api, f"/changes/{cr.pk}/approve/", {"comment": "fine"}, "flag_state.advanced", "flag_state",
               "invoice-engine@production")


@endpoint_scenario("change-reject", "POST")
def _ui_change_reject(api: Api) -> EndpointExpect:
    cr = pending_change_request()
    return _ui(api, f"/changes/{cr.pk}/reject/", {"comment": "not now"}, "change_request.rejected",
               "change_request", str(cr.pk))


@endpoint_scenario("change-cancel", "POST")
def _ui_change_cancel(api: Api) -> EndpointExpect:
    cr = pending_change_request()
    # Only the requester may withdraw a request: ed, signed in, withdraws his own.
    return _ui(api, f"/changes/{cr.pk}/cancel/", {"comment": "wrong env"}, "change_request.cancelled",
               "change_request", str(cr.pk), user="ed")


@endpoint_scenario("cohort-create", "POST")
def _ui_cohort_create(api: Api) -> EndpointExpect:
    return _ui(api, "/cohorts/new/", {"key": "pilot", "name": "Pilot", "match_on": "tenant_id",
                                      "rules": '{"all": [{"attr": "country", "op": "in", "values": ["DE"]}]}'},
               "cohort.created", "cohort", "pilot", status=302, htmx=False)


@endpoint_scenario("cohort-update", "POST")
def _ui_cohort_update(api: Api) -> EndpointExpect:
    cohort()
    return _ui(api, "/cohorts/pilot/edit/", {"name": "Pilot EU", "version": 1, "reason": "scope"},
               "cohort.updated", "cohort", "pilot")


@endpoint_scenario("cohort-members-upload", "POST")
def _ui_cohort_members_upload(api: Api) -> EndpointExpect:
    from django.core.files.uploadedfile import SimpleUploadedFile

    cohort()
    upload = SimpleUploadedFile("members.csv", b"subject\nt1\nt2\n", content_type="text/csv")
    return _ui(api, "/cohorts/pilot/members/", {"file": upload, "kind": "include"}, "cohort.members_added",
               "cohort", "pilot")


@endpoint_scenario("cohort-members-remove", "POST")
def _ui_cohort_members_remove(api: Api) -> EndpointExpect:
    from cohorts.services import cohort_members_add

    cohort()
    cohort_members_add(actor=SETUP, key="pilot", subjects=["t1", "t2"])
    return _ui(api, "/cohorts/pilot/members/remove/", {"subjects": "t1\nt3", "reason": "left"},
               "cohort.members_removed", "cohort", "pilot")


@endpoint_scenario("cohort-test", "POST")
def _ui_cohort_test(api: Api) -> EndpointExpect:
    from cohorts.services import cohort_members_add

    cohort()
    cohort_members_add(actor=SETUP, key="pilot", subjects=["t1"])
    return _ui(api, "/cohorts/pilot/test/", {"key": "t1", "attributes": '{"country": "DE"}'}, None,
               reason="asks whether a subject is in the cohort and why (the SDKs' engine answers); changes nothing")


@endpoint_scenario("cohort-validate-rules", "POST")
def _ui_cohort_validate_rules(api: Api) -> EndpointExpect:
    return _ui(api, "/cohorts/validate-rules/", {"rules": '{"all": [{"attr": "country", "op": "in", '
                                                          '"values": ["DE"]}]}'}, None,
               reason="checks rules while they are typed, before any cohort is saved; changes nothing")


@endpoint_scenario("audit-export-start", "POST")
def _ui_audit_export_start(api: Api) -> EndpointExpect:
    flag()
    # A small range downloads at once: the export is recorded before its first byte is sent.
    return _ui(api, "/audit/export/", {"format": "csv", "object_type": "flag"}, "audit.exported", "audit_export",
               lambda response: response["X-Audit-Export-Id"], htmx=False)


@endpoint_scenario("keys-sdk-create", "POST")
def _ui_keys_sdk_create(api: Api) -> EndpointExpect:
    from rollout.models import SdkKey

    envs()
    return _ui(api, "/keys/sdk/", {"environment": "staging", "name": "billing-svc"}, "sdk_key.created", "sdk_key",
               lambda response: SdkKey.objects.get(name="billing-svc").prefix)


@endpoint_scenario("keys-sdk-revoke", "POST")
def _ui_keys_sdk_revoke(api: Api) -> EndpointExpect:
    from rollout.access.keys import sdk_key_create

    envs()
    key, _ = sdk_key_create(actor=SETUP, environment="staging", name="billing-svc")
    return _ui(api, f"/keys/sdk/{key.prefix}/revoke/", {"reason": "leaked"}, "sdk_key.revoked", "sdk_key",
               key.prefix)


@endpoint_scenario("keys-token-create", "POST")
def _ui_keys_token_create(api: Api) -> EndpointExpect:
    from rollout.models import ApiToken

    user()
    return _ui(api, "/keys/tokens/", {"username": "dana", "name": "deploy"}, "api_token.created", "api_token",
               lambda response: ApiToken.objects.get(name="deploy").prefix)


@endpoint_scenario("keys-token-revoke", "POST")
def _ui_keys_token_revoke(api: Api) -> EndpointExpect:
    from rollout.access.keys import api_token_create

    user()
    token, _ = api_token_create(actor=SETUP, username="dana", name="ci")
    return _ui(api, f"/keys/tokens/{token.prefix}/revoke/", {"reason": "leaked"}, "api_token.revoked",
               "api_token", token.prefix)


# --- audit: background chain verification (the services, the API's POST and the page's button) --------


@service_scenario("audit_verification_start")
def _audit_verification_start() -> Expect:
    from audit.models import AuditChainHead
    from audit.services import audit_verification_start

    flag()
    head = AuditChainHead.objects.get().sequence
    # The job itself is queued on commit (the completeness tests list queued tasks instead of running them).
    return Expect(lambda a: audit_verification_start(actor=a), "audit.verification_started", "audit_verification",
                  lambda verification: str(verification.pk), before=None, after={"head_sequence": head})


@service_scenario("audit_verification_finish")
def _audit_verification_finish() -> Expect:
    from audit.services import audit_verification_finish, audit_verification_start
    from audit.verify import verify_chain

    flag()
    verification = audit_verification_start(actor=SETUP)
    return Expect(lambda a: audit_verification_finish(actor=a, verification_id=verification.pk,
                                                      report=verify_chain()),
                  "audit.verified", "audit_verification", str(verification.pk), before=None,
                  after={"ok": True, "first_bad_sequence": None, "head_sequence": verification.audit_sequence,
                         "requested_by": "system:setup", "requested_at_sequence": verification.audit_sequence})


@endpoint_scenario("audit-verify", "POST")
def _audit_verify_post(api: Api) -> EndpointExpect:
    flag()
    return EndpointExpect("POST", "/api/v1/audit/verify", status=202, headers=api.headers,
                          action="audit.verification_started", object_type="audit_verification",
                          object_key=lambda response: response.json()["id"], actor=api.actor)


@endpoint_scenario("audit-verify-ui", "POST")
def _ui_audit_verify(api: Api) -> EndpointExpect:
    flag()
    # A chain this short (at most TURNOUT_AUDIT_VERIFY_SYNC_MAX events) is checked while the page waits.
    return _ui(api, "/audit/verify/", {}, None, reason="checks a short chain at once and shows the report: reads "
                                                       "every event, changes nothing (a longer chain starts the "
                                                       "background job, recorded as the API's POST above is)")


# --- configuration as code (rollout/api/config.py) ------------------------------------------------------

CONFIG_WORKLOAD = "turnout: 1\nworkloads:\n  - key: billing\n    name: Invoicing\n"


@endpoint_scenario("config-plan", "POST")
def _config_plan_post(api: Api) -> EndpointExpect:
    from rollout.services.workloads import workload_create

    workload_create(actor=SETUP, key="billing", name="Billing")
    return EndpointExpect("POST", "/api/v1/config/plan", {"files": {"workloads.yaml": CONFIG_WORKLOAD}},
                          headers=api.headers, reason="a plan reads only: it changes nothing",
                          touches=("rollout.ApiToken",))  # the token's last-used time


@endpoint_scenario("config-apply", "POST")
def _config_apply_post(api: Api) -> EndpointExpect:
    from actions.config.plan import plan
    from rollout.services.workloads import workload_create

    workload_create(actor=SETUP, key="billing", name="Billing")
    files = {"workloads.yaml": CONFIG_WORKLOAD}
    versions = plan(actor=SETUP, files=files).versions
    return _json("POST", "/api/v1/config/apply", {"files": files, "versions": versions,
                                                  "origin": {"commit": "abc123", "path": "deploy"}}, 200, api,
                 "workload.updated", "workload", "billing")


@endpoint_scenario("rollout-promote", "POST")
def _rollout_promote_post(api: Api) -> EndpointExpect:
    flag()
    return _json("POST", "/api/v1/flags/invoice-engine/states/production/promote/", {"from_environment": "staging"},
                 200, api, "flag_state.promoted", "flag_state", "invoice-engine@production")


# --- the team pages: people, environments, break-glass review --------------------------------------------


@endpoint_scenario("person-create", "POST")
def _ui_person_create(api: Api) -> EndpointExpect:
    return _ui(api, "/people/new/", {"username": "vera", "roles": ["approver"]}, "user.created", "user", "vera")


@endpoint_scenario("person-roles", "POST")
def _ui_person_roles(api: Api) -> EndpointExpect:
    user()
    return _ui(api, "/people/dana/roles/", {"roles": ["approver"], "reason": "lead"}, "user.roles_changed", "user",
               "dana")


@endpoint_scenario("person-deactivate", "POST")
def _ui_person_deactivate(api: Api) -> EndpointExpect:
    user()
    return _ui(api, "/people/dana/deactivate/", {"reason": "left"}, "user.deactivated", "user", "dana")


@endpoint_scenario("environment-create", "POST")
def _ui_environment_create(api: Api) -> EndpointExpect:
    return _ui(api, "/environments/new/", {"key": "qa", "name": "QA", "order": 2, "description": "testers"},
               "environment.created", "environment", "qa")


@endpoint_scenario("environment-update", "POST")
def _ui_environment_update(api: Api) -> EndpointExpect:
    envs()
    return _ui(api, "/environments/staging/edit/", {"name": "Staging", "order": 0, "requires_approval": "on"},
               "environment.updated", "environment", "staging")


@endpoint_scenario("review-acknowledge", "POST")
def _ui_review_acknowledge(api: Api) -> EndpointExpect:
    item = break_glass_review_item()
    return _ui(api, f"/reviews/{item.pk}/acknowledge/", {"note": "checked"}, "review_item.acknowledged",
               "review_item", str(item.pk))


# --- notifications: a person's own subscriptions -----------------------------------------------------------


def subscription(username: str = "dana") -> Any:
    from common.actors import Actor as _Actor
    from notifications.services import subscription_create

    existing = user_model().objects.filter(username=username).first()
    person = existing if existing is not None else user(username)
    return subscription_create(actor=_Actor.for_user(person), channel="email", address="dana@example.org",
                               kinds=["kill_switch.pulled"])


@service_scenario("subscription_create")
def _subscription_create() -> Expect:
    from notifications.services import subscription_create

    user()
    return Expect(lambda a: subscription_create(actor=a, channel="email", address="dana@example.org",
                                                kinds=["kill_switch.pulled"]),
                  "notification.subscribed", "subscription", lambda sub: str(sub.pk), before=None,
                  after={"user": "dana", "channel": "email", "kinds": ["kill_switch.pulled"]}, user="dana")


@service_scenario("subscription_update")
def _subscription_update() -> Expect:
    from notifications.services import subscription_update

    sub = subscription()
    return Expect(lambda a: subscription_update(actor=a, subscription=sub.pk, kinds=["rollout.rolled_back"]),
                  "notification.subscription_changed", "subscription", str(sub.pk),
                  before={"kinds": ["kill_switch.pulled"]}, after={"kinds": ["rollout.rolled_back"]}, user="dana")


@service_scenario("subscription_delete")
def _subscription_delete() -> Expect:
    from notifications.services import subscription_delete

    sub = subscription()
    return Expect(lambda a: subscription_delete(actor=a, subscription=sub.pk), "notification.unsubscribed",
                  "subscription", str(sub.pk), before={"channel": "email"}, after=None, user="dana")


# --- invitations (notifications/services.py): the e-mail, and the password it lets the person choose -------


def invited(username: str = "nia") -> Any:
    from rollout.access.users import user_create

    return user_create(actor=SETUP, username=username, password=None, roles=["editor"],
                       email=f"{username}@example.org")


@service_scenario("invitation_send")
def _invitation_send() -> Expect:
    from notifications.services import invitation_send

    invited()
    return Expect(lambda a: invitation_send(actor=a, username="nia", base_url="https://turnout.example.org/"),
                  "user.invited", "user", "nia", before=None,
                  after={"email": "nia@example.org", "sign_in": "password", "url": "https://turnout.example.org"})


@service_scenario("invitation_accept")
def _invitation_accept() -> Expect:
    from notifications.services import invitation_accept

    invited()
    return Expect(lambda a: invitation_accept(actor=a, username="nia", password="long enough passphrase 7"),
                  "user.password_set", "user", "nia", before={"password": False},
                  after={"password": True, "via": "invitation"}, user="nia")


@endpoint_scenario("user-invite", "POST")
def _user_invite_post(api: Api) -> EndpointExpect:
    invited()
    return _json("POST", "/api/v1/users/nia/invite/", None, 200, api, "user.invited", "user", "nia")


@endpoint_scenario("person-invite", "POST")
def _ui_person_invite(api: Api) -> EndpointExpect:
    invited()
    return _ui(api, "/people/nia/invite/", {}, "user.invited", "user", "nia")


def _password_set_form(api: Api) -> str:
    """The invitation's link, visited once: Django moves the token into the session and redirects to the
    form's own address, which the POST goes to."""
    from django.contrib.auth.tokens import default_token_generator
    from django.utils.encoding import force_bytes
    from django.utils.http import urlsafe_base64_encode

    user = invited()
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    response = api.client.get(f"/password/set/{uid}/{default_token_generator.make_token(user)}/")
    return str(response["Location"])


@endpoint_scenario("password-set", "POST")
def _ui_password_set(api: Api) -> EndpointExpect:
    path = _password_set_form(api)
    return EndpointExpect("POST", path, {"new_password1": "long enough passphrase 7",
                                         "new_password2": "long enough passphrase 7"}, status=302, form=True,
                          action="user.password_set", object_type="user", object_key="nia", actor="nia")


@endpoint_scenario("password-set", "PUT")
def _ui_password_set_put(api: Api) -> EndpointExpect:
    path = _password_set_form(api)
    return EndpointExpect("PUT", path, "new_password1=x&new_password2=x", status=200, form=True,
                          reason="the form view answers PUT like POST, but Django parses no form body for PUT: the "
                                 "form is empty, invalid, and nothing is set",
                          touches=("sessions.Session",))


@endpoint_scenario("subscription-create", "POST")
def _ui_subscription_create(api: Api) -> EndpointExpect:
    return _ui(api, "/notifications/new/", {"channel": "webhook", "address": "https://hooks.example.org/x",
                                            "kinds": ["kill_switch.pulled"]},
               "notification.subscribed", "subscription", lambda response: _only_subscription())


@endpoint_scenario("subscription-update", "POST")
def _ui_subscription_update(api: Api) -> EndpointExpect:
    sub = subscription("root")
    return _ui(api, f"/notifications/{sub.pk}/edit/", {"kinds": ["rollout.rolled_back"]},
               "notification.subscription_changed", "subscription", str(sub.pk))


@endpoint_scenario("subscription-delete", "POST")
def _ui_subscription_delete(api: Api) -> EndpointExpect:
    sub = subscription("root")
    return _ui(api, f"/notifications/{sub.pk}/delete/", {}, "notification.unsubscribed", "subscription",
               str(sub.pk))


def _only_subscription() -> str:
    from notifications.models import Subscription

    return str(Subscription.objects.get().pk)


# --- stale flags: archive and restore (actions) ------------------------------------------------------------


def archived_flag() -> None:
    from rollout.stale import flag_archive

    flag()
    flag_archive(actor=SETUP, key="invoice-engine")


@endpoint_scenario("flag-archive", "POST")
def _flag_archive_post(api: Api) -> EndpointExpect:
    flag()
    return _json("POST", "/api/v1/flags/invoice-engine/archive/", {"reason": "code deleted"}, 200, api,
                 "flag.archived", "flag", "invoice-engine")


@endpoint_scenario("flag-restore", "POST")
def _flag_restore_post(api: Api) -> EndpointExpect:
    archived_flag()
    return _json("POST", "/api/v1/flags/invoice-engine/restore/", {}, 200, api, "flag.restored", "flag",
                 "invoice-engine")


@endpoint_scenario("stale-flag-archive", "POST")
def _ui_stale_flag_archive(api: Api) -> EndpointExpect:
    flag()
    return _ui(api, "/stale-flags/invoice-engine/archive/", {"reason": "code deleted"}, "flag.archived", "flag",
               "invoice-engine")


@endpoint_scenario("stale-flag-restore", "POST")
def _ui_stale_flag_restore(api: Api) -> EndpointExpect:
    archived_flag()
    return _ui(api, "/stale-flags/invoice-engine/restore/", {}, "flag.restored", "flag", "invoice-engine")


# --- data migrations (docs/migrations.md) ----------------------------------------------------------------

MIGRATION_URL = "/api/v1/flags/accounts-store/states/staging/migration/"


def migration_flag(stage: str = "off") -> None:
    """accounts-store, a migration flag, walked forward to ``stage`` in staging."""
    from actions.submit import submit_state
    from rollout.services.flags import flag_create
    from rollout.services.workloads import workload_create

    envs()
    workload_create(actor=SETUP, key="accounts", name="Accounts")
    flag_create(actor=SETUP, key="accounts-store", workload="accounts", kind="migration")
    for step in ("dual_write", "shadow", "live", "rampdown")[:["off", "dual_write", "shadow", "live",
                                                                 "rampdown"].index(stage)]:
        submit_state(actor=SETUP, flag="accounts-store", environment="staging", action="migration.stage_set",
                     params={"stage": step})


def divergence() -> int:
    from common import clock
    from rollout.models import Divergence, FlagState

    state = FlagState.objects.get(flag__key="accounts-store", environment__key="staging")
    return Divergence.objects.create(flag_state=state, key_hash="0" * 64, origin="parallel", identifier="row-1",
                                     stage="shadow", count=1, first_seen=clock.now(), last_seen=clock.now()).pk


@endpoint_scenario("migration", "POST")
def _migration_post(api: Api) -> EndpointExpect:
    migration_flag()
    return _json("POST", MIGRATION_URL, {"version": 1, "stage": "dual_write"}, 200, api, "migration.stage_set",
                 "flag_state", "accounts-store@staging")


@endpoint_scenario("migration-rollback", "POST")
def _migration_rollback_post(api: Api) -> EndpointExpect:
    migration_flag("shadow")
    return _json("POST", MIGRATION_URL + "rollback/", {"reason": "inconsistent"}, 200, api, "migration.rolled_back",
                 "flag_state", "accounts-store@staging")


@endpoint_scenario("migration-divergences-resolve", "POST")
def _migration_divergences_resolve_post(api: Api) -> EndpointExpect:
    migration_flag("dual_write")
    pk = divergence()
    return _json("POST", MIGRATION_URL + "divergences/resolve/", {"divergences": [pk], "reason": "backfilled"}, 200,
                 api, "migration.divergences_resolved", "flag_state", "accounts-store@staging")


# The migration stage card on the flag page: the same actions through the UI.
UI_MIGRATION = "/flags/accounts-store/staging/migration/"


@endpoint_scenario("migration-card-advance", "POST")
def _ui_migration_advance(api: Api) -> EndpointExpect:
    migration_flag()
    return _ui(api, UI_MIGRATION + "advance/", {"move": "base", "stage": "dual_write", "version": 1},
               "migration.stage_set", "flag_state", "accounts-store@staging")


@endpoint_scenario("migration-card-rollback", "POST")
def _ui_migration_rollback(api: Api) -> EndpointExpect:
    migration_flag("shadow")
    return _ui(api, UI_MIGRATION + "rollback/", {"reason": "inconsistent"}, "migration.rolled_back", "flag_state",
               "accounts-store@staging")


@endpoint_scenario("migration-card-resolve", "POST")
def _ui_migration_resolve(api: Api) -> EndpointExpect:
    migration_flag("dual_write")
    pk = divergence()
    return _ui(api, UI_MIGRATION + "resolve/", {"divergences": [pk], "reason": "backfilled"},
               "migration.divergences_resolved", "flag_state", "accounts-store@staging")
