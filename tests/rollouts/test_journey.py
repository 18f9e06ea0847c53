"""A whole rollout, validation to retired, with one automatic rollback on the way (time injected)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from common import clock
from rollout.models import FlagState, Phase, Workload
from rollout.plans.guardrails import guardrail_check, guardrail_set
from rollout.plans.stages import plan_set, plan_template, rollout_advance
from rollout.services.flags import flag_state_resume
from tests.rollouts.conftest import add_metrics

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 26, 9, 0, 30, tzinfo=UTC)


def test_rollout__validation_to_retired__one_automatic_rollback_and_the_audit_trail(
        flag, cohorts, people, actor, audit_events):
    ed = people["ed"]
    state_id = FlagState.objects.get(flag=flag, environment__key="staging").pk
    phases: list[str] = []

    def traffic(frozen, *, minutes: int = 2, errors: int = 0) -> None:
        """Two minutes of SDK reports for both paths, then a guardrail check (as beat runs it)."""
        for _ in range(minutes):
            now = frozen.tick(60)
            add_metrics("staging", flag.key, now, "legacy", calls=200, errors=1, comparisons=20)
            add_metrics("staging", flag.key, now, "parallel", calls=100, errors=errors, comparisons=5)
        guardrail_check(flag_state_id=state_id)
        phases.append(Workload.objects.get(key="billing").phase)

    with clock.frozen(T0) as frozen:
        plan_set(actor=ed, flag=flag.key, environment="staging", version=None, stages=plan_template(
            "standard", internal_cohorts=["staff"], pilot_cohorts=["pilot-eu"], soak_seconds=60))
        guardrail_set(actor=ed, flag=flag.key, environment="staging", version=None, max_error_rate=5,
                      max_error_rate_increase=3, max_latency_p95_ratio=2, max_mismatch_rate=5, min_sample_size=50)
        rollout_advance(actor=ed, flag=flag.key, environment="staging", reason="start validation")
        traffic(frozen)  # validate is manual: stays
        rollout_advance(actor=ed, flag=flag.key, environment="staging", reason="comparison clean")
        traffic(frozen)  # internal is auto: advances to pilot
        rollout_advance(actor=ed, flag=flag.key, environment="staging", reason="pilot signed off")
        traffic(frozen)  # 5% auto → 25%
        traffic(frozen, errors=30)  # 25%: the parallel path fails → rolled back to 5%, paused
        flag_state_resume(actor=ed, flag=flag.key, environment="staging", reason="connection pool fixed")
        traffic(frozen)  # 5% auto → 25%
        traffic(frozen)  # 25% auto → 50%
        rollout_advance(actor=ed, flag=flag.key, environment="staging", reason="50% clean for a day")
        traffic(frozen)
        rollout_advance(actor=ed, flag=flag.key, environment="staging", reason="retire legacy")

    trail = [(e.action, e.actor, (e.after.get("to_stage") or {}).get("name")) for e in audit_events()]
    assert trail == [
        ("flag_state.plan_set", "ed", None),
        ("flag_state.guardrails_set", "ed", None),
        ("flag_state.advanced", "ed", "validate"),
        ("flag_state.advanced", "ed", "internal"),
        ("flag_state.advanced", "system:auto-advance", "pilot"),
        ("flag_state.advanced", "ed", "5%"),
        ("flag_state.advanced", "system:auto-advance", "25%"),
        ("flag_state.rolled_back", "system:guardrail", "5%"),
        ("flag_state.unpaused", "ed", None),
        ("flag_state.advanced", "system:auto-advance", "25%"),
        ("flag_state.advanced", "system:auto-advance", "50%"),
        ("flag_state.advanced", "ed", "100%"),
        ("flag_state.retired", "ed", "retire legacy"),
    ]
    rollback = audit_events()[7]
    assert rollback.reason == "guardrail breach: error rate 30.0% > 5.0%; error rate increase 29.5% > 3.0%"
    assert phases == ["validation", "pilot", "transition", "transition", "transition", "transition", "transition"]
    assert Workload.objects.get(key="billing").phase == Phase.RETIRED
    state = FlagState.objects.get(pk=state_id)
    assert (state.retired, state.stage) == (True, 8)
    assert frozen.now() - T0 == timedelta(minutes=14)
