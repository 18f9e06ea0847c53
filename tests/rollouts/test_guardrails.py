from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from common import clock
from common.errors import ValidationFailed
from rollout.models import FlagState, Guardrail, MetricHour, MetricMinute, MismatchGroup, MismatchSample
from rollout.plans.guardrails import guardrail_check, guardrail_set, scheduled_start
from rollout.plans.health import judge
from rollout.plans.stages import plan_set, rollout_advance
from rollout.services.workloads import workload_update
from rollout.telemetry.mismatches import (
    difference_shape,
    mismatch_group_mark_known,
    mismatch_groups_refresh,
    mismatch_summary,
)
from rollout.telemetry.reads import PathStats, percentile
from rollout.telemetry.retention import metrics_retention
from tests.rollouts.conftest import add_metrics

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 26, 10, 0, 30, tzinfo=UTC)


def _state(env: str = "staging") -> FlagState:
    return FlagState.objects.get(flag__key="invoice-engine", environment__key=env)


def _at_stage(flag_key: str, actor, n: int, *, at: datetime = T0) -> None:
    with clock.frozen(at):
        for _ in range(n):
            rollout_advance(actor=actor, flag=flag_key, environment="staging")


def test_percentile__histogram__interpolated_inside_the_bucket():
    histogram = [0] * 16
    histogram[5] = 50  # 2.5-5 ms
    histogram[8] = 50  # 25-50 ms
    assert percentile(histogram, 0.5) == 5.0
    assert percentile(histogram, 0.95) == 47.5
    assert percentile([0] * 16, 0.5) is None
    assert percentile([0] * 15 + [3], 0.99) == 5000.0  # overflow bucket: at least the last bound


def test_judge__parallel_worse_than_limits__breached_with_named_checks():
    g = Guardrail(max_error_rate=Decimal(5), max_error_rate_increase=Decimal(2), max_latency_p95_ratio=Decimal("1.5"),
                  max_mismatch_rate=Decimal(1), min_sample_size=50)
    legacy, parallel = PathStats(), PathStats()
    legacy.add(calls=1000, runs=1000, errors=10, comparisons=100, mismatches=0, histogram=[0] * 5 + [1000] + [0] * 10)
    parallel.add(calls=100, runs=100, errors=9, comparisons=0, mismatches=0, histogram=[0] * 7 + [100] + [0] * 8)
    health = judge(g, legacy, parallel)
    assert health.status == "breached"
    assert {c.name: c.ok for c in health.checks} == {"error_rate": False, "error_rate_increase": False,
                                                     "latency_p95_ratio": False, "mismatch_rate": True}
    assert health.breaches[0] == "error rate 9.0% > 5.0%"


def test_judge__too_few_calls__insufficient_data_not_breached():
    g = Guardrail(max_error_rate=Decimal(5), min_sample_size=100)
    parallel = PathStats()
    parallel.add(calls=10, runs=10, errors=10, comparisons=0, mismatches=0, histogram=[])
    assert judge(g, PathStats(), parallel).status == "insufficient_data"


def test_guardrail_set__valid__exact_event_and_bad_values_rejected(planned, actor, audit_events):
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=2, max_error_rate=2,
                  max_latency_p95_ratio=1.5, min_sample_size=200, window_seconds=300, action="rollback",
                  reason="defaults")
    [event] = audit_events()
    assert (event.action, event.object_key, event.reason, event.before["guardrail"]) == (
        "flag_state.guardrails_set", "invoice-engine@staging", "defaults", None)
    assert event.after["guardrail"] == {"max_error_rate": 2.0, "max_error_rate_increase": None,
                                        "max_latency_p95_ratio": 1.5, "max_mismatch_rate": None,
                                        "min_sample_size": 200, "window_seconds": 300, "action": "rollback"}
    for bad in ({"action": "explode"}, {"window_seconds": 5}, {"max_error_rate": 120},
                {"max_latency_p95_ratio": 0.5}):
        with pytest.raises(ValidationFailed):
            guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, **bad)
    assert len(audit_events()) == 1


def test_guardrail_check__parallel_errors_above_limit__rolled_back_by_system_with_figures(
        planned, actor, audit_events, django_capture_on_commit_callbacks, settings):
    settings.TURNOUT_WEBHOOK_URLS = []
    _at_stage(planned.key, actor, 5)  # 25%
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_error_rate=5,
                  min_sample_size=50, window_seconds=300, action="rollback")
    add_metrics("staging", planned.key, T0 + timedelta(minutes=1), "legacy", calls=300, errors=3)
    add_metrics("staging", planned.key, T0 + timedelta(minutes=1), "parallel", calls=100, errors=30)
    add_metrics("staging", planned.key, T0, "parallel", calls=1000, errors=900)  # before the stage: not judged
    with django_capture_on_commit_callbacks(execute=True):
        outcome = guardrail_check(flag_state_id=_state().pk, now=T0 + timedelta(minutes=1, seconds=40))
    assert outcome.acted == "rolled_back"
    state = _state()
    assert (state.stage, state.percentage, state.paused_at is not None) == (4, Decimal(5), True)
    event = audit_events()[-1]
    assert (event.action, event.actor, event.actor_type) == ("flag_state.rolled_back", "system:guardrail", "system")
    assert event.reason == "guardrail breach: error rate 30.0% > 5.0%"
    figures = event.after["guardrail"]["figures"]
    assert (figures["parallel"]["calls"], figures["parallel"]["errors"], figures["parallel"]["error_rate"],
            figures["legacy"]["error_rate"]) == (100, 30, 30.0, 1.0)
    assert event.after["guardrail"]["action"] == "rollback" and event.after["to_stage"]["name"] == "5%"
    # The next check judges only the new stage's minutes: no second rollback on the same data.
    assert guardrail_check(flag_state_id=state.pk, now=T0 + timedelta(minutes=1, seconds=50)).acted is None


