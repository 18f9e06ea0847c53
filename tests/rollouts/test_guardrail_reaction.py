"""Guardrails that count right and react in seconds (#13): runs not decisions, a stage's first partial
minute (rollout/telemetry/ingest.py, "fine" counts). On PostgreSQL and Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common import clock
from rollout.models import FlagState
from rollout.plans.guardrails import guardrail_check, guardrail_set
from rollout.plans.stages import rollout_advance
from rollout.telemetry.batches import HISTOGRAM_SIZE, parse_batch
from rollout.telemetry.ingest import metrics_record

pytestmark = pytest.mark.django_db

# A stage that begins 4 s into a minute (the reproduction: 56 s of failures before the next one).
STAGE_START = datetime(2026, 11, 26, 10, 0, 4, tzinfo=UTC)


def _state() -> FlagState:
    return FlagState.objects.get(flag__key="invoice-engine", environment__key="staging")


def _at_25_percent(flag_key: str, actor: Any, at: datetime) -> None:
    with clock.frozen(at):
        for _ in range(5):  # the standard plan's fifth stage: 25%
            rollout_advance(actor=actor, flag=flag_key, environment="staging")


def _row(path: str, *, calls: int, runs: int | None = None, errors: int = 0) -> dict[str, Any]:
    latency = [0] * HISTOGRAM_SIZE
    latency[5] = calls if runs is None else runs
    row: dict[str, Any] = {"flag": "invoice-engine", "path": path, "version": 7, "calls": calls, "errors": errors,
                           "fallbacks": errors if path == "parallel" else 0, "latency_ms": latency,
                           "comparisons": 0, "mismatches": 0, "compare_skipped": 0, "compare_errors": 0,
                           "compare_timeouts": 0, "error_codes": {}}
    if runs is not None:
        row["runs"] = runs
    return row


def _batch(*rows: dict[str, Any], seconds: float = 10.0, end: datetime | None = None) -> dict[str, Any]:
    end = end or datetime(2026, 11, 26, 10, 0, 10, tzinfo=UTC)
    return {"sdk": {"name": "turnout-python", "version": "0.2.0", "code_version": None},
            "window": {"start": (end - timedelta(seconds=seconds)).isoformat(), "end": end.isoformat()},
            "flags": list(rows), "mismatch_samples": [], "breaker_events": [], "dropped": {}}


def _record(environment_id: int, body: dict[str, Any], at: datetime) -> None:
    metrics_record(environment_id=environment_id, batch=parse_batch(body), now=at.timestamp())


# -- 1. the parallel path is judged on the calls that ran it ------------------------------------


def test_guardrail__run_failing_half_with_decide_only_calls__judged_50_percent_not_9_and_rolled_back(
        planned: Any, actor: Any, redis_clean: Any) -> None:
    """Reproduction: run() failed 50 of 100 times, 450 bare decide() calls made the parallel path
    550 calls; the rate was judged 9% and a 10% guardrail never fired."""
    _at_25_percent(planned.key, actor, STAGE_START - timedelta(minutes=10))
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_error_rate=10,
                  min_sample_size=50, window_seconds=300, action="rollback")
    state = _state()
    _record(state.environment_id, _batch(_row("parallel", calls=550, runs=100, errors=50),
                                         _row("legacy", calls=0, runs=50)), STAGE_START)
    outcome = guardrail_check(flag_state_id=state.pk, now=STAGE_START + timedelta(seconds=5))
    assert outcome.acted == "rolled_back"
    figures = FlagState.objects.get(pk=state.pk).guardrail.last_check
    assert figures is not None
    assert (figures["parallel"]["calls"], figures["parallel"]["runs"], figures["parallel"]["errors"],
            figures["parallel"]["error_rate"]) == (550, 100, 50, 50.0)


def test_guardrail__decide_only_traffic__not_a_sample_of_runs(planned: Any, actor: Any, redis_clean: Any) -> None:
    """Decisions that ran nothing neither dilute the error rate nor make up the minimum sample."""
    _at_25_percent(planned.key, actor, STAGE_START - timedelta(minutes=10))
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_error_rate=10,
                  min_sample_size=50, window_seconds=300, action="rollback")
    state = _state()
    _record(state.environment_id, _batch(_row("parallel", calls=5000, runs=10, errors=0)), STAGE_START)
    assert guardrail_check(flag_state_id=state.pk, now=STAGE_START + timedelta(seconds=5)).status == \
        "insufficient_data"


def test_metrics_batch__older_sdk_without_runs__runs_are_what_its_histogram_timed(db: Any) -> None:
    older = _row("parallel", calls=550, runs=100, errors=50)
    del older["runs"]
    [row] = parse_batch(_batch(older)).rows
    assert (row.counts["calls"], row.counts["runs"], row.counts["errors"]) == (550, 100, 50)
    bad = _row("parallel", calls=1, runs=1)
    bad["runs"] = -1
    with pytest.raises(Exception, match="runs"):
        parse_batch(_batch(bad))


# -- 2. a stage's first, partial minute ----------------------------------------------------------


def test_guardrail__failures_in_the_stage_first_56_seconds__judged_before_the_minute_ends(
        planned: Any, actor: Any, redis_clean: Any) -> None:
    """Reproduction: the stage began at :04; 56 s of failing traffic were never judged, because only
    whole minutes after the stage's start counted."""
    _at_25_percent(planned.key, actor, STAGE_START)
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_error_rate=10,
                  min_sample_size=50, window_seconds=300, action="rollback")
    state = _state()
    for received in (16, 26, 36, 46, 56):  # 10 s batches, all traffic after the stage began
        at = STAGE_START.replace(second=received)
        _record(state.environment_id, _batch(_row("parallel", calls=20, runs=20, errors=10), end=at), at)
    outcome = guardrail_check(flag_state_id=state.pk, now=STAGE_START.replace(second=57))
    assert outcome.acted == "rolled_back"
    check = FlagState.objects.get(pk=state.pk).guardrail.last_check
    assert check is not None
    assert check["window"]["start"] == STAGE_START.isoformat()
    assert (check["parallel"]["runs"], check["parallel"]["errors"]) == (100, 50)


