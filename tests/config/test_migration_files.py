"""Data-migration stages in files: a stage moved in a file is a ``migration.stage_set`` per allowed step with
the API's policy (``live`` needs approval in production, ``complete`` of an irreversible workload always
does), a move back is a ``migration.rolled_back`` at once, ``complete`` cannot be undone by a file, and bad
``migration`` blocks are named by file, line and field path."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from actions.config.files import ConfigInvalid
from tests.config.conftest import rulesets
from tests.config.test_plan_apply import _by, _edit, _files, _state

FLAG = "accounts-store"
PATH = f"flags/{FLAG}.yaml"


def _migration(files: dict[str, str], env: str) -> Any:
    return yaml.safe_load(files[PATH])["flags"][0]["environments"][env].get("migration")


def _set(env_stage: dict[str, dict[str, Any]]) -> Any:
    def change(doc: dict[str, Any]) -> None:
        for env, block in env_stage.items():
            _state(doc, env)["migration"] = block
    return change


@pytest.fixture
def shadow_everywhere(demo: None) -> None:
    from rollout.datamigration.demo import seed_migration_demo

    seed_migration_demo()
    seed_migration_demo(environment="production")


def test_plan__migration_stage_moved_in_file__stage_set_with_api_policy_live_needs_approval_in_production(
        shadow_everywhere: None, actors: dict[str, Any]) -> None:
    from actions.config.plan import Context, apply, plan
    from actions.submit import preview

    editor = actors["editor"]
    files = _files()
    assert _migration(files, "production") == {"stage": "shadow", "max_divergences": 50}
    forward = _edit(files, PATH, _set({"staging": {"stage": "live", "max_divergences": 50},
                                       "production": {"stage": "live", "max_divergences": 50}}))

    planned = plan(actor=editor, files=forward)

    [staging] = _by(planned, "flag_state", f"{FLAG}@staging")
    [prod] = _by(planned, "flag_state", f"{FLAG}@production")
    assert prod.action == staging.action == "migration.stage_set"
    assert prod.params == {"stage": "live", "splits": [], "cohorts": []}
    assert prod.diff == {"migration": {"before": {"stage": "shadow", "splits": [], "cohorts": []},
                                       "after": {"stage": "live", "splits": [], "cohorts": []}}}
    lines = forward[PATH].splitlines()
    production_at = next(n for n, line in enumerate(lines) if line.strip() == "production:")
    assert (prod.file, prod.line) == (PATH, next(n for n, line in enumerate(lines, 1)
                                                 if n > production_at and line.strip() == "stage: live"))
    for change, env in ((prod, "production"), (staging, "staging")):
        api = preview(actor=editor, action="migration.stage_set", target=f"{FLAG}@{env}", params={"stage": "live"})
        assert (change.ruling, change.why) == (str(api.verdict), api.message)
    assert prod.ruling == "request" and "production" in prod.why and staging.ruling == "apply"

    result = apply(actor=editor, files=forward, versions=planned.versions, context=Context(commit="c0ffee"))

    assert [r["result"] for r in result["results"]] == ["applied", "change_request"]
    assert rulesets()["staging"]["flags"][FLAG]["migration"]["stage"] == "live"
    assert rulesets()["production"]["flags"][FLAG]["migration"]["stage"] == "shadow"

    # back: a rollback per stage, at once (it never waits for approval), even in production
    back = _edit(_files(), PATH, _set({"staging": {"stage": "dual_write", "max_divergences": 50},
                                       "production": {"stage": "dual_write", "max_divergences": 50}}))
    planned = plan(actor=editor, files=back)
    assert [(c.action, c.ruling) for c in _by(planned, "flag_state", f"{FLAG}@staging")] == [
        ("migration.rolled_back", "apply")] * 2
    assert [(c.action, c.ruling) for c in _by(planned, "flag_state", f"{FLAG}@production")] == [
        ("migration.rolled_back", "apply")]

    result = apply(actor=editor, files=back, versions=planned.versions, context=Context(commit="c0ffee"))

    assert {r["result"] for r in result["results"]} == {"applied"}
    assert _migration(_files(), "staging") == _migration(_files(), "production") == {
        "stage": "dual_write", "max_divergences": 50}
    assert not plan(actor=editor, files=back).pending


def test_plan__migration_several_stages_ahead_with_splits__one_allowed_step_each(
        demo: None, actors: dict[str, Any]) -> None:
    from actions.config.plan import apply, plan

    files = {**_files(), "flags/ledger-move.yaml": yaml.safe_dump({"turnout": 1, "flags": [{
        "key": "ledger-move", "workload": "notifications", "kind": "migration", "environments": {"staging": {
            "migration": {"stage": "shadow", "splits": [{"stage": "live", "percentage": 10}],
                          "cohorts": [{"cohort": "internal-staff", "stage": "live"}], "max_divergences": 3}}}}]})}

    planned = plan(actor=actors["admin"], files=files)

    steps = [c.params for c in _by(planned, "flag_state", "ledger-move@staging")]
    assert [(p["stage"], p["splits"], p["cohorts"]) for p in steps] == [
        ("dual_write", [], [{"cohort": "internal-staff", "stage": "dual_write"}]),
        ("shadow", [], [{"cohort": "internal-staff", "stage": "shadow"}]),
        ("shadow", [{"stage": "live", "percentage": 10.0}], [{"cohort": "internal-staff", "stage": "live"}]),
    ]
    assert steps[0]["max_divergences"] == 3 and "max_divergences" not in steps[1]

    result = apply(actor=actors["admin"], files=files, versions=planned.versions)

    assert {r["result"] for r in result["results"]} == {"applied"}
    exported = yaml.safe_load(_files()["flags/ledger-move.yaml"])["flags"][0]["environments"]["staging"]
    assert exported["migration"] == {"stage": "shadow", "splits": [{"stage": "live", "percentage": 10.0}],
                                     "cohorts": [{"cohort": "internal-staff", "stage": "live"}], "max_divergences": 3}
    assert exported["enabled"] is True
    assert not plan(actor=actors["admin"], files=_files()).pending


def test_plan__migration_complete__irreversible_workload_needs_approval_and_no_file_undoes_it(
        shadow_everywhere: None, actors: dict[str, Any]) -> None:
    from actions.config.plan import plan
    from actions.submit import preview, submit, submit_state
    from common.actors import Actor

    system = Actor.system("test")
    submit(actor=system, action="workload.updated", target="accounts", params={"reversibility": "irreversible"})
    to_complete = _edit(_files(), PATH, _set({"staging": {"stage": "complete"}}))

    planned = plan(actor=actors["editor"], files=to_complete)

    steps = _by(planned, "flag_state", f"{FLAG}@staging")
    assert [c.params["stage"] for c in steps] == ["live", "rampdown", "complete"]
    api = preview(actor=actors["editor"], action="migration.stage_set", target=f"{FLAG}@staging",
                  params={"stage": "complete"})
    assert str(api.verdict) == "request" and "irreversible" in api.message
    assert [c.ruling for c in steps] == ["apply", "apply", "request"]  # live is not gated in staging
    assert api.message in steps[-1].why

    for stage in ("live", "rampdown", "complete"):
        submit_state(actor=system, flag=FLAG, environment="staging", action="migration.stage_set",
                     params={"stage": stage}, reason="test")
    files = _files()
    assert _migration(files, "staging") == {"stage": "complete", "max_divergences": 50}
    undo = _edit(files, PATH, _set({"staging": {"stage": "rampdown", "max_divergences": 50}}))

    with pytest.raises(ConfigInvalid) as caught:
        plan(actor=actors["admin"], files=undo)

    [problem] = caught.value.problems
    assert (problem.file, problem.field) == (PATH, "flags[0].environments.staging.migration.stage")
    assert problem.line == next(n for n, line in enumerate(undo[PATH].splitlines(), 1) if "stage: rampdown" in line)
    assert "'complete' is irreversible" in problem.message and "no file can undo" in problem.message


BAD = """turnout: 1
flags:
- key: accounts-store
  workload: accounts
  kind: migration
  environments:
    staging:
      migration:
        stage: shadow
        splits:
        - {stage: complete, percentage: 5}
        cohorts:
        - {cohort: ghosts, stage: live}