@pytest.mark.parametrize(("action", "acted", "event_action"), [
    ("pause", "paused", "flag_state.paused"), ("kill", "killed", "flag_state.killed")])
def test_guardrail_check__breach_with_other_actions__acts_accordingly(planned, actor, audit_events, action, acted,
                                                                      event_action):
    _at_stage(planned.key, actor, 4)
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_mismatch_rate=1,
                  min_sample_size=10, action=action)
    add_metrics("staging", planned.key, T0 + timedelta(minutes=1), "legacy", calls=100, comparisons=100,
                mismatches=20)
    assert guardrail_check(flag_state_id=_state().pk, now=T0 + timedelta(minutes=2)).acted == acted
    assert (audit_events()[-1].action, audit_events()[-1].actor) == (event_action, "system:guardrail")
    assert _state().percentage == Decimal(5)  # pause and kill keep the split


def test_guardrail_check__auto_stage_soaked_and_healthy__advances_by_itself(planned, actor, audit_events):
    _at_stage(planned.key, actor, 4)  # "5%": gate auto, soak 600 s
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_error_rate=5,
                  min_sample_size=50)
    for minute in range(1, 12):
        add_metrics("staging", planned.key, T0 + timedelta(minutes=minute), "parallel", calls=20)
    with clock.frozen(T0 + timedelta(seconds=300)) as frozen:
        assert guardrail_check(flag_state_id=_state().pk).acted is None  # soak not over
        frozen.tick(301)
        outcome = guardrail_check(flag_state_id=_state().pk)
    assert outcome.acted == "advanced" and _state().stage == 5
    event = audit_events()[-1]
    assert (event.action, event.actor, event.reason, event.after["to_stage"]) == (
        "flag_state.advanced", "system:auto-advance", "soaked 600s with every guardrail healthy",
        {"position": 5, "name": "25%"})


def test_guardrail_check__manual_or_irreversible_or_paused__never_auto_advances(planned, actor):
    _at_stage(planned.key, actor, 3)  # "pilot": manual
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, min_sample_size=0)
    later = T0 + timedelta(days=5)
    assert guardrail_check(flag_state_id=_state().pk, now=later).acted is None
    rollout_advance(actor=actor, flag=planned.key, environment="staging", now=T0)  # "5%": auto
    workload_update(actor=actor, key="billing", reversibility="irreversible")
    assert guardrail_check(flag_state_id=_state().pk, now=later).acted is None
    assert _state().stage == 4


def test_scheduled_start__due_and_healthy__starts_as_system_schedule(flag, actor, audit_events):
    plan_set(actor=actor, flag=flag.key, environment="staging", version=None, stages=[
        {"name": "validate", "compare_percentage": 10, "scheduled_at": (T0 + timedelta(hours=1)).isoformat()},
        {"name": "5%", "percentage": 5, "scheduled_at": (T0 + timedelta(hours=2)).isoformat()}])
    state = _state()
    assert scheduled_start(flag_state_id=state.pk, now=T0).acted is None
    assert scheduled_start(flag_state_id=state.pk, now=T0 + timedelta(hours=1)).acted == "started"
    assert audit_events()[-1].actor == "system:schedule"
    # The second stage is due but the rollout is unguarded: it only starts when healthy.
    assert scheduled_start(flag_state_id=state.pk, now=T0 + timedelta(hours=3)).status == "unguarded"
    guardrail_set(actor=actor, flag=flag.key, environment="staging", version=None, max_mismatch_rate=5,
                  min_sample_size=10)
    add_metrics("staging", flag.key, T0 + timedelta(hours=2), "legacy", calls=100, comparisons=100)
    assert scheduled_start(flag_state_id=state.pk, now=T0 + timedelta(hours=2, minutes=1)).acted == "started"
    assert _state().stage == 2


def _sample(env, minute, legacy, parallel, version=7):
    MismatchSample.objects.create(environment=env, flag_key="invoice-engine", version=version, key_hash="a" * 64,
                                  served="legacy", legacy=legacy, parallel=parallel, at=minute, minute=minute)