def test_guardrail__partial_minute__traffic_from_before_the_stage_never_judged(
        planned: Any, actor: Any, redis_clean: Any) -> None:
    """A batch received after the stage began but whose window began before it (the stage before's
    traffic) is left out, so one breach cannot roll back two stages; later batches count."""
    _at_25_percent(planned.key, actor, STAGE_START)
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_error_rate=10,
                  min_sample_size=50, window_seconds=300, action="rollback")
    state = _state()
    at = STAGE_START + timedelta(seconds=6)  # a 10 s window: its traffic began 4 s before the stage
    _record(state.environment_id, _batch(_row("parallel", calls=500, runs=500, errors=500), end=at), at)
    for received in (20, 30, 40):
        at = STAGE_START.replace(second=received)
        _record(state.environment_id, _batch(_row("parallel", calls=40, runs=40, errors=1), end=at), at)
    outcome = guardrail_check(flag_state_id=state.pk, now=STAGE_START.replace(second=45))
    assert (outcome.status, outcome.acted) == ("healthy", None)
    check = FlagState.objects.get(pk=state.pk).guardrail.last_check
    assert check is not None and (check["parallel"]["runs"], check["parallel"]["errors"]) == (120, 3)


def test_guardrail__partial_minute_then_whole_minutes__each_batch_counted_once(
        planned: Any, actor: Any, redis_clean: Any) -> None:
    _at_25_percent(planned.key, actor, STAGE_START)
    guardrail_set(actor=actor, flag=planned.key, environment="staging", version=None, max_error_rate=10,
                  min_sample_size=50, window_seconds=300, action="rollback")
    state = _state()
    for received in (20, 40, 60, 80, 100):  # the last three land in the next minute
        at = STAGE_START + timedelta(seconds=received)
        _record(state.environment_id, _batch(_row("parallel", calls=20, runs=20, errors=0), end=at), at)
    outcome = guardrail_check(flag_state_id=state.pk, now=STAGE_START + timedelta(seconds=101))
    assert outcome.status == "healthy"
    check = FlagState.objects.get(pk=state.pk).guardrail.last_check
    assert check is not None and check["parallel"]["runs"] == 100
