"""The living demo: `demo_run` drives the demo workloads through the real SDK against a real web process."""

from __future__ import annotations

import io
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.core.management import call_command

from common import clock
from rollout.datamigration.guardrails import judge
from rollout.devsetup import dev_setup
from rollout.feedback.models import Feedback
from rollout.models import Divergence, FlagState, MigrationMinute
from rollout.plans.health import evaluate_state
from rollout.telemetry.ingest import metrics_drain
from rollout.telemetry.reads import window_stats


def test_demo_run__server_up__prints_the_block_then_drives_the_workloads_through_the_sdk(
        server_process: Any, tmp_path: Path) -> None:
    dev_setup(url=server_process.url, var=tmp_path)
    server_process.start()
    started = clock.now()
    out = io.StringIO()
    server_logs = logging.getLogger("turnout.http").getEffectiveLevel()

    # no worker in this test: the wait for its heartbeat ends after --wait, and the block is printed anyway
    call_command("demo_run", url=server_process.url, var=tmp_path, wait=3, duration=30, rate=60, seed=5, stdout=out)
    metrics_drain()  # what the worker does with the batches the web process accepted (none runs here)

    assert f"Turnout is running:  {server_process.url}" in out.getvalue()
    # quieting the SDK's warnings for the demo leaves the server's own loggers (request lines, say) as they were
    assert logging.getLogger("turnout.http").getEffectiveLevel() == server_logs
    assert logging.getLogger("turnout").filters == []
    state = FlagState.objects.get(flag__key="invoice-engine", environment__key="production")
    stats = window_stats(state, start=started - timedelta(minutes=1), end=clock.now() + timedelta(minutes=1))
    legacy, parallel = stats["legacy"], stats["parallel"]
    assert legacy.calls > 100 and parallel.calls > 100
    comparisons, mismatches = legacy.comparisons + parallel.comparisons, legacy.mismatches + parallel.mismatches
    # differences come from a counter over the comparisons: one in 100 (the first at the 63rd)
    assert comparisons >= 63 and 1 <= mismatches <= comparisons // 100 + 1
    # failures come from a counter over the served parallel calls: one in 80, under the 1.5% guardrail
    assert 0 < parallel.errors <= parallel.calls // 80 + 1
    health = evaluate_state(state)
    assert health.status != "breached", health.breaches
    # now and then a subject leaves feedback through client.feedback() (rollout/feedback)
    assert Feedback.objects.filter(flag_state__flag__key__in=["invoice-engine", "customer-search"]).exists()
    shadow = FlagState.objects.get(flag__key="payment-routing", environment__key="production")
    shadow_stats = window_stats(shadow, start=started - timedelta(minutes=1), end=clock.now() + timedelta(minutes=1))
    assert shadow_stats["legacy"].calls > 0 and shadow_stats["parallel"].calls == 0
    # the data migration in shadow (staging), through client.migration(): both stores read and written, one
    # compared read in 100 inconsistent, one write in 50 refused by parallel (a divergence, named by its
    # account), under its guardrails
    minutes = list(MigrationMinute.objects.filter(flag_key="accounts-store", environment__key="staging"))
    assert {(m.origin, m.operation) for m in minutes if m.calls} == {
        ("legacy", "read"), ("parallel", "read"), ("legacy", "write"), ("parallel", "write")}
    checks = sum(m.checks for m in minutes)
    assert checks >= 8 and 1 <= sum(m.inconsistent for m in minutes) <= checks // 100 + 1
    divergences = list(Divergence.objects.filter(flag_state__flag__key="accounts-store"))
    assert divergences and {(d.origin, d.stage) for d in divergences} == {("parallel", "shadow")}
    assert all(d.identifier.startswith("acct-") for d in divergences)
    migration = FlagState.objects.select_related("migration").get(flag__key="accounts-store",
                                                                  environment__key="staging")
    assert judge(migration, migration.migration).status != "breached"
