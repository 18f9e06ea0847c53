"""``simulate_traffic`` drives the real SDK against a real web process: each simulated call is one call."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from typing import Any

from django.core.management import call_command

from common import clock
from common.actors import Actor
from rollout.models import FlagState
from rollout.telemetry.ingest import metrics_drain
from rollout.telemetry.reads import window_stats


def test_simulate_traffic__twenty_percent_parallel_errors__each_call_counted_once_at_that_rate(
        server_process: Any, flag: Any) -> None:
    """Issue #18's reproduction: the simulator called decide() and then run(), so every call reached the
    metrics twice and a 20% injected parallel error rate was judged 10.7%."""
    from rollout.access.keys import sdk_key_create
    from rollout.services.flags import flag_state_update

    system = Actor.system("test")
    flag_state_update(actor=system, flag=flag.key, environment="staging", version=None, enabled=True,
                      percentage_value=50)
    secret = sdk_key_create(actor=system, environment="staging", name="simulator")[1]
    server_process.start()
    started = clock.now()
    out = io.StringIO()

    call_command("simulate_traffic", url=server_process.url, sdk_key=secret, flag=flag.key, requests=600,
                 subjects=400, tenants=200, parallel_error_rate=0.2, seed=11, flush_interval=0.5, stdout=out)

    said = re.search(r"simulated (\d+) requests .*: (\d+) parallel, (\d+) legacy", out.getvalue())
    assert said is not None, out.getvalue()
    requests, parallel, legacy = map(int, said.groups())
    assert (requests, parallel + legacy) == (600, 600)
    metrics_drain()  # what the worker does with the batches the web process accepted (none runs here)
    state = FlagState.objects.get(flag=flag, environment__key="staging")
    stats = window_stats(state, start=started - timedelta(minutes=2), end=clock.now() + timedelta(minutes=2))
    assert stats["legacy"].calls + stats["parallel"].calls == 600
    assert (stats["parallel"].calls, stats["legacy"].calls) == (parallel, legacy)
    error_rate = stats["parallel"].error_rate
    assert error_rate is not None and 15.0 <= error_rate <= 25.0, error_rate
