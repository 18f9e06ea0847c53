"""The demo data set: two environments, workloads at every phase, pilot cohorts, flags mid-rollout."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from actions.submit import submit
from audit.names import Action
from cohorts.models import Cohort
from cohorts.services import cohort_create, cohort_members_add
from common.actors import Actor
from rollout.access.users import user_create
from rollout.models import ChangeRequest, Environment, Flag, FlagState, Guardrail, Workload
from rollout.plans.stages import plan_template
from rollout.services.environments import environment_create
from rollout.services.flags import flag_create, flag_state_retire, flag_state_update
from rollout.services.workloads import workload_create

SEED = Actor.system("seed_demo")

ENVIRONMENTS: list[dict[str, Any]] = [
    {"key": "staging", "name": "Staging", "order": 0, "requires_approval": False},
    {"key": "production", "name": "Production", "order": 1, "requires_approval": True},
]

WORKLOADS: list[dict[str, Any]] = [
    {"key": "invoice-engine", "name": "Invoice engine", "risk": "high", "phase": "transition",
     "reversibility": "dual_write", "owner": "billing-team", "legacy_system": "Mainframe BILL/370",
     "parallel_system": "invoice-service (k8s)",
     "description": "Monthly and ad-hoc invoice generation, moving tenant by tenant."},
    {"key": "customer-search", "name": "Customer search", "risk": "low", "phase": "pilot",
     "owner": "crm-team", "legacy_system": "Oracle Text", "parallel_system": "OpenSearch cluster",
     "description": "Search across customer records for the support desk."},
    {"key": "payment-routing", "name": "Payment routing", "risk": "critical", "phase": "validation",
     "reversibility": "irreversible", "owner": "payments-team", "legacy_system": "Switch v2 (C++)",
     "parallel_system": "router (Rust)", "description": "Choosing the acquirer for card payments."},
    {"key": "report-export", "name": "Report export", "risk": "medium", "phase": "retired",
     "owner": "analytics-team", "legacy_system": "Crystal Reports", "parallel_system": "export-worker",
     "description": "CSV / PDF exports of monthly reports."},
    {"key": "notifications", "name": "Notifications", "risk": "low", "phase": "development",
     "owner": "platform-team", "legacy_system": "cron + sendmail", "parallel_system": "notify-service",
     "description": "Email and SMS notifications."},
]

COHORTS: list[dict[str, Any]] = [
    {"key": "internal-staff", "name": "Internal staff", "description": "Employees dog-food every change first.",
     "rules": {"all": [{"attr": "email", "op": "ends_with", "values": ["@example.com"]}]},
     "include": ["user-1", "user-2", "user-3"], "exclude": []},
    {"key": "pilot-eu", "name": "EU pilot tenants", "match_on": "tenant_id",
     "description": "Tenants in Germany and France who volunteered for the pilot.",
     "rules": {"all": [{"attr": "country", "op": "in", "values": ["DE", "FR"]},
                       {"attr": "plan", "op": "in", "values": ["pro", "enterprise"]}]},
     "include": ["tenant-42", "tenant-77"], "exclude": ["tenant-13"]},
    {"key": "regulated", "name": "Regulated tenants", "match_on": "tenant_id",
     "description": "Tenants under banking regulation stay on legacy until sign-off.",
     "rules": {"any": [{"attr": "regulated", "op": "eq", "values": [True]},
                       {"attr": "industry", "op": "in", "values": ["banking", "insurance"]}]},
     "include": ["tenant-13"], "exclude": []},
    {"key": "beta-testers", "name": "Beta testers", "description": "Users who opted in to early features.",
     "rules": None, "include": [f"user-{n}" for n in range(100, 1100)], "exclude": []},
]

FLAGS: list[dict[str, Any]] = [
    {"key": "invoice-engine", "workload": "invoice-engine", "bucket_by": "tenant_id",
     "description": "Generate invoices with the new invoice service.",
     "states": {"staging": {"enabled": True, "percentage_value": 100, "compare_percentage": 50},
                "production": {"enabled": True, "percentage_value": 25, "compare_percentage": 10,
                               "include_cohorts": ["pilot-eu"], "exclude_cohorts": ["regulated"]}}},
    {"key": "customer-search", "workload": "customer-search",
     "description": "Serve support-desk search from OpenSearch.",
     "states": {"staging": {"enabled": True, "percentage_value": 50, "compare_percentage": 100},
                "production": {"enabled": True, "percentage_value": 0, "compare_percentage": 20,
                               "include_cohorts": ["internal-staff", "beta-testers"],
                               "overrides": {"user-9": "legacy"}}}},
    {"key": "payment-routing", "workload": "payment-routing", "bucket_by": "merchant_id",
     "description": "Route payments with the new router (shadow comparison only).",
     "states": {"staging": {"enabled": True, "percentage_value": 10, "compare_percentage": 100},
                "production": {"enabled": True, "percentage_value": 0, "compare_percentage": 5}}},
    {"key": "report-export", "workload": "report-export", "description": "Exports by the export worker.",
     "states": {"staging": {"enabled": True, "percentage_value": 100}, "production": {"enabled": True,
                                                                                    "percentage_value": 100}},
     "retire": ["staging", "production"]},
    {"key": "notifications", "workload": "notifications", "description": "Send through notify-service.",
     "states": {}},
]


def seed_demo() -> bool:
    """Load the demo; each object is created only when missing, so a re-run (or a run after a failed
    one) completes the set. Returns False when everything was already there."""
    created = False
    for env in ENVIRONMENTS:
        if not Environment.objects.filter(key=env["key"]).exists():
            environment_create(actor=SEED, **env)
            created = True
    for workload in WORKLOADS:
        if not Workload.objects.filter(key=workload["key"]).exists():
            workload_create(actor=SEED, **workload)
            created = True
    for c in COHORTS:
        if Cohort.objects.filter(key=c["key"]).exists():
            continue
        cohort_create(actor=SEED, key=c["key"], name=c["name"], description=c["description"],
                      match_on=c.get("match_on", ""), rules=c["rules"])
        if c["include"]:
            cohort_members_add(actor=SEED, key=c["key"], subjects=c["include"], kind="include")
        if c["exclude"]:
            cohort_members_add(actor=SEED, key=c["key"], subjects=c["exclude"], kind="exclude")
        created = True
    for f in FLAGS:
        if Flag.objects.filter(key=f["key"]).exists():
            continue
        flag_create(actor=SEED, key=f["key"], workload=f["workload"], description=f["description"],
                    bucket_by=f.get("bucket_by", ""))
        for env_key, changes in f["states"].items():
            flag_state_update(actor=SEED, flag=f["key"], environment=env_key, version=None, **changes)
        for env_key in f.get("retire", []):
            flag_state_retire(actor=SEED, flag=f["key"], environment=env_key)
        created = True
    return created


# -- the living demo (`make run`): people for every role, a rollout mid-way, a request waiting ----

#: One demo person per role (development only: ``make run`` gives them random passwords, kept in var/).
PEOPLE: list[dict[str, str]] = [
    {"role": "admin", "username": "admin", "name": "every right, including keys and users"},
    {"role": "editor", "username": "eddie", "name": "changes rollouts; production waits for a second person"},
    {"role": "approver", "username": "april", "name": "approves other people's change requests"},
    {"role": "compliance", "username": "carla", "name": "reads, exports and verifies the audit log"},
    {"role": "viewer", "username": "victor", "name": "reads everything, changes nothing"},
]

#: The rollout the demo shows mid-way: invoice-engine in production, at the "25%" stage of the standard
#: plan (internal staff first, then the EU pilot tenants), with guardrails that roll it back.
STORY_TARGET = "invoice-engine@production"
STORY_STAGE = "25%"
STORY_GUARDRAILS: dict[str, Any] = {
    "max_error_rate": 1.5, "max_latency_p95_ratio": 1.5, "max_mismatch_rate": 3.0,
    "min_sample_size": 100, "window_seconds": 900, "action": "rollback",
}
SHADOW_TARGET = "payment-routing@production"
SHADOW_GUARDRAILS: dict[str, Any] = {"max_mismatch_rate": 6.0, "min_sample_size": 50, "window_seconds": 900,
                                     "action": "pause"}


def seed_people(*, passwords: dict[str, str]) -> list[str]:
    """Create the demo people who are missing, with the given passwords (username -> password).
    Returns the usernames created."""
    created = []
    for person in PEOPLE:
        username = person["username"]
        if get_user_model().objects.filter(username=username).exists():
            continue
        admin = person["role"] == "admin"
        user_create(actor=Actor.system("make run"), username=username, password=passwords[username],
                    roles=[person["role"]], email=f"{username}@example.com", is_superuser=admin)
        created.append(username)
    return created


def seed_story() -> bool:
    """Put the demo's main rollout mid-way, through the action layer like any other change: the standard
    plan and guardrails on invoice-engine in production, advanced to its 25% stage; guardrails on
    payment-routing's shadow comparison; and a change request from the editor (advance to 50%) waiting
    for the approver. Each part is done only when missing. Returns False when all of it was there."""
    done = False
    flag, env = STORY_TARGET.split("@")
    state = FlagState.objects.get(flag__key=flag, environment__key=env)
    if not state.stages.exists() and state.stage == 0:  # once: later runs leave the rollout where people put it
        stages = plan_template("standard", internal_cohorts=["internal-staff"], pilot_cohorts=["pilot-eu"])
        for stage in stages:  # compare a fifth of the calls while the first tenants move: evidence comes sooner
            if stage["name"] in {"5%", "25%"}:
                stage["compare_percentage"] = 20
        submit(actor=SEED, action=Action.FLAG_STATE_PLAN_SET, target=STORY_TARGET, params={"stages": stages},
               reason="the billing team's cutover plan: staff, EU pilot tenants, then tenants by percentage, "
                      "comparing a fifth of the calls at 5% and 25%")
        names = [stage["name"] for stage in stages]
        for name in names[:names.index(STORY_STAGE) + 1]:
            submit(actor=SEED, action=Action.FLAG_STATE_ADVANCED, target=STORY_TARGET,
                   reason=f"demo history: to the '{name}' stage")
        done = True
    if not Guardrail.objects.filter(flag_state=state).exists():
        submit(actor=SEED, action=Action.FLAG_STATE_GUARDRAILS_SET, target=STORY_TARGET,
               params=dict(STORY_GUARDRAILS), reason="roll back on errors, slowness or unexplained differences")
        done = True
    shadow = FlagState.objects.get(flag__key=SHADOW_TARGET.split("@")[0], environment__key="production")
    if not Guardrail.objects.filter(flag_state=shadow).exists():
        submit(actor=SEED, action=Action.FLAG_STATE_GUARDRAILS_SET, target=SHADOW_TARGET,
               params=dict(SHADOW_GUARDRAILS), reason="pause the shadow comparison when the router disagrees often")
        done = True
    editor = get_user_model().objects.filter(username="eddie").first()
    state.refresh_from_db()
    if editor is not None and not ChangeRequest.objects.filter(flag_state=state).exists() \
            and 0 < state.stage < state.stages.count() and state.paused_at is None:  # once, like the plan
        submit(actor=Actor.for_user(editor), action=Action.FLAG_STATE_ADVANCED, target=STORY_TARGET,
               version=state.version, reason="25% has been healthy; widen to half of the tenants")
        done = True
    return done
