"""Data-migration stages in the engine: the ``migration`` field, its decision order, and the
properties its splits share with today's splits (sticky, monotone). Runs without Django."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from turnout.engine import RulesetError, bucket, compile_ruleset, evaluate_stage, validate_migration
from turnout.types import ErrorCode, Path, Reason, Stage

KEYS = [f"tenant-{i}" for i in range(2_000)]
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STAGES = list(Stage)
MOVABLE = [s for s in STAGES if s is not Stage.COMPLETE]


def doc(migration: dict[str, Any] | None, **flag: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"enabled": True, "percentage": 0.0, "salt": "accounts", **flag}
    if migration is not None:
        rule["migration"] = migration
    return {"schema": 1, "environment": "production", "version": 7,
            "cohorts": {"pilot": {"include": ["tenant-1", "tenant-2"]}, "regulated": {"include": ["tenant-3"]}},
            "flags": {"accounts": rule}}


@pytest.mark.parametrize("stage", STAGES)
def test_stage__base_only__every_subject_there(stage: Stage) -> None:
    rs = compile_ruleset(doc({"stage": stage.value}))
    decisions = {rs.decide_stage("accounts", k) for k in KEYS[:50]}
    assert {d.stage for d in decisions} == {stage}
    assert {d.reason for d in decisions} == {Reason.STATIC if stage is Stage.COMPLETE else Reason.DEFAULT}


def test_stage__cohort_entry__first_listed_match_wins_over_splits_and_base() -> None:
    rs = compile_ruleset(doc({"stage": "shadow", "splits": [{"stage": "live", "percentage": 100}],
                              "cohorts": [{"cohort": "regulated", "stage": "dual_write"},
                                          {"cohort": "pilot", "stage": "rampdown"}]}))
    pilot, held, other = (rs.decide_stage("accounts", k) for k in ("tenant-1", "tenant-3", "tenant-9"))
    assert (pilot.stage, pilot.reason, pilot.rule) == (Stage.RAMPDOWN, Reason.TARGETING_MATCH, "cohort:pilot")
    assert (held.stage, held.rule) == (Stage.DUAL_WRITE, "cohort:regulated")
    assert (other.stage, other.reason, other.rule) == (Stage.LIVE, Reason.SPLIT, "split:live")


def test_stage__split__uses_the_flag_bucket_over_bucket_by() -> None:
    rs = compile_ruleset(doc({"stage": "shadow", "splits": [{"stage": "live", "percentage": 50}]},
                             bucket_by="tenant_id"))
    for i in range(200):
        d = rs.decide_stage("accounts", f"user-{i}", {"tenant_id": f"t{i % 7}"})
        expected = Stage.LIVE if bucket("accounts", f"t{i % 7}") < 500_000 else Stage.SHADOW
        assert d.stage is expected and d.bucket == bucket("accounts", f"t{i % 7}")
    assert rs.decide_stage("accounts", "user-1", {}).stage is Stage.SHADOW  # no tenant_id: the base stage


def test_stage__killed_retired_missing__off_complete_path() -> None:
    assert compile_ruleset(doc({"stage": "live"}, enabled=False)).decide_stage("accounts", "k").stage is Stage.OFF
    retired = compile_ruleset(doc({"stage": "live"}, retired=True)).decide_stage("accounts", "k")
    assert (retired.stage, retired.reason) == (Stage.COMPLETE, Reason.STATIC)
    plain = compile_ruleset(doc(None, percentage=100.0)).decide_stage("accounts", "k")
    assert (plain.stage, plain.rule) == (Stage.COMPLETE, "path")
    assert compile_ruleset(doc(None)).decide_stage("accounts", "k").stage is Stage.OFF


def test_stage__errors__off_with_the_error_code() -> None:
    rs = compile_ruleset(doc({"stage": "live"}))
    assert rs.decide_stage("nope", "k").error_code is ErrorCode.FLAG_NOT_FOUND
    assert rs.decide_stage("accounts", None).error_code is ErrorCode.TARGETING_KEY_MISSING
    by_tenant = compile_ruleset(doc({"stage": "live", "splits": [{"stage": "rampdown", "percentage": 50}]},
                                    bucket_by="tenant_id"))
    bad = by_tenant.decide_stage("accounts", "k", attributes=[1])  # type: ignore[arg-type]
    assert (bad.stage, bad.error_code) == (Stage.OFF, ErrorCode.INVALID_CONTEXT)
    assert evaluate_stage(None, "accounts", "k").error_code is ErrorCode.PROVIDER_NOT_READY
    assert evaluate_stage({"schema": 99}, "accounts", "k").error_code is ErrorCode.PARSE_ERROR


def test_stage__unreadable_field__document_still_valid_and_flag_off_with_warning() -> None:
    rs = compile_ruleset(doc({"stage": "teleport"}))
    d = rs.decide_stage("accounts", "k")
    assert (d.stage, d.error_code) == (Stage.OFF, ErrorCode.PARSE_ERROR)
    assert any("flags.accounts.migration.stage" in w for w in rs.warnings)
    assert rs.decide("accounts", "k").path is Path.LEGACY  # the flag's ordinary decision is untouched


def test_stage__older_reader__ignores_the_field() -> None:
    """What an SDK without migrations sees: the same document decides exactly as before."""
    with_field = compile_ruleset(doc({"stage": "live"}, percentage=30.0))
    without = compile_ruleset(doc(None, percentage=30.0))
    assert all(with_field.decide("accounts", k) == without.decide("accounts", k) for k in KEYS[:300])


@pytest.mark.parametrize(("migration", "where"), [
    ({"stage": "live", "splits": [{"stage": "shadow", "percentage": 5}]}, "splits[0].stage"),
    ({"stage": "off", "splits": [{"stage": "live", "percentage": 5}, {"stage": "shadow", "percentage": 1}]},
     "splits[1].stage"),
    ({"stage": "off", "splits": [{"stage": "shadow", "percentage": 5}, {"stage": "live", "percentage": 9}]},
     "splits[1].percentage"),
    ({"stage": "off", "splits": [{"stage": "complete", "percentage": 5}]}, "splits[0].stage"),
    ({"stage": "off", "splits": [{"stage": "live", "percentage": 101}]}, "splits[0].percentage"),
    ({"stage": "off", "cohorts": [{"cohort": "ghost", "stage": "live"}]}, "cohorts[0].cohort"),
    ({"stage": "off", "cohorts": [{"cohort": "pilot", "stage": "complete"}]}, "cohorts[0].stage"),
    ({"stage": "off", "splits": {}}, "splits"),
])
def test_validate_migration__bad_part__named(migration: dict[str, Any], where: str) -> None:
    with pytest.raises(RulesetError) as raised:
        validate_migration(migration, "m", {"pilot": {}})
    assert str(raised.value).startswith(f"m.{where}:")


def _stages_of(rs: Any, keys: list[str]) -> dict[str, int]:
    return {k: rs.decide_stage("accounts", k).stage.position for k in keys}


@FAST
@given(base=st.sampled_from(MOVABLE[:-1]), a=st.floats(0, 100), b=st.floats(0, 100), c=st.floats(0, 100))
def test_splits__raising_any_share__only_moves_subjects_forward(base: Stage, a: float, b: float, c: float) -> None:
    ahead = [s for s in MOVABLE if s.position > base.position][:2]
    shares = sorted((a, b), reverse=True)[: len(ahead)]
    low = {"stage": base.value, "splits": [{"stage": s.value, "percentage": p} for s, p in zip(ahead, shares, strict=True)]}
    raised = [min(100.0, p + c) for p in shares]
    raised = [max(raised[i], raised[i + 1]) if i + 1 < len(raised) else raised[i] for i in range(len(raised))]
    high = {"stage": base.value, "splits": [{"stage": s.value, "percentage": p} for s, p in zip(ahead, raised, strict=True)]}
    keys = KEYS[:500]
    before, after = _stages_of(compile_ruleset(doc(low)), keys), _stages_of(compile_ruleset(doc(high)), keys)
    assert all(after[k] >= before[k] for k in keys)


@FAST
@given(share=st.floats(0, 100), version=st.integers(1, 10**6))
def test_splits__same_subject__same_stage_across_versions_and_calls(share: float, version: int) -> None:
    m = {"stage": "shadow", "splits": [{"stage": "live", "percentage": share}]}
    one = compile_ruleset(doc(m))
    other = compile_ruleset({**doc(m), "version": version})
    keys = KEYS[:300]
    assert _stages_of(one, keys) == _stages_of(other, keys) == _stages_of(one, keys)


@FAST
@given(share=st.floats(0, 100))
def test_splits__live_share__same_subjects_as_the_flag_split(share: float) -> None:
    """Same bucketing as today: the subjects a 'live' split holds are those a path split of the same
    share sends to parallel."""
    rs = compile_ruleset(doc({"stage": "shadow", "splits": [{"stage": "live", "percentage": share}]},
                             percentage=share))
    for k in KEYS[:300]:
        assert (rs.decide_stage("accounts", k).stage is Stage.LIVE) == (rs.decide("accounts", k).path is Path.PARALLEL)
