"""Telemetry retention, run hourly by beat (``rollout.tasks.metrics_retention``).

- SDK metrics: minutes for ``METRICS_MINUTE_DAYS`` days, hourly totals after that. Each run folds a
  bounded batch of old minute rows into their hours (adding to an hour that already has totals) and
  deletes them in one transaction, so a crash never counts a minute twice or loses it. Mismatch samples
  older than the cutoff are deleted too (their groups keep the counts).
- Data-migration telemetry: ``MigrationMinute`` rows and ``ConsistencySample`` samples older than
  ``MIGRATION_MINUTE_DAYS`` days are deleted, a bounded batch per run. Every reader of them judges a
  recent window (the migration guardrails, the origin figures: minutes), and the lasting record of a
  migration is elsewhere — its divergences (kept until resolved, and after) and the audit log of its
  stages — so there is nothing to fold them into.

Telemetry, not a change of state: no audit event. Cutoffs are whole hours, from ``now`` (the injectable
clock, ``common.clock``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction

from common import clock
from common.conf import get_setting
from rollout.models import ConsistencySample, MetricHour, MetricMinute, MigrationMinute, MismatchSample

COUNTERS = ("calls", "runs", "errors", "fallbacks", "comparisons", "mismatches", "compare_skipped",
            "compare_errors", "compare_timeouts")
BATCH = 10_000


@dataclass(frozen=True)
class RetentionResult:
    minutes: int
    hours: int
    samples: int
    migration_minutes: int = 0
    consistency_samples: int = 0


def _add(a: list[int], b: list[int]) -> list[int]:
    size = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(size)]


def _cutoff(now: datetime | None, setting: str) -> datetime:
    cutoff = (now or clock.now()) - timedelta(days=get_setting(setting))
    return cutoff.replace(minute=0, second=0, microsecond=0)  # only whole hours


def metrics_retention(*, now: datetime | None = None, batch: int = BATCH) -> RetentionResult:
    """Fold minute rows older than the cutoff into hourly rows, and delete data-migration telemetry past
    its own cutoff (one bounded batch of each)."""
    migration_minutes, consistency_samples = migration_retention(now=now, batch=batch)
    cutoff = _cutoff(now, "METRICS_MINUTE_DAYS")
    with transaction.atomic():
        rows = list(MetricMinute.objects.select_for_update().filter(minute__lt=cutoff).order_by("minute", "pk")[:batch])
        hours: dict[tuple[int, str, str, datetime], dict[str, Any]] = defaultdict(
            lambda: {**dict.fromkeys(COUNTERS, 0), "latency_ms": [], "error_codes": {}})
        for row in rows:
            key = (row.environment_id, row.flag_key, row.path, row.minute.replace(minute=0, second=0, microsecond=0))
            totals = hours[key]
            for name in COUNTERS:
                totals[name] += getattr(row, name)
            totals["latency_ms"] = _add(totals["latency_ms"], list(row.latency_ms or []))
            for code, n in (row.error_codes or {}).items():
                totals["error_codes"][code] = totals["error_codes"].get(code, 0) + n
        for (env_id, flag_key, path, hour), totals in sorted(hours.items(), key=lambda kv: kv[0]):
            obj, created = MetricHour.objects.select_for_update().get_or_create(
                environment_id=env_id, flag_key=flag_key, path=path, hour=hour, defaults=totals)
            if not created:
                for name in COUNTERS:
                    setattr(obj, name, getattr(obj, name) + totals[name])
                obj.latency_ms = _add(list(obj.latency_ms or []), totals["latency_ms"])
                codes = dict(obj.error_codes or {})
                for code, n in totals["error_codes"].items():
                    codes[code] = codes.get(code, 0) + n
                obj.error_codes = codes
                obj.save()
        MetricMinute.objects.filter(pk__in=[r.pk for r in rows]).delete()
        samples, _ = MismatchSample.objects.filter(minute__lt=cutoff).delete()
    return RetentionResult(minutes=len(rows), hours=len(hours), samples=samples,
                           migration_minutes=migration_minutes, consistency_samples=consistency_samples)


def migration_retention(*, now: datetime | None = None, batch: int = BATCH) -> tuple[int, int]:
    """Delete up to ``batch`` MigrationMinute rows and as many ConsistencySample rows older than
    ``MIGRATION_MINUTE_DAYS`` days (oldest first); how many of each."""
    cutoff = _cutoff(now, "MIGRATION_MINUTE_DAYS")
    with transaction.atomic():
        minutes = list(MigrationMinute.objects.filter(minute__lt=cutoff).order_by("minute", "pk")
                       .values_list("pk", flat=True)[:batch])
        deleted_minutes, _ = MigrationMinute.objects.filter(pk__in=minutes).delete()
        samples = list(ConsistencySample.objects.filter(minute__lt=cutoff).order_by("minute", "pk")
                       .values_list("pk", flat=True)[:batch])
        deleted_samples, _ = ConsistencySample.objects.filter(pk__in=samples).delete()
    return deleted_minutes, deleted_samples
