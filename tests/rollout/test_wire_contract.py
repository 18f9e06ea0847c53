"""One wire contract (``turnout.wire``): what the server builds and parses is what the SDK reads
and sends, checked against the typed documents both sides import."""

from __future__ import annotations

import json
from typing import Any

import pytest
from turnout import Breaker
from turnout.engine import compile_ruleset
from turnout.testing import TestClient
from turnout.wire import (
    CohortRule,
    ConsistencySample,
    DivergenceReport,
    FlagRow,
    FlagRule,
    MetricsBatch,
    MigrationRow,
    MismatchSample,
    RulesetDocument,
)

from cohorts.services import cohort_create
from rollout.datamigration import telemetry as migration_telemetry
from rollout.delivery.ruleset import build_document
from rollout.models import Environment
from rollout.services.flags import flag_state_update
from rollout.telemetry.batches import COUNTERS, parse_batch

pytestmark = pytest.mark.django_db


def _required(typed: Any) -> set[str]:
    """The keys a TypedDict requires. Read from the annotations themselves: under ``from __future__ import
    annotations`` Python 3.11 counts a ``NotRequired[...]`` string as required in ``__required_keys__``."""
    def text(v: Any) -> str:
        return v if isinstance(v, str) else str(getattr(v, "__forward_arg__", v))

    return {k for k, v in typed.__annotations__.items()
            if not text(v).startswith("NotRequired[") and k in typed.__required_keys__}


def _fits(value: dict[str, Any], typed: Any) -> None:
    """Every key of ``value`` is declared by the TypedDict, and every required one is there."""
    assert set(value) <= set(typed.__annotations__), set(value) - set(typed.__annotations__)
    assert _required(typed) <= set(value), _required(typed) - set(value)


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
    assert _required(MetricsBatch) == set(batch)  # no migration call: none of the migration fields
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
    assert parsed.batch_id == batch["batch_id"] and len(batch["batch_id"]) == 32  # a retry is counted once


def test_metrics_batch__migration_fields__sent_by_the_sdk_parsed_by_the_server():
    client = TestClient(flags={"m": {"percentage": 0.0, "migration": {"stage": "shadow"}}})
    m = client.migration("m", budget=5.0, identify=str)

    def fail() -> int:
        raise OSError("down")

    m.read("u-1", legacy=lambda: 1, parallel=lambda: 2)
    m.write("u-1", legacy=lambda: 7, parallel=fail)
    batch = client.metrics()
    assert batch is not None
    _fits(dict(batch), MetricsBatch)
    assert set(MetricsBatch.__annotations__) == set(batch)
    for row in batch["migrations"]:
        assert set(row) == set(MigrationRow.__annotations__)
    assert set(migration_telemetry.COUNTERS) | {"flag", "version", "stage", "origin", "operation", "latency_ms"} \
        == set(MigrationRow.__annotations__)
    [sample] = batch["consistency_samples"]
    assert set(sample) == set(ConsistencySample.__annotations__)
    [div] = batch["divergences"]
    assert set(div) == set(DivergenceReport.__annotations__)

    parsed = migration_telemetry.parse_migration_batch(json.loads(json.dumps(batch)))
    sent = {(r["origin"], r["operation"]): r for r in batch["migrations"]}
    assert {(r.origin, r.operation): r.counts for r in parsed.rows} == {
        k: {name: v[name] for name in migration_telemetry.COUNTERS} for k, v in sent.items()}
    assert [(d.key_hash, d.identifier, d.origin) for d in parsed.divergences] == [
        (div["key_hash"], "7", "parallel")]
    assert [s.key_hash for s in parsed.samples] == [sample["key_hash"]]
