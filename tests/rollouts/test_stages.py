from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from common import clock
from common.errors import Conflict, ValidationFailed
from rollout.models import FlagState, Phase, RolloutStage, Workload
from rollout.plans.stages import plan_set, plan_template, rollout_advance, rollout_pause, rollout_rollback
from rollout.policy import ApprovalRequired
from rollout.services.flags import flag_state_kill, flag_state_resume
from rollout.services.workloads import workload_update

pytestmark = pytest.mark.django_db


def _state(env: str = "staging") -> FlagState:
    return FlagState.objects.select_related("flag__workload").get(flag__key="invoice-engine", environment__key=env)


def test_plan_set__standard_template__eight_stages_and_one_exact_event(flag, cohorts, actor, audit_events):
    stages = plan_template("standard", internal_cohorts=["staff"], pilot_cohorts=["pilot-eu"], soak_seconds=60)
    state = plan_set(actor=actor, flag=flag.key, environment="staging", version=1, stages=stages, reason="plan")
    names = list(RolloutStage.objects.filter(flag_state=state).values_list("name", flat=True))
    assert names == ["validate", "internal", "pilot", "5%", "25%", "50%", "100%", "retire legacy"]
    [event] = audit_events()
    assert (event.action, event.object_key, event.environment, event.reason) == (
        "flag_state.plan_set", "invoice-engine@staging", "staging", "plan")
    assert event.before["plan"] == [] and event.before["version"] == 1
    assert event.after["version"] == 2 and event.after["phase"] == "development"
    assert event.after["plan"][2] == {
        "position": 3, "name": "pilot", "percentage": 0.0, "compare_percentage": 10.0,
        "include_cohorts": ["pilot-eu", "staff"], "min_soak_seconds": 60, "gate": "manual", "scheduled_at": None,
        "retires_legacy": False}
    assert event.after["plan"][7]["retires_legacy"] is True


@pytest.mark.parametrize(("stages", "field"), [
    ([], "stages"),
    ([{"name": "a", "percentage": 10}, {"name": "b", "percentage": 5}], "stages[1].percentage"),
    ([{"name": "a"}, {"name": "a"}], "stages[1].name"),
    ([{"name": "a", "gate": "sometimes"}], "stages[0].gate"),
    ([{"name": "a", "retires_legacy": True, "percentage": 50}], "stages[0].retires_legacy"),
    ([{"name": "a", "include_cohorts": ["ghost"]}], "stages[0].include_cohorts"),
    ([{"name": "a", "scheduled_at": "tomorrow"}], "stages[0].scheduled_at"),
    ([{"name": "a", "colour": "red"}], "stages[0].colour"),
])
def test_plan_set__bad_stage__rejected_naming_the_field_and_nothing_saved(flag, actor, audit_events, stages, field):
    with pytest.raises(ValidationFailed) as info:
        plan_set(actor=actor, flag=flag.key, environment="staging", version=1, stages=stages)
    assert field in info.value.fields
    assert not RolloutStage.objects.exists()
    assert audit_events() == []


def test_plan_set__plan_started__conflict(planned, actor):
    rollout_advance(actor=actor, flag=planned.key, environment="staging")
    with pytest.raises(Conflict):
        plan_set(actor=actor, flag=planned.key, environment="staging", version=None, stages=[{"name": "x"}])


def test_rollout_advance__first_and_second__applies_stages_phase_and_exact_event(planned, actor, audit_events):
    with clock.frozen() as frozen:
        state = rollout_advance(actor=actor, flag=planned.key, environment="staging", reason="start")
        assert (state.stage, state.enabled, state.compare_percentage, state.stage_started_at) == (
            1, True, Decimal(10), frozen.now())
        assert Workload.objects.get(key="billing").phase == Phase.VALIDATION
        state = rollout_advance(actor=actor, flag=planned.key, environment="staging", version=state.version)
    assert sorted(c.key for c in state.include_cohorts.all()) == ["staff"]
    assert Workload.objects.get(key="billing").phase == Phase.PILOT
    first, second = audit_events()
    assert (first.action, first.reason, first.after["from_stage"], first.after["to_stage"]) == (
        "flag_state.advanced", "start", None, {"position": 1, "name": "validate"})
    assert second.before["stage"] == 1 and second.before["include_cohorts"] == []
    assert {k: second.after[k] for k in ("stage", "enabled", "percentage", "compare_percentage", "include_cohorts",
                                         "phase", "from_stage", "to_stage")} == {
        "stage": 2, "enabled": True, "percentage": 0.0, "compare_percentage": 10.0, "include_cohorts": ["staff"],
        "phase": "pilot", "from_stage": {"position": 1, "name": "validate"},
        "to_stage": {"position": 2, "name": "internal"}}


def test_rollout_advance__through_the_whole_plan__ends_retired_and_workload_retired(planned, actor, audit_events):
    for _ in range(8):
        state = rollout_advance(actor=actor, flag=planned.key, environment="staging")
    assert (state.stage, state.retired, state.percentage) == (8, True, Decimal(100))
    assert Workload.objects.get(key="billing").phase == Phase.RETIRED
    assert audit_events()[-1].action == "flag_state.retired"
    with pytest.raises(Conflict):
        rollout_advance(actor=actor, flag=planned.key, environment="staging")


