"""Export → apply to an empty installation → export: the same files, byte for byte, and the same rulesets
(canonical JSON, versions aside) — on the demo data and on generated data."""

from __future__ import annotations

import random
from typing import Any

import pytest
import yaml

from tests.config.conftest import canonical, rulesets, wipe


def rulesets_stages(documents: dict[str, Any]) -> dict[str, int]:
    return {f"{flag}@{env}": rule["stage"] for env, doc in documents.items() for flag, rule in doc["flags"].items()
            if rule["stage"]}


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


def test_round_trip__demo_story_started_plan__same_progress_files_and_rulesets(
        demo: None, actors: dict[str, Any]) -> None:
    from rollout.demo import seed_story

    seed_story()  # invoice-engine in production advanced to its 25% stage (as dev_setup leaves it)
    files, again, before, after = _round_trip(actors["admin"])

    production = yaml.safe_load(files["flags/invoice-engine.yaml"])["flags"][0]["environments"]["production"]
    assert production["progress"] == {"stage": "25%", "paused": False}
    assert again == files
    assert canonical(after) == canonical(before)
    assert rulesets_stages(after)["invoice-engine@production"] > 0


def test_round_trip__demo_data_migration_in_shadow__same_stage_files_and_rulesets(
        demo: None, actors: dict[str, Any]) -> None:
    from rollout.datamigration.demo import FLAG, seed_migration_demo

    seed_migration_demo()  # accounts-store in staging at 'shadow' with a divergence limit (as dev_setup leaves it)
    files, again, before, after = _round_trip(actors["admin"])

    staging = yaml.safe_load(files[f"flags/{FLAG}.yaml"])["flags"][0]["environments"]["staging"]
    assert staging["migration"] == {"stage": "shadow", "max_divergences": 50}
    assert again == files
    assert canonical(after) == canonical(before)
    assert after["staging"]["flags"][FLAG]["migration"]["stage"] == "shadow"


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
                    kind="migration" if f in MIGRATION_FLAGS else "release")
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
    if seed == 1:  # one seed carries started rollouts (CI time: each advance is a real action)
        _progress(rng, envs, system)
    else:  # the other, data migrations at every stage, with splits, placed cohorts and rollbacks
        _migrations(envs, system)


MIGRATION_FLAGS = (5, 8, 9, 10)


def _migrations(envs: list[str], system: Any) -> None:
    """Migration flags in each shape the ``migration`` block must carry: a split ahead of the base, a cohort
    placed ahead (then killed), complete (irreversible), rolled back from live, a divergence limit alone at
    'off'."""
    from actions.submit import submit_state

    def stage_set(flag: str, env: str, **params: Any) -> None:
        submit_state(actor=system, flag=flag, environment=env, action="migration.stage_set", params=params,
                     reason="generated")

    stage_set("flag-5", envs[0], stage="dual_write")
    stage_set("flag-5", envs[0], stage="shadow", max_divergences=50)
    stage_set("flag-5", envs[0], splits=[{"stage": "live", "percentage": 25}])
    for stage in ("dual_write", "shadow", "live", "rampdown", "complete"):
        stage_set("flag-8", envs[1], stage=stage)
    stage_set("flag-8", envs[0], stage="off", splits=[{"stage": "dual_write", "percentage": 12.5}])
    stage_set("flag-9", envs[0], stage="dual_write")
    stage_set("flag-9", envs[0], splits=[{"stage": "shadow", "percentage": 10}], cohorts=[{"cohort": "c1", "stage": "shadow"}])
    stage_set("flag-9", envs[2], max_divergences=5)
    for stage in ("dual_write", "shadow", "live"):
        stage_set("flag-10", envs[2], stage=stage)
    submit_state(actor=system, flag="flag-10", environment=envs[2], action="migration.rolled_back", reason="back")
    submit_state(actor=system, flag="flag-9", environment=envs[0], action="flag_state.killed", reason="stop")
    stage_set("flag-10", envs[1], stage="dual_write")
    stage_set("flag-10", envs[1], splits=[{"stage": "shadow", "percentage": 50}])
    stage_set("flag-10", envs[1], splits=[{"stage": "shadow", "percentage": 50}, {"stage": "live", "percentage": 5}],
              cohorts=[{"cohort": "c3", "stage": "live"}])


