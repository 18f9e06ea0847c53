"""Plan and apply: every kind of change, the policy's ruling from the action layer, bad files named by file,
line and field, optimistic concurrency, deletions, and the audit events' commit context."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from common.errors import Conflict, Forbidden


def _files() -> dict[str, str]:
    from actions.config.export import export_files

    return dict(export_files())


def _edit(files: dict[str, str], path: str, change: Any) -> dict[str, str]:
    doc = yaml.safe_load(files[path])
    change(doc)
    return {**files, path: yaml.safe_dump(doc, sort_keys=False)}


def _by(plan: Any, kind: str, key: str) -> list[Any]:
    return [c for c in plan.changes if c.kind == kind and c.key == key]


def _state(doc: dict[str, Any], env: str) -> dict[str, Any]:
    state: dict[str, Any] = doc["flags"][0]["environments"][env]
    return state


def test_plan__every_kind_of_change__diff_and_ruling(demo: None, actors: dict[str, Any]) -> None:
    from actions.config.plan import plan

    files = _files()
    files = _edit(files, "flags/customer-search.yaml", lambda d: _state(d, "staging").update(percentage=75))
    files = _edit(files, "flags/customer-search.yaml", lambda d: _state(d, "production").update(compare_percentage=30))
    files = _edit(files, "workloads.yaml", lambda d: next(
        w for w in d["workloads"] if w["key"] == "notifications").update(owner="new-team"))
    files = _edit(files, "workloads.yaml", lambda d: d["workloads"].append(
        {"key": "ledger", "name": "Ledger", "risk": "low"}))
    files["flags/ledger-engine.yaml"] = yaml.safe_dump({"turnout": 1, "flags": [
        {"key": "ledger-engine", "workload": "ledger", "environments": {"staging": {"enabled": True, "percentage": 5}}}]})
    files = _edit(files, "flags/customer-search.yaml", lambda d: _state(d, "staging").update(
        plan=[{"name": "pilot", "percentage": 0, "include_cohorts": ["internal-staff"]},
              {"name": "all", "percentage": 100}],
        guardrails={"max_error_rate": 2, "action": "kill"}))
    files["cohorts/beta-testers.include.csv"] += "user-5000\n"

    planned = plan(actor=actors["editor"], files=files)

    staging = {c.action: c for c in _by(planned, "flag_state", "customer-search@staging")}
    assert staging["flag_state.updated"].diff == {"percentage": {"before": 50.0, "after": 75}}
    assert staging["flag_state.updated"].ruling == "apply"
    assert staging["flag_state.plan_set"].ruling == "apply"
    assert staging["flag_state.guardrails_set"].diff["guardrails"]["after"]["max_error_rate"] == 2
    [prod] = _by(planned, "flag_state", "customer-search@production")
    assert prod.diff == {"compare_percentage": {"before": 20.0, "after": 30}}
    assert prod.ruling == "request" and "environment 'production' requires approval" in prod.why
    [workload] = _by(planned, "workload", "notifications")
    assert workload.op == "update" and workload.diff == {"owner": {"before": "platform-team", "after": "new-team"}}
    assert [c.op for c in _by(planned, "workload", "ledger")] == ["create"]
    assert [c.action for c in _by(planned, "flag", "ledger-engine")] == ["flag.created"]
    assert [c.action for c in _by(planned, "flag_state", "ledger-engine@staging")] == ["flag_state.updated"]
    [members] = _by(planned, "cohort", "beta-testers")
    assert members.action == "cohort.members_changed" and members.params["add"] == ["user-5000"]
    assert members.ruling == "request"  # beta-testers is used in production, which requires approval
    assert [c.op for c in _by(planned, "flag", "invoice-engine")] == ["unchanged"]
    assert [c.op for c in _by(planned, "flag_state", "invoice-engine@production")] == ["unchanged"]
    assert planned.summary()["request"] == 2


def test_plan__viewer__every_change_refused(demo: None, actors: dict[str, Any]) -> None:
    from actions.config.plan import apply, plan

    files = _edit(_files(), "flags/customer-search.yaml", lambda d: _state(d, "staging").update(percentage=75))
    planned = plan(actor=actors["viewer"], files=files)

    [change] = planned.pending
    assert change.ruling == "refuse" and "viewer" in change.why
    with pytest.raises(Forbidden, match="refused, nothing was applied"):
        apply(actor=actors["viewer"], files=files, versions=planned.versions)


@pytest.mark.parametrize("role", ["editor", "approver", "admin"])
def test_plan__ruling__same_as_submitting_the_change(demo: None, actors: dict[str, Any], role: str) -> None:
    """Policy parity: what the plan says is what the action layer does with the same change (the UI and the
    API submit there too)."""
    from actions.config.plan import plan
    from actions.submit import submit

    files = _edit(_files(), "flags/customer-search.yaml", lambda d: _state(d, "production").update(percentage=10))
    files = _edit(files, "flags/payment-routing.yaml", lambda d: _state(d, "staging").update(percentage=20))
    planned = plan(actor=actors[role], files=files)
    for change in planned.pending:
        try:  # each change targets its own flag state: submitting one leaves the others' rulings as they were
            outcome = submit(actor=actors[role], action=change.action, target=change.key, params=change.params)
            got = "apply" if outcome.applied else "request"
        except Forbidden:
            got = "refuse"
        assert got == change.ruling, change


def test_apply__approval_and_direct__change_request_linked_and_commit_in_audit(
        demo: None, actors: dict[str, Any], audit_events: Any) -> None:
    from actions.config.plan import Context, apply, plan
    from rollout.models import ChangeRequest, FlagState

    files = _edit(_files(), "flags/customer-search.yaml", lambda d: (_state(d, "staging").update(percentage=75),
                                                                      _state(d, "production").update(percentage=5)))
    planned = plan(actor=actors["editor"], files=files)
    result = apply(actor=actors["editor"], files=files, versions=planned.versions,
                   context=Context(commit="4f2c9e1", path="deploy/turnout", reason="widen search"))

    by_key = {r["key"]: r for r in result["results"]}
    assert by_key["customer-search@staging"]["result"] == "applied"
    cr_link = by_key["customer-search@production"]["change_request"]
    cr = ChangeRequest.objects.get(pk=cr_link["id"])
    assert cr.status == "pending" and cr.params == {"percentage": 5}
    assert cr_link["url"] == f"/api/v1/change-requests/{cr.pk}/"
    assert FlagState.objects.get(flag__key="customer-search", environment__key="staging").percentage == 75
    events = audit_events()
    assert [e.action for e in events] == ["flag_state.updated", "change_request.created"]
    assert all("at commit 4f2c9e1" in e.reason and "deploy/turnout/flags/customer-search.yaml:" in e.reason
               and e.reason.startswith("widen search") for e in events)


def test_apply__installation_moved_since_plan__refused_nothing_applied(
        demo: None, actors: dict[str, Any], audit_events: Any) -> None:
    from actions.config.plan import apply, plan
    from rollout.services.flags import flag_state_update

    files = _edit(_files(), "flags/customer-search.yaml", lambda d: _state(d, "staging").update(percentage=75))
    planned = plan(actor=actors["admin"], files=files)
    flag_state_update(actor=actors["admin"], flag="customer-search", environment="staging", version=None,
                      compare_percentage=40)
    seen = len(audit_events())

    with pytest.raises(Conflict, match="flag_state:customer-search@staging"):
        apply(actor=actors["admin"], files=files, versions=planned.versions)
    assert len(audit_events()) == seen


def test_plan__environment_not_in_installation__refused_as_another_installation(
        demo: None, actors: dict[str, Any]) -> None:
    from actions.config.files import ConfigInvalid
    from actions.config.plan import plan

    files = _edit(_files(), "environments.yaml", lambda d: d["environments"].append({"key": "qa", "name": "QA"}))
    with pytest.raises(ConfigInvalid) as caught:
        plan(actor=actors["admin"], files=files)
    assert caught.value.problems[0].file == "environments.yaml"
    assert "environment 'qa' does not exist in this installation" in caught.value.message
    assert [c.op for c in _by(plan(actor=actors["admin"], files=files, create_environments=True),
                              "environment", "qa")] == ["create"]


BAD = """turnout: 1
flags:
  - key: invoice-engine
    workload: invoice-engine
    environments:
      staging:
        enabled: true
        percentage: 150
        percentag: 3
