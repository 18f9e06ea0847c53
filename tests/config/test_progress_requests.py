"""Rollout progress in files (a stage moved in a file is an advance or a rollback with the API's policy),
problems inside an environment's block named by file, line and field path, and several changes of one
flag state carried by one change request, so approvals in any order never make each other stale."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from actions.config.files import ConfigInvalid
from tests.config.test_plan_apply import _by, _edit, _files, _state


def _production(files: dict[str, str], flag: str) -> dict[str, Any]:
    env: dict[str, Any] = yaml.safe_load(files[f"flags/{flag}.yaml"])["flags"][0]["environments"]["production"]
    return env


def test_plan__stage_moved_in_file__advance_with_api_policy_rollback_at_once(demo: None,
                                                                           actors: dict[str, Any]) -> None:
    from actions.config.plan import Context, apply, plan
    from actions.submit import preview
    from rollout.demo import seed_story
    from rollout.models import FlagState

    seed_story()
    editor = actors["editor"]
    files = _files()
    forward = _edit(files, "flags/invoice-engine.yaml",
                    lambda d: _state(d, "production")["progress"].update(stage="100%"))

    planned = plan(actor=editor, files=forward)

    advances = _by(planned, "flag_state", "invoice-engine@production")
    assert [c.action for c in advances] == ["flag_state.advanced", "flag_state.advanced"]
    assert [c.diff["progress.stage"] for c in advances] == [{"before": "25%", "after": "50%"},
                                                            {"before": "50%", "after": "100%"}]
    api = preview(actor=editor, action="flag_state.advanced", target="invoice-engine@production")
    assert str(api.verdict) == "request" and {c.ruling for c in advances} == {"request"}
    assert all(api.message in c.why for c in advances) and advances[0].together == 2

    back = _edit(files, "flags/invoice-engine.yaml",
                 lambda d: _state(d, "production")["progress"].update(stage="pilot", paused=True))
    planned = plan(actor=editor, files=back)
    rollbacks = _by(planned, "flag_state", "invoice-engine@production")
    assert [(c.action, c.ruling) for c in rollbacks] == [("flag_state.rolled_back", "apply")] * 2

    result = apply(actor=editor, files=back, versions=planned.versions, context=Context(commit="c0ffee"))

    assert [r["result"] for r in result["results"]] == ["applied", "applied"]
    state = FlagState.objects.get(flag__key="invoice-engine", environment__key="production")
    assert state.stage == 3 and state.paused_at is not None and float(state.percentage) == 0.0
    assert _production(_files(), "invoice-engine")["progress"] == {"stage": "pilot", "paused": True}
    # the file names the stage, not its split: nothing of the rollout is left to do (the workload's phase
    # follows its rollouts — rolled back, it is no longer in transition — so only that differs)
    assert "percentage: 25" not in files["flags/invoice-engine.yaml"].split("production:")[1].split("plan:")[0]
    assert [(c.kind, c.key) for c in plan(actor=editor, files=back).pending] == [("workload", "invoice-engine")]


BLOCKS = """turnout: 1
flags:
- key: customer-search
  workload: customer-search
  environments:
    staging:
      enabled: true
      include_cohorts:
      - internal-staff
      - nobody-here
      plan:
      - name: one
        include_cohorts: [ghosts]
    mars:
      enabled: true
"""

STARTED = """turnout: 1
flags:
- key: invoice-engine
  workload: invoice-engine
  environments:
    production:
      plan: []
      progress:
        stage: nine
      guardrails: null
"""

SCHEMA = """turnout: 1
flags:
- key: customer-search
  workload: customer-search
  environments:
    staging:
      enabled: true
    production:
      percentage: 150
      progress:
        stage: pilot
        paused: sometimes
      percent: 5
