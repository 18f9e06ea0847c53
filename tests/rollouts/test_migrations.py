"""Data migrations on the server (issue 15): the ruleset's ``migration`` field, stage changes through the
action layer (no skipping, no moving back except by rollback, approval for ``live``/``complete`` where the
environment or risk says so, ``complete`` irreversible and gated on divergences), rollback with its
divergence summary, and SDK reports of divergences folded into the reconciliation trail."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from turnout import Stage, Turnout
from turnout.engine import compile_ruleset
from turnout.wire import key_hash

from actions.submit import submit_state
from common import clock
from common.actors import Actor
from common.errors import Conflict, ValidationFailed
from rollout.access.keys import sdk_key_create
from rollout.delivery.ruleset import build_document
from rollout.models import Divergence, Environment, FlagState, MigrationMinute, ReviewItem
from rollout.services.flags import flag_create
from rollout.services.workloads import workload_create

pytestmark = pytest.mark.django_db
FLAG = "accounts-store"


@pytest.fixture
def migration(envs: dict[str, Any], actor: Actor, cohorts: None) -> str:
    workload_create(actor=actor, key="accounts", name="Accounts", risk="medium", reversibility="dual_write")
    flag_create(actor=actor, key=FLAG, workload="accounts", bucket_by="tenant_id", kind="migration")
    return FLAG


def stage_set(actor: Actor, env: str = "staging", reason: str = "", **params: Any) -> Any:
    return submit_state(actor=actor, flag=FLAG, environment=env, action="migration.stage_set", params=params,
                        reason=reason)


def walk(actor: Actor, *stages: str, env: str = "staging") -> None:
    for stage in stages:
        stage_set(actor, env, stage=stage)


def rule(env: str = "staging") -> dict[str, Any]:
    return dict(build_document(Environment.objects.get(key=env))["flags"][FLAG])


def report(stage: str = "live", origin: str = "legacy", identifier: str | None = "row-7", key: str = "t-1",
           at: str | None = None) -> dict[str, Any]:
    at = at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"flag": FLAG, "version": 1, "stage": stage, "key_hash": key_hash(key), "origin": origin,
            "operation": "write", "identifier": identifier, "error": "OSError: down", "at": at}


def post_batch(client: Client, sdk_key: str, **fields: Any) -> Any:
    body = {"sdk": {"name": "turnout-python", "version": "0.1.0"},
            "window": {"start": "2026-12-06T10:00:00Z", "end": "2026-12-06T10:00:10Z"}, "flags": [], **fields}
    return client.post("/api/v1/sdk/metrics", json.dumps(body), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {sdk_key}")


@pytest.fixture
def sdk_key(envs: dict[str, Any], actor: Actor) -> str:
    return sdk_key_create(actor=actor, environment="staging", name="svc")[1]


# -- the ruleset ----------------------------------------------------------------------------------


def test_ruleset__migration_flag__carries_its_stages_and_their_cohorts(migration: str, actor: Actor) -> None:
    assert rule()["migration"] == {"stage": "off", "splits": [], "cohorts": []}
    walk(actor, "dual_write", "shadow")
    stage_set(actor, splits=[{"stage": "live", "percentage": 25}], cohorts=[{"cohort": "pilot-eu", "stage": "live"}])
    doc = build_document(Environment.objects.get(key="staging"))
    assert doc["flags"][FLAG]["migration"] == {"stage": "shadow", "splits": [{"stage": "live", "percentage": 25.0}],
                                               "cohorts": [{"cohort": "pilot-eu", "stage": "live"}]}
    assert "pilot-eu" in doc["cohorts"]
    assert doc["flags"][FLAG]["enabled"] is True  # leaving 'off' switched the state on
    stages = {compile_ruleset(doc).decide_stage(FLAG, "u", {"tenant_id": f"t{i}"}).stage for i in range(200)}
    assert stages == {Stage.SHADOW, Stage.LIVE}


def test_ruleset__release_flag__has_no_migration_field(flag: Any) -> None:
    assert "migration" not in dict(build_document(Environment.objects.get(key="staging"))["flags"]["invoice-engine"])


# -- moving forward -------------------------------------------------------------------------------


def test_stage_set__skipping_a_stage__400_and_nothing_changes(migration: str, actor: Actor) -> None:
    with pytest.raises(ValidationFailed, match="one stage at a time"):
        stage_set(actor, stage="shadow")
    walk(actor, "dual_write")
    with pytest.raises(ValidationFailed, match="skips a stage"):
        stage_set(actor, splits=[{"stage": "live", "percentage": 5}])
    assert rule()["migration"]["stage"] == "dual_write"


def test_stage_set__moving_back__400_it_is_a_rollback(migration: str, actor: Actor) -> None:
    walk(actor, "dual_write", "shadow")
    stage_set(actor, splits=[{"stage": "live", "percentage": 20}])
    with pytest.raises(ValidationFailed, match="rollback"):
        stage_set(actor, splits=[{"stage": "live", "percentage": 10}])
    with pytest.raises(ValidationFailed, match="rollback"):
        stage_set(actor, stage="dual_write")


def test_stage_set__bad_split__400_naming_the_field(migration: str, actor: Actor) -> None:
    walk(actor, "dual_write")
    with pytest.raises(ValidationFailed) as raised:
        stage_set(actor, splits=[{"stage": "shadow", "percentage": 140}])
    assert raised.value.fields == {"splits.0.percentage": [raised.value.fields["splits.0.percentage"][0]]}
    with pytest.raises(ValidationFailed) as unknown:
        stage_set(actor, cohorts=[{"cohort": "ghost", "stage": "shadow"}])
    assert "cohorts.0.cohort" in unknown.value.fields


def test_stage_set__release_flag__409(flag: Any, actor: Actor) -> None:
    with pytest.raises(Conflict, match="not a migration flag"):
        submit_state(actor=actor, flag=flag.key, environment="staging", action="migration.stage_set",
                     params={"stage": "dual_write"})


def test_stage_set__approval_environment__only_live_and_complete_wait(migration: str, people: dict[str, Actor],
                                                                     actor: Actor) -> None:
    ed = people["ed"]
    for stage in ("dual_write", "shadow"):
        assert stage_set(ed, "production", stage=stage).applied
    waiting = stage_set(ed, "production", splits=[{"stage": "live", "percentage": 10}])
    assert not waiting.applied and waiting.change_request is not None
    assert waiting.change_request.action == "migration.stage_set"
    assert rule("production")["migration"]["splits"] == []
    from actions.submit import change_request_approve

    change_request_approve(actor=people["ann"], change_request=waiting.change_request.pk)
    assert rule("production")["migration"]["splits"] == [{"stage": "live", "percentage": 10.0}]


def test_stage_set__complete__blocked_by_unresolved_divergence_until_resolved(
        migration: str, actor: Actor, client: Client, sdk_key: str) -> None:
    walk(actor, "dual_write", "shadow", "live", "rampdown")
    assert post_batch(client, sdk_key, divergences=[report(stage="rampdown")]).status_code == 202
    with pytest.raises(Conflict, match="1 unresolved divergence"):
        stage_set(actor, stage="complete")
    [div] = Divergence.objects.all()
    submit_state(actor=actor, flag=FLAG, environment="staging", action="migration.divergences_resolved",
                 params={"divergences": [div.pk]}, reason="replayed row-7 into legacy")
    stage_set(actor, stage="complete")
    assert rule()["migration"] == {"stage": "complete", "splits": [], "cohorts": []}


def test_complete__irreversible__rollback_and_changes_409(migration: str, actor: Actor) -> None:
    walk(actor, "dual_write", "shadow", "live", "rampdown", "complete")
    with pytest.raises(Conflict, match="irreversible"):
        submit_state(actor=actor, flag=FLAG, environment="staging", action="migration.rolled_back", reason="oops")
    with pytest.raises(Conflict, match="complete"):
        stage_set(actor, cohorts=[{"cohort": "staff", "stage": "live"}])


def test_stage_set__audit_event__exact(migration: str, actor: Actor, audit_events: Any) -> None:
    walk(actor, "dual_write")
    [event] = audit_events()
    assert (event.action, event.object_type, event.object_key, event.environment) == (
        "migration.stage_set", "flag_state", f"{FLAG}@staging", "staging")
    assert event.before["migration"] == {"stage": "off", "splits": [], "cohorts": [], "authoritative_since": None,
                                         "max_divergences": None}
    assert event.after["migration"] == {"stage": "dual_write", "splits": [], "cohorts": [],
                                        "authoritative_since": None, "max_divergences": None}
    assert event.after["enabled"] is True and event.before["enabled"] is False


# -- rolling back -----------------------------------------------------------------------------------


def test_rollback__without_reason__400(migration: str, actor: Actor) -> None:
    walk(actor, "dual_write")
    with pytest.raises(ValidationFailed, match="reason"):
        submit_state(actor=actor, flag=FLAG, environment="staging", action="migration.rolled_back")


def test_rollback__from_live__records_divergences_since_authoritative(
        migration: str, actor: Actor, client: Client, sdk_key: str, audit_events: Any) -> None:
    walk(actor, "dual_write", "shadow")
    stage_set(actor, splits=[{"stage": "live", "percentage": 30}])
    post_batch(client, sdk_key, divergences=[report(), report(key="t-2", identifier="row-9")])
    submit_state(actor=actor, flag=FLAG, environment="staging", action="migration.rolled_back",
                 reason="inconsistent reads")
    event = audit_events()[-1]
    assert event.action == "migration.rolled_back"
    assert (event.after["from_stage"], event.after["to_stage"]) == ("live", "shadow")
    summary = event.after["divergences_since_authoritative"]
    assert (summary["records"], summary["unresolved"], summary["failed_writes"]) == (2, 2, 2)
    assert rule()["migration"] == {"stage": "shadow", "splits": [], "cohorts": []}


def test_rollback__base_is_furthest__base_one_stage_back(migration: str, actor: Actor) -> None:
    walk(actor, "dual_write", "shadow")
    submit_state(actor=actor, flag=FLAG, environment="staging", action="migration.rolled_back", reason="r")
    assert rule()["migration"]["stage"] == "dual_write"


def test_rollback__approval_environment__break_glass_never_waits(migration: str, people: dict[str, Actor],
                                                                actor: Actor) -> None:
    walk(people["ed"], "dual_write", env="production")
    outcome = submit_state(actor=people["ed"], flag=FLAG, environment="production", action="migration.rolled_back",
                           reason="parallel store corrupt")
    assert outcome.applied
    assert ReviewItem.objects.filter(action="rollback").count() == 1


# -- what SDKs report -----------------------------------------------------------------------------


def test_metrics__divergences__folded_per_record_and_reopened_after_resolution(
        migration: str, actor: Actor, client: Client, sdk_key: str) -> None:
    walk(actor, "dual_write")
    assert post_batch(client, sdk_key, divergences=[report("dual_write", "parallel")] * 2).status_code == 202
    [row] = Divergence.objects.all()
    assert (row.count, row.identifier, row.origin, row.key_hash) == (2, "row-7", "parallel", key_hash("t-1"))
    submit_state(actor=actor, flag=FLAG, environment="staging", action="migration.divergences_resolved",
                 params={"divergences": "all"}, reason="backfilled")
    row.refresh_from_db()
    assert row.resolved_at is not None and row.resolution == "backfilled"
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    post_batch(client, sdk_key, divergences=[report("dual_write", "parallel", at=later)])
    row.refresh_from_db()
    assert (row.count, row.resolved_at) == (3, None)


def test_metrics__bad_migration_field__400_naming_it_and_nothing_counted(migration: str, client: Client,
                                                                        sdk_key: str) -> None:
    response = post_batch(client, sdk_key, divergences=[{**report(), "origin": "both"}])
    assert response.status_code == 400
    assert "divergences[0].origin" in response.content.decode()
    assert not Divergence.objects.exists()


def test_metrics__release_flag_divergence__not_kept(flag: Any, client: Client, sdk_key: str) -> None:
    post_batch(client, sdk_key, divergences=[{**report(), "flag": "invoice-engine"}])
    assert not Divergence.objects.exists()


def test_sdk_batch__end_to_end__counted_per_origin_and_operation(migration: str, actor: Actor, client: Client,
                                                                 sdk_key: str) -> None:
    """What the real SDK sends is what the server stores (the wire contract, both sides)."""
    walk(actor, "dual_write", "shadow")
    sdk = Turnout.offline(build_document(Environment.objects.get(key="staging")), breaker=None)
    try:
        m = sdk.migration(FLAG, budget=5.0, identify=lambda row: row["id"])

        def down() -> None:
            raise OSError("parallel down")

        sdk_attrs = {"tenant_id": "t-1"}
        m.read("u-1", sdk_attrs, legacy=lambda: {"n": 1}, parallel=lambda: {"n": 2})
        m.write("u-1", sdk_attrs, legacy=lambda: {"id": 5}, parallel=down)
        batch = sdk._recorder.drain(sdk_version="0.1.0", code_version=None)
    finally:
        sdk.close()
    assert post_batch(client, sdk_key, **{k: v for k, v in batch.items() if k not in ("sdk", "window")}
                      ).status_code == 202
    minutes = {(r.origin, r.operation): r for r in MigrationMinute.objects.all()}
    assert set(minutes) == {("legacy", "read"), ("parallel", "read"), ("legacy", "write"), ("parallel", "write")}
    assert (minutes[("legacy", "read")].checks, minutes[("legacy", "read")].inconsistent) == (1, 1)
    assert minutes[("parallel", "write")].errors == 1 and minutes[("parallel", "write")].divergences == 1
    [div] = Divergence.objects.all()
    assert (div.identifier, div.key_hash, div.stage) == ("5", key_hash("u-1"), "shadow")
    assert FlagState.objects.get(flag__key=FLAG, environment__key="staging").divergences.count() == 1


# -- the API -----------------------------------------------------------------------------------------


@pytest.fixture
def api(people: dict[str, Actor]) -> Client:
    from django.contrib.auth import get_user_model

    c = Client()
    c.force_login(get_user_model().objects.get(username="root"))
    return c


URL = f"/api/v1/flags/{FLAG}/states/staging/migration/"


def test_api__status_list_export_resolve(migration: str, actor: Actor, api: Client, client: Client,
                                        sdk_key: str) -> None:
    walk(actor, "dual_write", "shadow")
    post_batch(client, sdk_key, divergences=[report("shadow", "parallel", identifier="=cmd()"),
                                             report("shadow", "parallel", key="t-2", identifier="row-2")])
    status = api.get(URL).json()
    assert (status["stage"], status["next_stage"], status["unresolved_divergences"]) == ("shadow", "live", 2)
    assert status["complete"]["ready"] is False
    assert [(d["origin"], d["records"]) for d in status["divergences"]] == [("parallel", 2)]
    listed = api.get(URL + "divergences/?resolved=false").json()
    assert sorted(d["identifier"] for d in listed) == ["=cmd()", "row-2"]
    csv_body = b"".join(api.get(URL + "divergences/export?format=csv").streaming_content).decode()
    assert csv_body.splitlines()[0].startswith("id,flag,environment,origin")
    assert "'=cmd()" in csv_body  # a formula-looking identifier is defused
    lines = b"".join(api.get(URL + "divergences/export?format=jsonl").streaming_content).decode().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["flag"] == FLAG
    assert api.get(URL + "divergences/export?format=xml").status_code == 400
    assert api.get(URL + "divergences/?resolvd=false").status_code == 400
    resolved = api.post(URL + "divergences/resolve/", {"divergences": "all", "reason": "backfilled"},
                        content_type="application/json")
    assert resolved.status_code == 200 and resolved.json()["migration"]["unresolved_divergences"] == 0


def test_api__stage_set_and_rollback(migration: str, api: Client) -> None:
    version = FlagState.objects.get(flag__key=FLAG, environment__key="staging").version
    moved = api.post(URL, {"version": version, "stage": "dual_write"}, content_type="application/json")
    assert moved.status_code == 200 and moved.json()["migration"]["stage"] == "dual_write"
    skipped = api.post(URL, {"version": version + 1, "stage": "live"}, content_type="application/json")
    assert skipped.status_code == 400 and "stage" in skipped.json()["error"]["fields"]
    assert api.post(URL + "rollback/", {}, content_type="application/json").status_code == 400  # no reason
    back = api.post(URL + "rollback/", {"reason": "check"}, content_type="application/json")
    assert back.status_code == 200 and back.json()["migration"]["stage"] == "off"


# -- guardrails, the demo ---------------------------------------------------------------------------


def _minutes(env: str, *, checks: int, inconsistent: int, parallel_calls: int = 0, parallel_errors: int = 0) -> None:
    from common import clock
    from rollout.models import MigrationMinute

    minute = clock.now().replace(second=0, microsecond=0)
    environment = Environment.objects.get(key=env)
    MigrationMinute.objects.create(environment=environment, flag_key=FLAG, stage="shadow", origin="legacy",
                                   operation="read", minute=minute, calls=checks, checks=checks,
                                   inconsistent=inconsistent, latency_ms=[0] * 16)
    MigrationMinute.objects.create(environment=environment, flag_key=FLAG, stage="shadow", origin="parallel",
                                   operation="read", minute=minute, calls=parallel_calls, errors=parallel_errors,
                                   latency_ms=[0] * 16)


def _guard(actor: Actor, **limits: Any) -> None:
    from rollout.plans.guardrails import guardrail_set

    guardrail_set(actor=actor, flag=FLAG, environment="staging", version=None, **limits)


def test_guardrail__inconsistency_above_limit__system_rolls_back_one_stage(migration: str, actor: Actor,
                                                                           audit_events: Any) -> None:
    from rollout.datamigration.guardrails import migration_guardrail_check

    with clock.frozen(clock.now() - timedelta(minutes=3)):  # the stage began minutes before the traffic
        walk(actor, "dual_write", "shadow")
    _guard(actor, max_mismatch_rate=2, min_sample_size=50, window_seconds=300, action="rollback")
    _minutes("staging", checks=100, inconsistent=5)
    state = FlagState.objects.get(flag__key=FLAG, environment__key="staging")
    health = migration_guardrail_check(flag_state_id=state.pk)
    assert health.status == "breached" and health.figures["inconsistency_rate"] == 5.0
    event = audit_events()[-1]
    assert (event.action, event.actor) == ("migration.rolled_back", "system:guardrail")
    assert event.reason.startswith("guardrail: inconsistency rate 5.00% of 100 reads above 2%")
    assert rule()["migration"]["stage"] == "dual_write"
    # the stage began again: the same minutes are not judged twice
    assert migration_guardrail_check(flag_state_id=state.pk).status in {"inactive", "insufficient_data"}


def test_guardrail__traffic_in_the_minute_the_stage_began__not_judged(migration: str, actor: Actor) -> None:
    """Counts are per minute: calls from before the stage began share its first minute, so that minute is
    left out (a stage moved back and forth is not judged on the old stage's reads)."""
    from rollout.datamigration.guardrails import migration_guardrail_check

    _guard(actor, max_mismatch_rate=2, min_sample_size=50, window_seconds=300, action="rollback")
    with clock.frozen(clock.now().replace(second=30)):
        walk(actor, "dual_write", "shadow")
        _minutes("staging", checks=100, inconsistent=50)
        state = FlagState.objects.get(flag__key=FLAG, environment__key="staging")
        assert migration_guardrail_check(flag_state_id=state.pk).status == "insufficient_data"
    assert rule()["migration"]["stage"] == "shadow"


def test_guardrail__few_checks__insufficient_data_and_nothing_done(migration: str, actor: Actor) -> None:
    from rollout.datamigration.guardrails import migration_guardrail_check

    with clock.frozen(clock.now() - timedelta(minutes=3)):
        walk(actor, "dual_write", "shadow")
    _guard(actor, max_mismatch_rate=2, min_sample_size=500, window_seconds=300, action="rollback")
    _minutes("staging", checks=100, inconsistent=50)
    state = FlagState.objects.get(flag__key=FLAG, environment__key="staging")
    assert migration_guardrail_check(flag_state_id=state.pk).status == "insufficient_data"
    assert rule()["migration"]["stage"] == "shadow"


def test_guardrail__divergences_above_limit__rolls_back(migration: str, actor: Actor, client: Client,
                                                        sdk_key: str) -> None:
    from rollout.datamigration.guardrails import migration_guardrail_check

    walk(actor, "dual_write", "shadow")
    stage_set(actor, max_divergences=1)
    post_batch(client, sdk_key, divergences=[report("shadow", "parallel", key=f"t-{i}") for i in range(3)])
    state = FlagState.objects.get(flag__key=FLAG, environment__key="staging")
    health = migration_guardrail_check(flag_state_id=state.pk)
    assert health.breaches == ["3 divergences since the stage began, above 1"]
    assert rule()["migration"]["stage"] == "dual_write"


def test_seed_migration_demo__one_migration_in_shadow__idempotent(envs: dict[str, Any]) -> None:
    from rollout.datamigration.demo import seed_migration_demo

    assert seed_migration_demo() is True
    assert rule()["migration"]["stage"] == "shadow"
    assert seed_migration_demo() is False


def test_flag_page__migration_flag__stage_card_with_figures_and_export(migration: str, actor: Actor, api: Client,
                                                                      client: Client, sdk_key: str) -> None:
    walk(actor, "dual_write")
    post_batch(client, sdk_key, divergences=[report("dual_write", "parallel")])
    page = api.get(f"/flags/{FLAG}/").content.decode()
    assert "Data migration" in page and 'aria-current="step"><strong>dual_write</strong>' in page
    assert "Next step</dt><dd>shadow" in page
    assert f"/api/v1/flags/{FLAG}/states/staging/migration/divergences/export?format=csv" in page
    assert "1 unresolved divergence" in page


def test_flag_page__release_flag__no_stage_card(flag: Any, api: Client) -> None:
    assert "Data migration" not in api.get("/flags/invoice-engine/").content.decode()


def test_retire__migration_flag_with_unresolved_divergence__409_until_resolved(
        migration: str, actor: Actor, client: Client, sdk_key: str) -> None:
    from rollout.services.flags import flag_state_retire, flag_state_update

    walk(actor, "dual_write")
    post_batch(client, sdk_key, divergences=[report("dual_write", "parallel")])
    flag_state_update(actor=actor, flag=FLAG, environment="staging", version=None, percentage_value=100)
    with pytest.raises(Conflict, match="unresolved divergence"):
        flag_state_retire(actor=actor, flag=FLAG, environment="staging")
    submit_state(actor=actor, flag=FLAG, environment="staging", action="migration.divergences_resolved",
                 params={"divergences": "all"}, reason="backfilled")
    assert flag_state_retire(actor=actor, flag=FLAG, environment="staging").retired


@pytest.mark.parametrize(("options", "message"), [
    ({"url": "http://example.com"}, "loopback"),
    ({"url": "http://127.0.0.1:9", "requests": 0}, "--requests"),
    ({"url": "http://127.0.0.1:9", "tenants": 0}, "--tenants"),
])
def test_simulate_migration__bad_options__command_error(options: dict[str, Any], message: str) -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match=message):
        call_command("simulate_migration", sdk_key="sdk_x", flag=FLAG, **options)


