"""Optimistic concurrency under real contention, on PostgreSQL, through the API."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from audit.models import AuditEvent
from rollout.models import FlagState
from tests.api.conftest import bearer_client, make_user

THREADS = 20


@pytest.mark.services
def test_flag_state_update__20_threads_same_version__one_200_nineteen_409_one_event(postgres, transactional_db: Any):
    from common.actors import Actor
    from rollout.services.environments import environment_create
    from rollout.services.flags import flag_create
    from rollout.services.workloads import workload_create

    actor = Actor.system("test")
    environment_create(actor=actor, key="staging", name="Staging")
    workload_create(actor=actor, key="billing", name="Billing")
    flag_create(actor=actor, key="invoice-engine", workload="billing")
    _, secret = make_user("deployer", ["editor"])
    before = AuditEvent.objects.count()
    version = FlagState.objects.get().version

    barrier = threading.Barrier(THREADS)
    results: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def attempt(n: int) -> None:
        try:
            client = bearer_client(secret)
            barrier.wait(timeout=30)
            response = client.patch("/api/v1/flags/invoice-engine/states/staging/",
                                    {"version": version, "percentage": n + 1}, format="json")
            with lock:
                results.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [409] * (THREADS - 1), statuses
    winner = next(body for status, body in results if status == 200)
    assert winner["version"] == version + 1
    assert {body["error"]["current_version"] for status, body in results if status == 409} == {version + 1}
    state = FlagState.objects.get()
    assert (state.version, float(state.percentage)) == (version + 1, winner["percentage"])
    new_events = list(AuditEvent.objects.filter(sequence__gt=before).order_by("sequence"))
    assert [e.action for e in new_events] == ["flag_state.updated"]
    assert new_events[0].after["percentage"] == winner["percentage"]


def _rolling_out(actor: Any) -> int:
    """invoice-engine in staging, two stages into the standard plan (no soak): the version it stands at."""
    from rollout.plans.stages import plan_set, plan_template, rollout_advance
    from rollout.services.environments import environment_create
    from rollout.services.flags import flag_create
    from rollout.services.workloads import workload_create

    environment_create(actor=actor, key="staging", name="Staging")
    workload_create(actor=actor, key="billing", name="Billing")
    flag_create(actor=actor, key="invoice-engine", workload="billing")
    plan_set(actor=actor, flag="invoice-engine", environment="staging", version=None,
             stages=plan_template("standard", soak_seconds=0))
    rollout_advance(actor=actor, flag="invoice-engine", environment="staging")
    rollout_advance(actor=actor, flag="invoice-engine", environment="staging")
    return FlagState.objects.get().version


@pytest.mark.services
@pytest.mark.parametrize(("lever", "action"), [("rollback", "flag_state.rolled_back"),
                                                ("advance", "flag_state.advanced"),
                                                ("kill", "flag_state.killed")])
def test_lever__20_threads_same_version__one_applied_nineteen_409_chain_verifies(
        postgres, transactional_db: Any, lever: str, action: str):
    """The issue's race: five simultaneous rollbacks of a stage-3 rollout went back three stages."""
    from audit.verify import verify_chain
    from common.actors import Actor

    version = _rolling_out(Actor.system("test"))
    stage = FlagState.objects.get().stage
    _, secret = make_user("operator", ["admin"])
    before = AuditEvent.objects.count()
    barrier = threading.Barrier(THREADS)
    statuses: list[int] = []
    lock = threading.Lock()

    def attempt() -> None:
        try:
            client = bearer_client(secret)
            barrier.wait(timeout=30)
            response = client.post(f"/api/v1/flags/invoice-engine/states/staging/{lever}/",
                                    {"version": version, "reason": "race"}, format="json")
            with lock:
                statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert sorted(statuses) == [200] + [409] * (THREADS - 1), statuses
    state = FlagState.objects.get()
    assert state.version == version + 1
    assert state.stage == {"rollback": stage - 1, "advance": stage + 1, "kill": stage}[lever]
    assert [e.action for e in AuditEvent.objects.filter(sequence__gt=before)] == [action]
    assert verify_chain().ok
