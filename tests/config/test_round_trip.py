"""Export → apply to an empty installation → export: the same files, byte for byte, and the same rulesets
(canonical JSON, versions aside) — on the demo data and on generated data."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.config.conftest import canonical, rulesets, wipe


def _export() -> dict[str, str]:
    from actions.config.export import export_files

    return dict(export_files())


def _round_trip(admin: Any) -> tuple[dict[str, str], dict[str, str], Any, Any]:
    from actions.config.plan import apply, plan

    files, before = _export(), rulesets()
    wipe()
    planned = plan(actor=admin, files=files, create_environments=True)
    result = apply(actor=admin, files=files, versions=planned.versions, create_environments=True,
                   context=None)
    assert result["complete"], result
    assert {r["result"] for r in result["results"]} == {"applied"}
    return files, _export(), before, rulesets()


def test_round_trip__demo_data__same_files_and_rulesets(demo: None, actors: dict[str, Any]) -> None:
    files, again, before, after = _round_trip(actors["admin"])

    assert again == files
    assert canonical(after) == canonical(before)
    assert {"environments.yaml", "workloads.yaml", "cohorts.yaml", "flags/invoice-engine.yaml",
            "cohorts/beta-testers.include.csv"} <= set(files)


def test_round_trip__applied_again__plan_has_no_changes(demo: None, actors: dict[str, Any]) -> None:
    from actions.config.plan import plan

    files = _export()
    planned = plan(actor=actors["admin"], files=files)

    assert not planned.pending
    assert planned.summary()["unchanged"] == len(planned.changes)


def _generate(seed: int) -> None:
    """Environments, workloads of every risk, cohorts with rules and lists, flags with splits, cohorts,
    overrides, plans and guardrails — made through the services, as people would."""
    from actions.submit import submit_state
    from cohorts.services import cohort_create, cohort_members_add
    from common.actors import Actor
    from rollout.plans.guardrails import guardrail_set
    from rollout.plans.stages import plan_set, plan_template
    from rollout.services.environments import environment_create
    from rollout.services.flags import flag_create, flag_state_retire, flag_state_update
    from rollout.services.workloads import workload_create

    rng = random.Random(seed)
    system = Actor.system("generate")
    envs = [f"env-{i}" for i in range(3)]
    for i, key in enumerate(envs):
        environment_create(actor=system, key=key, name=f"Environment {i}", order=i, requires_approval=i == 2,
                           description=f"environment {i}: described" if i else "")
    risks = ["low", "medium", "high", "critical"]
    for w in range(4):
        workload_create(actor=system, key=f"w{w}", name=f"Workload {w}", risk=risks[w],
                        reversibility=rng.choice(["stateless", "dual_write"]), owner=f"team {w}",
                        description="line one\nline two: with a colon" if w == 0 else "")
    cohorts = []
    for c in range(5):
        key = f"c{c}"
        rules = None if c % 2 else {"all": [{"attr": "country", "op": "in", "values": rng.sample(["DE", "FR", "NL"], 2)}]}
        cohort_create(actor=system, key=key, name=f"Cohort {c}", match_on="tenant_id" if c == 1 else "", rules=rules)
        members = [f"s-{c}-{n}" for n in range(rng.randint(0, 300))]
        if members:
            cohort_members_add(actor=system, key=key, subjects=members[: len(members) // 2 or 1], kind="include")
            if len(members) > 2:
                cohort_members_add(actor=system, key=key, subjects=members[len(members) // 2:], kind="exclude")
        cohorts.append(key)
    for f in range(12):
        key = f"flag-{f}"
        flag_create(actor=system, key=key, workload=f"w{f % 4}", bucket_by=rng.choice(["", "tenant_id"]),
                    description=f"flag {f}", salt=key if f % 3 else f"salt-{f}",
                    kind="migration" if f == 5 else "release")
        for env in envs:
            pct = rng.choice([0, 5, 12.5, 50, 100])
            inc = rng.sample(cohorts, rng.randint(0, 2))
            exc = rng.sample([c for c in cohorts if c not in inc], rng.randint(0, 1))
            flag_state_update(actor=system, flag=key, environment=env, version=None, enabled=rng.random() < 0.8,
                              percentage_value=pct, compare_percentage=rng.choice([0, 10, 100]),
                              include_cohorts=inc, exclude_cohorts=exc,
                              overrides={f"user-{n}": rng.choice(["legacy", "parallel"]) for n in range(rng.randint(0, 3))})
            if rng.random() < 0.5:
                plan_set(actor=system, flag=key, environment=env, version=None,
                         stages=plan_template(internal_cohorts=inc[:1], soak_seconds=rng.choice([0, 600])))
            if rng.random() < 0.5:
                guardrail_set(actor=system, flag=key, environment=env, version=None,
                              max_error_rate=rng.choice([None, 1, 2.5]), max_latency_p95_ratio=rng.choice([None, 1.5]),
                              window_seconds=rng.choice([60, 300]), action=rng.choice(["pause", "rollback", "kill"]))
                if rng.random() < 0.5:
                    submit_state(actor=system, flag=key, environment=env, action="flag_state.guardrail_queries_set",
                                 params={"queries": [{"name": "svc-5xx", "query": f"max(svc_5xx{{flag='{key}'}})",
                                                      "max_value": rng.choice([0.01, 2])}]})
        if f == 11:
            flag_state_update(actor=system, flag=key, environment=envs[0], version=None, enabled=True,
                              percentage_value=100)
            flag_state_retire(actor=system, flag=key, environment=envs[0])


@pytest.mark.parametrize("seed", [1, 2])
def test_round_trip__generated_data__same_files_and_rulesets(db: Any, actors: dict[str, Any], seed: int) -> None:
    _generate(seed)
    files, again, before, after = _round_trip(actors["admin"])

    assert "kind: migration" in files["flags/flag-5.yaml"] and "kind:" not in files["flags/flag-4.yaml"]
    assert "environment 1: described" in files["environments.yaml"]
    assert again == files
    assert canonical(after) == canonical(before)