def test_api__divergence_export_under_asgi__streamed_not_buffered(migration: str, actor: Actor, api: Client,
                                                                  client: Client, sdk_key: str) -> None:
    """Under ASGI (uvicorn: `make run`, Procfile.dev) Django read a sync generator whole before the first byte
    went out, with a warning; the export hands it over chunk by chunk, as the audit export does."""
    import warnings

    from asgiref.sync import async_to_sync
    from django.contrib.auth import get_user_model
    from django.test import AsyncClient

    walk(actor, "dual_write", "shadow")
    post_batch(client, sdk_key, divergences=[report("shadow", "parallel", identifier="row-1"),
                                             report("shadow", "parallel", key="t-2", identifier="row-2")])
    root = get_user_model().objects.get(username="root")

    async def export() -> tuple[Any, list[bytes]]:
        asgi = AsyncClient()
        await asgi.aforce_login(root)
        response = await asgi.get(URL + "divergences/export?format=jsonl")
        assert response.status_code == 200 and response.is_async  # an async stream, not a buffered sync one
        return response, [chunk async for chunk in response.streaming_content]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, chunks = async_to_sync(export)()
    assert not [w for w in caught if "synchronous iterators" in str(w.message)]
    lines = b"".join(chunks).decode().splitlines()
    assert sorted(json.loads(line)["identifier"] for line in lines) == ["row-1", "row-2"]