def _progress(rng: random.Random, envs: list[str], system: Any) -> None:
    """Started rollouts in every shape the files must carry: running, paused, killed, rolled back (paused
    one stage lower), paused before the start, in an environment that requires approval and not."""
    from actions.submit import submit_state
    from rollout.models import FlagState
    from rollout.plans.stages import plan_set, plan_template

    shapes = ["running", "paused", "killed", "rolled_back", "killed_paused", "running", "paused_at_start"]
    for f, shape in enumerate(shapes):
        key, env = f"flag-{f}", envs[1 + f % 2]
        state = FlagState.objects.get(flag__key=key, environment__key=env)
        if not state.stages.exists():
            plan_set(actor=system, flag=key, environment=env, version=None,
                     stages=plan_template(soak_seconds=rng.choice([0, 600])))
        if shape == "paused_at_start":
            submit_state(actor=system, flag=key, environment=env, action="flag_state.paused", reason="hold")
            continue
        for _ in range(rng.randint(1, 3)):
            submit_state(actor=system, flag=key, environment=env, action="flag_state.advanced", reason="onwards")
        if shape in {"paused", "killed_paused"}:
            submit_state(actor=system, flag=key, environment=env, action="flag_state.paused", reason="hold")
        if shape in {"killed", "killed_paused"}:
            submit_state(actor=system, flag=key, environment=env, action="flag_state.killed", reason="stop")
        if shape == "rolled_back":
            submit_state(actor=system, flag=key, environment=env, action="flag_state.rolled_back", reason="back")


@pytest.mark.parametrize("seed", [1, 2])
def test_round_trip__generated_data__same_files_and_rulesets(db: Any, actors: dict[str, Any], seed: int) -> None:
    _generate(seed)
    files, again, before, after = _round_trip(actors["admin"])

    assert "kind: migration" in files["flags/flag-5.yaml"] and "kind:" not in files["flags/flag-4.yaml"]
    assert "environment 1: described" in files["environments.yaml"]
    assert again == files
    assert canonical(after) == canonical(before)
    if seed == 1:  # killed, paused, rolled back and running rollouts kept their progress
        progress = {k: yaml.safe_load(files[f"flags/{k}.yaml"])["flags"][0]["environments"][e].get("progress")
                    for k, e in (("flag-0", "env-1"), ("flag-1", "env-2"), ("flag-2", "env-1"), ("flag-3", "env-2"),
                                 ("flag-6", "env-1"))}
        assert progress["flag-0"]["paused"] is False and progress["flag-1"]["paused"] is True
        assert progress["flag-6"] == {"stage": None, "paused": True}
        assert "enabled: false" in files["flags/flag-2.yaml"]
        assert rulesets_stages(before) == rulesets_stages(after) and any(rulesets_stages(before).values())
    else:  # every migration shape kept its stages, splits, cohorts and limit
        migration = {(k, e): yaml.safe_load(files[f"flags/{k}.yaml"])["flags"][0]["environments"][e].get("migration")
                     for k, e in (("flag-5", "env-0"), ("flag-8", "env-1"), ("flag-9", "env-0"), ("flag-9", "env-2"),
                                  ("flag-10", "env-2"), ("flag-10", "env-0"))}
        assert migration[("flag-5", "env-0")] == {"stage": "shadow", "splits": [{"stage": "live", "percentage": 25.0}],
                                                  "max_divergences": 50}
        assert migration[("flag-8", "env-1")] == {"stage": "complete"}
        assert migration[("flag-9", "env-0")]["cohorts"] == [{"cohort": "c1", "stage": "shadow"}]
        assert yaml.safe_load(files["flags/flag-9.yaml"])["flags"][0]["environments"]["env-0"]["enabled"] is False
        assert migration[("flag-9", "env-2")] == {"stage": "off", "max_divergences": 5}
        assert migration[("flag-10", "env-2")] == {"stage": "shadow"}
        assert migration[("flag-10", "env-0")] is None  # a migration flag state at 'off' writes no block
        stages = {f"{flag}@{env}": rule["migration"] for env, doc in after.items()
                  for flag, rule in doc["flags"].items() if "migration" in rule}
        assert stages["flag-8@env-1"]["stage"] == "complete" and stages["flag-10@env-1"]["cohorts"]
