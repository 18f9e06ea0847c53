"""Retention of data-migration telemetry (MigrationMinute, ConsistencySample) beside the SDK metrics'
(rollout/telemetry/retention.py), on an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common import clock
from rollout.models import ConsistencySample, MetricHour, MetricMinute, MigrationMinute
from rollout.tasks import metrics_retention as retention_task
from rollout.telemetry.retention import metrics_retention, migration_retention

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 1, 12, 20, 5, tzinfo=UTC)


def _minute(env: Any, at: datetime, flag: str = "accounts-store") -> MigrationMinute:
    return MigrationMinute.objects.create(environment=env, flag_key=flag, stage="shadow", origin="legacy",
                                          operation="read", minute=at, calls=3, latency_ms=[0] * 16)


def _sample(env: Any, at: datetime) -> ConsistencySample:
    return ConsistencySample.objects.create(environment=env, flag_key="accounts-store", stage="shadow",
                                            key_hash="a" * 64, authoritative="legacy", legacy={"n": 1},
                                            parallel={"n": 2}, at=at, minute=at)


def test_migration_retention__older_than_the_days__deleted_the_rest_kept(envs):
    env = envs["staging"]
    cutoff_hour = (NOW - timedelta(days=30)).replace(minute=0, second=0, microsecond=0)
    old = [_minute(env, cutoff_hour - timedelta(minutes=m + 1)) for m in range(3)]
    kept = [_minute(env, cutoff_hour), _minute(env, NOW.replace(second=0))]  # the cutoff is a whole hour
    _sample(env, cutoff_hour - timedelta(days=2))
    young = _sample(env, cutoff_hour + timedelta(minutes=5))
    MetricMinute.objects.create(environment=env, flag_key="invoice-engine", path="legacy",
                                minute=cutoff_hour - timedelta(hours=1), calls=7, latency_ms=[0] * 16)

    with clock.frozen(NOW):  # the task reads the one clock
        result = retention_task()
    assert (result["migration_minutes"], result["consistency_samples"]) == (3, 1)
    assert sorted(MigrationMinute.objects.values_list("pk", flat=True)) == sorted(m.pk for m in kept)
    assert list(ConsistencySample.objects.values_list("pk", flat=True)) == [young.pk]
    assert not any(MigrationMinute.objects.filter(pk=m.pk).exists() for m in old)
    # The SDK metrics' own retention ran in the same pass: folded into an hour, not deleted.
    assert (result["minutes"], MetricHour.objects.get().calls) == (1, 7)
    assert metrics_retention(now=NOW).migration_minutes == 0  # nothing left to do


def test_migration_retention__days_setting_and_bounded_batches(envs, settings):
    env = envs["staging"]
    settings.TURNOUT_MIGRATION_MINUTE_DAYS = 7
    for d in range(5):
        _minute(env, NOW - timedelta(days=8, minutes=d))
    _minute(env, NOW - timedelta(days=6))
    assert migration_retention(now=NOW, batch=3) == (3, 0)
    assert migration_retention(now=NOW, batch=3) == (2, 0)
    assert migration_retention(now=NOW + timedelta(days=2)) == (1, 0)  # the clock moved on
    assert not MigrationMinute.objects.exists()