def test_mismatch_groups__samples_by_shape__grouped_counted_and_shared(flag, envs):
    minute = T0.replace(second=0)
    for i in range(97):
        _sample(envs["staging"], minute, {"total": 10 + i, "email": "x@y"}, {"total": 11 + i, "email": "x@y"})
    _sample(envs["staging"], minute, {"total": 1}, {"total": "1"})
    _sample(envs["staging"], minute, {"total": 1, "lines": [1]}, {"total": 1})
    _sample(envs["staging"], minute, {"total": 1, "lines": [1]}, {"total": 1}, version=8)
    assert mismatch_groups_refresh() == 100
    assert mismatch_groups_refresh() == 0  # counted once
    summary = mismatch_summary(_state())
    assert (summary["kinds"], summary["samples"]) == (3, 100)
    top = summary["groups"][0]
    assert (top["count"], top["share"], top["shape"]) == (97, 97.0, [["total", "changed", "number", "number"]])
    assert top["example"]["legacy"]["email"] == "[redacted]"
    assert summary["groups"][1]["flag_version"] == 8
    assert difference_shape({"a": [1, 2]}, {"a": [1]}) == [["a[]", "length", "list", "list"]]


def test_mismatch_group_mark_known__excluded_from_mismatch_guardrail_and_audited(planned, actor, audit_events):
    _at_stage(planned.key, actor, 1)
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_mismatch_rate=2,
                  min_sample_size=10, action="pause")
    minute = T0.replace(second=0) + timedelta(minutes=1)
    add_metrics("staging", planned.key, minute, "legacy", calls=100, comparisons=100, mismatches=10)
    env = _state().environment
    for i in range(9):
        _sample(env, minute, {"total": i}, {"total": i + 1})
    _sample(env, minute, {"total": 1}, {"total": None})
    mismatch_groups_refresh()
    group = MismatchGroup.objects.get(count=9)
    with pytest.raises(ValidationFailed):
        mismatch_group_mark_known(actor=actor, flag=planned.key, environment="staging", group=group.pk)
    mismatch_group_mark_known(actor=actor, flag=planned.key, environment="staging", group=group.pk,
                              reason="parallel rounds half-up, as finance asked")
    event = audit_events()[-1]
    assert (event.action, event.object_type, event.reason, event.before["known"], event.after["known"]) == (
        "mismatch_group.known", "mismatch_group", "parallel rounds half-up, as finance asked", False, True)
    outcome = guardrail_check(flag_state_id=_state().pk, now=minute + timedelta(seconds=30))
    assert (outcome.status, outcome.acted) == ("healthy", None)  # 10% raw, 1% without the known difference


def test_metrics_retention__minutes_older_than_30_days__folded_into_hours(flag, envs):
    old = T0 - timedelta(days=31)
    for minute in range(3):
        add_metrics("staging", flag.key, old.replace(minute=minute), "parallel", calls=10, errors=1)
    add_metrics("staging", flag.key, T0, "parallel", calls=5)
    result = metrics_retention(now=T0)
    assert (result.minutes, result.hours) == (3, 1)
    hour = MetricHour.objects.get()
    assert (hour.calls, hour.errors, hour.hour, hour.latency_ms[5]) == (30, 3, old.replace(minute=0, second=0), 30)
    assert list(MetricMinute.objects.values_list("calls", flat=True)) == [5]
    add_metrics("staging", flag.key, old.replace(minute=30), "parallel", calls=1)
    metrics_retention(now=T0)
    assert MetricHour.objects.get().calls == 31  # added to the existing hour


def test_guardrail_check__verdict__stored_in_the_database_not_a_process_cache(planned, actor):
    """The issue: in embedded mode the last check lived in a per-process memory cache, so the web UI never
    showed what the worker decided. Emptying this process's cache stands in for another process."""
    from django.core.cache import cache

    from rollout.plans.health import last_check

    _at_stage(planned.key, actor, 5)
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_error_rate=50,
                  min_sample_size=50, window_seconds=300, action="pause")
    add_metrics("staging", planned.key, T0 + timedelta(minutes=1), "parallel", calls=100, errors=1)
    guardrail_check(flag_state_id=_state().pk, now=T0 + timedelta(minutes=1, seconds=40))
    cache.clear()
    stored = last_check(_state().pk)
    assert stored is not None and stored["status"] == "healthy"
    assert Guardrail.objects.get(flag_state=_state()).last_check["parallel"]["calls"] == 100


def test_state_card__poll__shows_the_stored_check_without_reading_metrics(planned, actor, people, client):
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    _at_stage(planned.key, actor, 5)
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_error_rate=5,
                  min_sample_size=50, window_seconds=300, action="pause")
    Guardrail.objects.filter(flag_state=_state()).update(last_check={
        "status": "breached", "sample_size": 80, "min_sample_size": 50,
        "checks": [{"name": "error_rate", "limit": 5.0, "value": 30.0, "ok": False}]})
    client.force_login(get_user_model().objects.get(username="vic"))
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/flags/{planned.key}/staging/card/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert b"error rate 30.0% &gt; 5.0%" in response.content or b"error rate 30.0% > 5.0%" in response.content
    assert not [q for q in queries.captured_queries if "metricminute" in q["sql"].lower()]
