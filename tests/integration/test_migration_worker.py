"""End to end, a data migration from ``off`` to ``complete`` (issue 15, "Done means"): simulator → SDK →
web process → Redis → Celery beat + worker. Inconsistent reads beyond the guardrail roll the stage back
(the worker, as ``system:guardrail``); failed secondary writes appear in the divergence list and block
``complete`` until resolved; the final reconciliation export lists them, resolved."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from actions.submit import submit_state
from common import clock
from common.actors import Actor
from rollout.models import Divergence, MigrationState
from tests.integration.test_guardrail_worker import celery_beat_process  # noqa: F401  (the fixture)

FLAG = "accounts-store"


def _wait_for(condition: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    return None


def _stage() -> str:
    return MigrationState.objects.get(flag_state__flag__key=FLAG, flag_state__environment__key="staging").stage


@pytest.mark.services
def test_migration__off_to_complete__guardrail_rollback_and_divergence_resolved(
        server_process, celery_beat_process, envs) -> None:  # noqa: F811  (the fixture above)
    from django.contrib.auth import get_user_model

    from audit.models import AuditEvent
    from rollout.access.keys import sdk_key_create
    from rollout.access.users import user_create
    from rollout.plans.guardrails import guardrail_set
    from rollout.services.flags import flag_create
    from rollout.services.workloads import workload_create

    system = Actor.system("test")
    user_create(actor=system, username="root", password=None, roles=["admin"])
    root = Actor.for_user(get_user_model().objects.get(username="root"))
    workload_create(actor=system, key="accounts", name="Accounts", reversibility="dual_write")
    flag_create(actor=system, key=FLAG, workload="accounts", bucket_by="tenant_id", kind="migration")
    guardrail_set(actor=system, flag=FLAG, environment="staging", version=None, max_mismatch_rate=2,
                  min_sample_size=30, window_seconds=300, action="rollback")
    secret = sdk_key_create(actor=system, environment="staging", name="simulator")[1]
    server_process.start()

    def move(stage: str) -> None:
        submit_state(actor=root, flag=FLAG, environment="staging", action="migration.stage_set",
                     params={"stage": stage}, reason=f"to {stage}")

    def simulate(**rates: float) -> None:
        call_command("simulate_migration", url=server_process.url, sdk_key=secret, flag=FLAG, requests=300,
                     tenants=40, seed=11, flush_interval=0.3, **rates)

    with clock.frozen(clock.now() - timedelta(minutes=2)):  # the stage began before the traffic's minute
        move("dual_write")
        move("shadow")
    # 1. inconsistent reads in shadow: the worker rolls the migration back to dual_write
    simulate(inconsistency_rate=0.3)
    assert _wait_for(lambda: _stage() == "dual_write", timeout=60), "the guardrail did not roll the stage back"
    rollback = AuditEvent.objects.get(action="migration.rolled_back")
    assert (rollback.actor, rollback.after["from_stage"], rollback.after["to_stage"]) == (
        "system:guardrail", "shadow", "dual_write")
    assert rollback.reason.startswith("guardrail: inconsistency rate")

    # 2. consistent again, onwards; a failed secondary write in rampdown becomes a divergence
    move("shadow")
    move("live")
    move("rampdown")
    simulate(write_failure_rate=0.05, write_share=1.0)
    assert _wait_for(lambda: Divergence.objects.filter(resolved_at__isnull=True).exists(), timeout=30)
    api = Client()
    api.force_login(get_user_model().objects.get(username="root"))
    url = f"/api/v1/flags/{FLAG}/states/staging/migration/"
    listed = api.get(url + "divergences/?resolved=false").json()
    assert listed and all(d["origin"] == "legacy" and d["identifier"].startswith("acct-") for d in listed)
    assert _stage() == "rampdown"
    blocked = api.post(url, {"stage": "complete", "version": _version()}, content_type="application/json")
    assert blocked.status_code == 409, blocked.json()
    assert "unresolved divergence" in blocked.json()["error"]["message"]

    # 3. reconciled, resolved (audited), then complete
    resolved = api.post(url + "divergences/resolve/", {"divergences": "all", "reason": "replayed into legacy"},
                        content_type="application/json")
    assert resolved.status_code == 200
    done = api.post(url, {"stage": "complete", "version": _version()}, content_type="application/json")
    assert done.status_code == 200 and done.json()["migration"]["stage"] == "complete"
    export = b"".join(api.get(url + "divergences/export?format=jsonl").streaming_content).decode().splitlines()
    assert export and all(json.loads(line)["resolution"] == "replayed into legacy" for line in export)
    actions = list(AuditEvent.objects.filter(object_key=f"{FLAG}@staging").order_by("sequence")
                   .values_list("action", flat=True))
    assert actions.count("migration.rolled_back") == 1 and actions[-1] == "migration.stage_set"
    assert "migration.divergences_resolved" in actions


def _version() -> int:
    from rollout.models import FlagState

    return FlagState.objects.get(flag__key=FLAG, environment__key="staging").version