"""

RELEASE = """turnout: 1
flags:
- key: customer-search
  workload: customer-search
  environments:
    staging:
      migration: {stage: dual_write}
"""

SCHEMA = """turnout: 1
flags:
- key: accounts-store
  workload: accounts
  kind: migration
  environments:
    staging:
      migration:
        stage: shadow
        speed: 3
        max_divergences: -1
"""


def test_plan__bad_migration_blocks__file_line_and_field_path(shadow_everywhere: None,
                                                              actors: dict[str, Any]) -> None:
    from actions.config.plan import plan

    files = _files()
    with pytest.raises(ConfigInvalid) as caught:
        plan(actor=actors["admin"], files={**files, PATH: BAD})
    assert {(p.file, p.line, p.field) for p in caught.value.problems} == {
        (PATH, 13, "flags[0].environments.staging.migration.cohorts[0].cohort")}

    with pytest.raises(ConfigInvalid) as caught:
        plan(actor=actors["admin"], files={**files, PATH: BAD.replace("ghosts", "internal-staff")})
    [problem] = caught.value.problems
    assert (problem.line, problem.field) == (11, "flags[0].environments.staging.migration.splits[0].stage")

    with pytest.raises(ConfigInvalid) as caught:
        plan(actor=actors["admin"], files={**files, "flags/customer-search.yaml": RELEASE})
    [problem] = caught.value.problems
    assert (problem.line, problem.field) == (7, "flags[0].environments.staging.migration")
    assert "release flag" in problem.message

    with pytest.raises(ConfigInvalid) as caught:
        plan(actor=actors["admin"], files={**files, PATH: SCHEMA})
    assert {(p.line, p.field) for p in caught.value.problems} == {
        (10, "flags[0].environments.staging.migration.speed"),
        (11, "flags[0].environments.staging.migration.max_divergences"),
    }
