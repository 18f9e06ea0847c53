"""Migration rollout 0007: metric rows stored before ``runs`` get the runs their histogram timed (what
the SDK counted as runs until then), so a window spanning the upgrade keeps its error rate."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from common import clock

BEFORE = [("rollout", "0006_guardrail_last_check")]
AFTER = [("rollout", "0007_metric_runs")]

pytestmark = [pytest.mark.django_db(transaction=True)]


def _migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_migration__rows_stored_before_runs__runs_filled_from_their_histograms(envs: Any) -> None:
    old = _migrate(BEFORE)
    try:
        environment = old.get_model("rollout", "Environment").objects.get(key="staging")
        minute = old.get_model("rollout", "MetricMinute")
        hour = old.get_model("rollout", "MetricHour")
        at = clock.now().replace(second=0, microsecond=0)
        timed = [0, 0, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        minute.objects.create(environment_id=environment.pk, flag_key="f", path="parallel", minute=at, calls=550,
                              errors=50, latency_ms=timed)
        minute.objects.create(environment_id=environment.pk, flag_key="f", path="legacy", minute=at, calls=40,
                              latency_ms=[])
        hour.objects.create(environment_id=environment.pk, flag_key="f", path="parallel",
                            hour=at.replace(minute=0), calls=5500, errors=500, latency_ms=[10] * 16)
    finally:
        new = _migrate(AFTER)
    rows = {r.path: (r.calls, r.runs, r.errors) for r in new.get_model("rollout", "MetricMinute").objects.all()}
    assert rows == {"parallel": (550, 100, 50), "legacy": (40, 0, 0)}
    assert new.get_model("rollout", "MetricHour").objects.get().runs == 160
    _migrate([("rollout", leaf) for app, leaf in MigrationExecutor(connection).loader.graph.leaf_nodes()
              if app == "rollout"])
