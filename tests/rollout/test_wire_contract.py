"""One wire contract (``turnout.wire``): what the server builds and parses is what the SDK reads
and sends, checked against the typed documents both sides import."""

from __future__ import annotations

import json
from typing import Any

import pytest
from turnout import Breaker
from turnout.engine import compile_ruleset
from turnout.testing import TestClient
from turnout.wire import CohortRule, FlagRow, FlagRule, MetricsBatch, MismatchSample, RulesetDocument

from cohorts.services import cohort_create
from rollout.delivery.ruleset import build_document
from rollout.models import Environment
from rollout.services.flags import flag_state_update
from rollout.telemetry.batches import COUNTERS, parse_batch

pytestmark = pytest.mark.django_db


def _fits(value: dict[str, Any], typed: Any) -> None:
    """Every key of ``value`` is declared by the TypedDict, and every required one is there."""
    assert set(value) <= set(typed.__annotations__), set(value) - set(typed.__annotations__)
    assert typed.__required_keys__ <= set(value), typed.__required_keys__ - set(value)


def test_ruleset_document__built_by_the_server__is_the_wire_type_and_compiles(flag, actor):
    cohort_create(actor=actor, key="pilot", name="Pilot", rules={"all": [{"attr": "country", "op": "eq",
                                                                         "values": ["DE"]}]})
    flag_state_update(actor=actor, flag=flag.key, environment="staging", version=None, enabled=True,
                      percentage_value=25, include_cohorts=["pilot"], overrides={"u-1": "parallel"})
    doc = build_document(Environment.objects.get(key="staging"))
    _fits(dict(doc), RulesetDocument)
    for rule in doc["flags"].values():
        _fits(dict(rule), FlagRule)
    assert doc.get("cohorts")
    for cohort in doc.get("cohorts", {}).values():
        _fits(dict(cohort), CohortRule)
    assert compile_ruleset(json.loads(json.dumps(doc))).flag_keys == {flag.key}


def test_metrics_batch__sent_by_the_sdk__parsed_by_the_server_field_for_field():
    client = TestClient(flags={"f": {"percentage": 100.0, "compare_percentage": 100.0}},
                        breaker=Breaker(min_calls=2, window=5, cooldown=60), code_version="abc")

    def fail() -> int:
        raise RuntimeError

    client.run("f", "u-1", legacy=lambda: 1, parallel=lambda: 2)  # a mismatch, sampled
    for _ in range(3):
        client.run("f", "u-1", legacy=lambda: 1, parallel=fail)  # errors, fallbacks, the breaker opens
    batch = client.metrics()
    assert batch is not None and batch["mismatch_samples"] and batch["breaker_events"]
    _fits(dict(batch), MetricsBatch)
    assert set(MetricsBatch.__annotations__) == set(batch)
    for row in batch["flags"]:
        assert set(row) == set(FlagRow.__annotations__)
    for sample in batch["mismatch_samples"]:
        assert set(sample) == set(MismatchSample.__annotations__)
    # the parser reads every counter the wire row declares, and nothing it does not
    assert set(COUNTERS) | {"flag", "path", "version", "latency_ms", "error_codes"} == set(FlagRow.__annotations__)

    parsed = parse_batch(json.loads(json.dumps(batch)))
    sent = {(r["flag"], r["path"]): r for r in batch["flags"]}
    assert {(r.flag, r.path) for r in parsed.rows} == set(sent)
    for row in parsed.rows:
        assert row.counts == {name: sent[(row.flag, row.path)][name] for name in COUNTERS}
        assert row.latency == sent[(row.flag, row.path)]["latency_ms"]
    assert [s.key_hash for s in parsed.samples] == [s["key_hash"] for s in batch["mismatch_samples"]]
    assert [e["state"] for e in parsed.breaker_events] == [e["state"] for e in batch["breaker_events"]]
    assert parsed.sdk["code_version"] == "abc"