def test_rollout_advance__paused_or_killed__conflict(planned, actor):
    rollout_advance(actor=actor, flag=planned.key, environment="staging")
    rollout_pause(actor=actor, flag=planned.key, environment="staging", reason="hold")
    with pytest.raises(Conflict, match="paused"):
        rollout_advance(actor=actor, flag=planned.key, environment="staging")
    flag_state_resume(actor=actor, flag=planned.key, environment="staging")
    flag_state_kill(actor=actor, flag=planned.key, environment="staging")
    with pytest.raises(Conflict, match="killed"):
        rollout_advance(actor=actor, flag=planned.key, environment="staging")


def test_rollout_pause_and_resume__exact_events_no_ruleset_change(planned, actor, audit_events):
    from rollout.models import Environment

    rollout_advance(actor=actor, flag=planned.key, environment="staging")
    version = Environment.objects.get(key="staging").ruleset_version
    with clock.frozen() as frozen:
        rollout_pause(actor=actor, flag=planned.key, environment="staging", reason="looking into latency")
        frozen.tick(120)
        state = flag_state_resume(actor=actor, flag=planned.key, environment="staging", reason="fine")
    assert Environment.objects.get(key="staging").ruleset_version == version
    assert state.paused_at is None and state.stage_started_at == frozen.now()  # the soak restarts
    _, paused, resumed = audit_events()
    assert (paused.action, paused.reason, paused.before["paused"], paused.after["paused"]) == (
        "flag_state.paused", "looking into latency", False, True)
    assert (resumed.action, resumed.before["paused"], resumed.after["paused"]) == ("flag_state.unpaused", True, False)


def test_rollout_rollback__mid_plan__previous_stage_and_paused_exact_event(planned, actor, audit_events):
    for _ in range(4):
        rollout_advance(actor=actor, flag=planned.key, environment="staging")
    state = rollout_rollback(actor=actor, flag=planned.key, environment="staging", reason="errors")
    assert (state.stage, state.percentage, state.enabled) == (3, Decimal(0), True)
    assert state.paused_at is not None
    event = audit_events()[-1]
    assert (event.action, event.reason, event.before["percentage"], event.after["percentage"]) == (
        "flag_state.rolled_back", "errors", 5.0, 0.0)
    assert (event.after["from_stage"], event.after["to_stage"], event.after["paused"]) == (
        {"position": 4, "name": "5%"}, {"position": 3, "name": "pilot"}, True)
    assert "break_glass" not in event.after  # staging, medium risk: nothing was bypassed


def test_rollout_rollback__from_first_stage__everything_off(planned, actor):
    rollout_advance(actor=actor, flag=planned.key, environment="staging")
    state = rollout_rollback(actor=actor, flag=planned.key, environment="staging")
    assert (state.stage, state.enabled, state.compare_percentage) == (0, False, Decimal(0))
    with pytest.raises(Conflict):
        rollout_rollback(actor=actor, flag=planned.key, environment="staging")


def test_rollout_rollback__dual_write_past_primary_without_reason__asks_for_reason(planned, actor, audit_events):
    workload_update(actor=actor, key="billing", reversibility="dual_write")
    for _ in range(7):  # to 100%: parallel is primary
        rollout_advance(actor=actor, flag=planned.key, environment="staging")
    with pytest.raises(ValidationFailed) as info:
        rollout_rollback(actor=actor, flag=planned.key, environment="staging")
    assert "reason" in info.value.fields and "dual-write" in info.value.fields["reason"][0]
    rollout_rollback(actor=actor, flag=planned.key, environment="staging", reason="legacy replay confirmed")
    assert audit_events()[-1].after["dual_write_warning"] is True
    assert _state().percentage == Decimal(50)


def test_rollout_advance__irreversible_workload_in_plain_env__needs_approval_even_for_admin(planned, people, actor):
    workload_update(actor=actor, key="billing", reversibility="irreversible")
    with pytest.raises(ApprovalRequired):
        rollout_advance(actor=people["root"], flag=planned.key, environment="staging")
    assert _state().stage == 0


def test_rollout_advance__editor_in_approval_env__approval_required(planned, people):
    with pytest.raises(ApprovalRequired):
        rollout_advance(actor=people["ed"], flag=planned.key, environment="production")


def test_rollout_advance__breached_guardrail__refused_unless_forced_with_reason(planned, actor, people):
    from rollout.plans.guardrails import guardrail_set
    from tests.rollouts.conftest import add_metrics

    with clock.frozen(clock.now() - timedelta(minutes=10)):
        for _ in range(4):
            rollout_advance(actor=actor, flag=planned.key, environment="staging")
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_error_rate=5,
                  min_sample_size=10)
    add_metrics("staging", planned.key, clock.now(), "parallel", calls=100, errors=40)
    with pytest.raises(Conflict, match="breaches"):
        rollout_advance(actor=people["ed"], flag=planned.key, environment="staging")
    with pytest.raises(ValidationFailed):
        rollout_advance(actor=people["ed"], flag=planned.key, environment="staging", force=True)
    state = rollout_advance(actor=people["ed"], flag=planned.key, environment="staging", force=True,
                            reason="known flaky dependency")
    assert state.stage == 5