"""


def test_plan__problems_in_environment_blocks__file_line_and_field_path(demo: None, actors: dict[str, Any]) -> None:
    from actions.config.plan import plan
    from rollout.demo import seed_story

    seed_story()
    files = {**_files(), "flags/customer-search.yaml": BLOCKS, "flags/invoice-engine.yaml": STARTED}
    with pytest.raises(ConfigInvalid) as caught:
        plan(actor=actors["admin"], files=files)
    problems = {(p.file, p.line, p.field) for p in caught.value.problems}
    assert problems == {
        ("flags/customer-search.yaml", 10, "flags[0].environments.staging.include_cohorts[1]"),
        ("flags/customer-search.yaml", 13, "flags[0].environments.staging.plan[0].include_cohorts[0]"),
        ("flags/customer-search.yaml", 14, "flags[0].environments.mars"),
        ("flags/invoice-engine.yaml", 7, "flags[0].environments.production.plan"),
        ("flags/invoice-engine.yaml", 9, "flags[0].environments.production.progress.stage"),
        ("flags/invoice-engine.yaml", 10, "flags[0].environments.production.guardrails"),
    }
    by_field = {p.field: p.message for p in caught.value.problems}
    assert "'nine' is not a stage of the plan (validate, internal" in by_field[
        "flags[0].environments.production.progress.stage"]
    assert "cohort 'ghosts'" in by_field["flags[0].environments.staging.plan[0].include_cohorts[0]"]
    assert "environment 'mars' does not exist" in by_field["flags[0].environments.mars"]

    with pytest.raises(ConfigInvalid) as caught:
        plan(actor=actors["admin"], files={**_files(), "flags/customer-search.yaml": SCHEMA})
    assert {(p.line, p.field) for p in caught.value.problems} == {
        (9, "flags[0].environments.production.percentage"),
        (12, "flags[0].environments.production.progress.paused"),
        (13, "flags[0].environments.production.percent"),
    }


def _several_changes(files: dict[str, str]) -> dict[str, str]:
    """Plan, guardrails and the split of customer-search in production; plan and guardrails of invoice-engine
    there; a member of a cohort production uses."""
    def search(doc: dict[str, Any]) -> None:
        _state(doc, "production").update(
            plan=[{"name": "staff", "percentage": 0, "include_cohorts": ["internal-staff"]},
                  {"name": "all", "percentage": 100}],
            guardrails={"max_error_rate": 2, "action": "kill"}, compare_percentage=30)

    def invoices(doc: dict[str, Any]) -> None:
        _state(doc, "production").update(plan=[{"name": "half", "percentage": 50}, {"name": "all", "percentage": 100}],
                                         guardrails={"max_error_rate": 1})

    files = _edit(files, "flags/customer-search.yaml", search)
    files = _edit(files, "flags/invoice-engine.yaml", invoices)
    return {**files, "cohorts/beta-testers.include.csv": files["cohorts/beta-testers.include.csv"] + "user-5000\n"}


@pytest.mark.parametrize("order", ["as_requested", "reversed"])
def test_apply__several_changes_of_one_state__one_request_each_approved_in_any_order(
        demo: None, actors: dict[str, Any], order: str, client: Any) -> None:
    from django.contrib.auth import get_user_model

    from actions.config.plan import Context, apply, plan
    from actions.submit import change_request_approve
    from audit.models import AuditEvent
    from rollout.models import ChangeRequest

    files = _several_changes(_files())
    planned = plan(actor=actors["editor"], files=files)
    assert (planned.summary()["request"], planned.summary()["change_requests"]) == (6, 3)
    result = apply(actor=actors["editor"], files=files, versions=planned.versions,
                   context=Context(commit="0a1b2c3", path="turnout"))

    requests = list(dict.fromkeys(r["change_request"]["id"] for r in result["results"]
                                  if r["result"] == "change_request"))
    by_target = {ChangeRequest.objects.get(pk=pk).target_key: pk for pk in requests}
    assert sorted(by_target) == ["beta-testers", "customer-search@production", "invoice-engine@production"]
    search = ChangeRequest.objects.get(pk=by_target["customer-search@production"])
    assert search.action == "flag_state.configured"
    assert [s["action"] for s in search.params["steps"]] == ["flag_state.plan_set", "flag_state.guardrails_set",
                                                             "flag_state.updated"]
    assert search.summary.startswith("3 changes of customer-search@production together: set the rollout plan")
    client.force_login(get_user_model().objects.get(pk=actors["approver"].user_id))
    page = client.get(f"/changes/{search.pk}/")
    assert page.status_code == 200 and "flag_state.guardrails_set" in page.content.decode()

    for pk in (requests if order == "as_requested" else requests[::-1]):
        change_request_approve(actor=actors["approver"], change_request=pk)

    assert {ChangeRequest.objects.get(pk=pk).status for pk in requests} == {"applied"}
    assert not plan(actor=actors["editor"], files=files).pending
    events = AuditEvent.objects.filter(object_key="customer-search@production").order_by("sequence")
    steps = [e for e in events if (e.after or {}).get("approval", {}).get("change_request") == search.pk]
    assert [e.action for e in steps] == ["flag_state.plan_set", "flag_state.guardrails_set", "flag_state.updated"]
    assert all("turnout apply of turnout/flags/customer-search.yaml" in e.reason and "0a1b2c3" in e.reason
               for e in steps)


def test_submit__configured_with_bad_steps__400_naming_the_step(demo: None, actors: dict[str, Any]) -> None:
    from actions.submit import submit
    from common.errors import ValidationFailed

    target = "customer-search@staging"
    for steps, field in (([], "steps"), ([{"action": "flag_state.updated", "params": [1]}], "steps[0]"),
                         ([{"action": "flag.updated", "params": {}}], "steps[0].action"),
                         ([{"action": "flag_state.configured", "params": {}}], "steps[0].action"),
                         ([{"action": "flag_state.updated", "params": {"colour": 1}}], "params.colour")):
        with pytest.raises(ValidationFailed) as caught:
            submit(actor=actors["admin"], action="flag_state.configured", target=target, params={"steps": steps})
        assert field in caught.value.as_body()["error"]["fields"], (steps, caught.value.as_body())