"""


def test_plan__schema_errors__file_line_field_named(db: Any, actors: dict[str, Any]) -> None:
    from actions.config.files import ConfigInvalid
    from actions.config.plan import plan

    with pytest.raises(ConfigInvalid) as caught:
        plan(actor=actors["admin"], files={"flags/invoice.yaml": BAD})
    problems = {(p.file, p.line, p.field): p.message for p in caught.value.problems}
    assert problems[("flags/invoice.yaml", 8, "flags[0].environments.staging.percentage")] == \
        "150 is greater than the maximum of 100"
    assert "unknown key" in problems[("flags/invoice.yaml", 9, "flags[0].environments.staging.percentag")]


@pytest.mark.parametrize(("text", "line", "field", "message"), [
    ("turnout: 1\nworkloads:\n  - key: a\n    name: A\n    name: B\n", 5, "workloads[0].name", "duplicate key"),
    ("turnout: 2\n", 1, "turnout", "1 was expected"),
    ("turnout: 1\nflags: [\n", 3, "", "not valid YAML"),
    ("turnout: 1\nworkloads:\n  - key: Bad Key\n    name: A\n", 3, "workloads[0].key", "is not a valid key"),
    ("turnout: 1\ncohorts:\n  - key: c\n    name: C\n    members: {include: missing.csv}\n", 3,
     "cohorts[0].members.include", "not among the files"),
    ("turnout: 1\nsecrets: []\n", 2, "secrets", "unknown key"),
])
def test_plan__bad_file__refused_naming_it(db: Any, actors: dict[str, Any], text: str, line: int, field: str,
                                          message: str) -> None:
    from actions.config.files import ConfigInvalid
    from actions.config.plan import plan

    with pytest.raises(ConfigInvalid) as caught:
        plan(actor=actors["admin"], files={"x.yaml": text})
    first = caught.value.problems[0]
    assert (first.file, first.line, first.field) == ("x.yaml", line, field)
    assert message in first.message


def test_plan__object_defined_twice__both_places_named(db: Any, actors: dict[str, Any]) -> None:
    from actions.config.files import ConfigInvalid
    from actions.config.plan import plan

    one = "turnout: 1\nworkloads:\n  - key: a\n    name: A\n"
    with pytest.raises(ConfigInvalid, match=r"b.yaml:3: workloads\[0\].key: workload 'a' is already defined at a.yaml:3"):
        plan(actor=actors["admin"], files={"a.yaml": one, "b.yaml": one})


def test_delete__only_with_flag__evaluated_flag_needs_confirmation(
        demo: None, actors: dict[str, Any]) -> None:
    from actions.config.plan import apply, plan
    from rollout.models import Flag

    files = {k: v for k, v in _files().items() if k != "flags/payment-routing.yaml"}
    assert not plan(actor=actors["admin"], files=files).pending  # not without --delete

    planned = plan(actor=actors["admin"], files=files, delete=True)
    [change] = planned.pending
    assert (change.op, change.ruling) == ("delete", "refuse")
    assert "confirm its deletion" in change.why and "production, staging" in change.why

    confirmed = plan(actor=actors["admin"], files=files, delete=True, confirm_delete=["payment-routing"])
    assert [c.ruling for c in confirmed.pending] == ["apply"]
    result = apply(actor=actors["admin"], files=files, versions=confirmed.versions, delete=True,
                   confirm_delete=["payment-routing"])
    assert result["complete"]
    assert not Flag.objects.filter(key="payment-routing").exists()


def test_plan_apply__prometheus_queries__set_through_their_action(demo: None, actors: dict[str, Any]) -> None:
    from actions.config.plan import apply, plan
    from rollout.models import GuardrailQuery

    query = {"name": "checkout-5xx", "query": "max_over_time(checkout_5xx_ratio[$window])", "max_value": 0.05}
    files = _edit(_files(), "flags/customer-search.yaml", lambda d: _state(d, "staging").update(prometheus=[query]))
    planned = plan(actor=actors["admin"], files=files)

    [change] = planned.pending
    assert (change.action, change.params, change.ruling) == ("flag_state.guardrail_queries_set",
                                                             {"queries": [query]}, "apply")
    assert apply(actor=actors["admin"], files=files, versions=planned.versions)["complete"]
    assert list(GuardrailQuery.objects.values("name", "query", "max_value")) == [query]
    assert not plan(actor=actors["admin"], files=_files()).pending
    assert yaml.safe_load(_files()["flags/customer-search.yaml"])["flags"][0]["environments"]["staging"][
        "prometheus"] == [query]
