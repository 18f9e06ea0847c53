"""A guardrail reading a PromQL query from a real Prometheus (Debian's `prometheus`, started here on loopback)
that scrapes a small exporter this test controls: healthy while the service's 5xx ratio is low, rolled back one
stage once it is high — the query and its value in the audit event, the last check and the readiness report."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, service_missing, wait_for_port

pytestmark = pytest.mark.services
QUERY = "max_over_time(checkout_5xx_ratio[$window])"


class Exporter:
    """The parallel service's own metrics, as Prometheus scrapes them."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self.registry = CollectorRegistry()
        self.ratio = Gauge("checkout_5xx_ratio", "share of 5xx answers of the parallel checkout",
                           registry=self.registry)
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Exporter]]:
    binary = shutil.which("prometheus")
    if binary is None:
        service_missing("needs Prometheus (Debian: apt-get install prometheus)")
    exporter = Exporter()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: checkout
    static_configs:
      - targets: ["127.0.0.1:{exporter.port}"]
""")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, timeout=30)
        yield f"http://127.0.0.1:{port}", exporter
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        exporter.stop()


def _scraped(url: str, value: float) -> None:
    """Wait (readiness, not a timing assertion) until Prometheus has scraped the exporter's new value."""
    from rollout.plans.prometheus import run_query

    deadline = time.monotonic() + 60
    seen: float | None = None
    while time.monotonic() < deadline:
        try:
            seen = run_query("checkout_5xx_ratio", at=datetime.now(UTC), url=url)
        except (OSError, ValueError):
            seen = None
        if seen == value:
            return
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never scraped {value} (last seen {seen})")


@pytest.fixture
def started(flag: Any, actor: Any) -> Any:
    from actions.submit import submit_state
    from rollout.plans.stages import plan_set, rollout_advance
    from rollout.selectors import flag_state_get

    plan_set(actor=actor, flag="invoice-engine", environment="staging", version=None,
             stages=[{"name": "5%", "percentage": 5}, {"name": "25%", "percentage": 25}])
    rollout_advance(actor=actor, flag="invoice-engine", environment="staging")
    rollout_advance(actor=actor, flag="invoice-engine", environment="staging")
    submit_state(actor=actor, flag="invoice-engine", environment="staging", action="flag_state.guardrail_queries_set",
                 params={"queries": [{"name": "checkout-5xx", "query": QUERY, "max_value": 0.05}]})
    return flag_state_get("invoice-engine", "staging")


def test_prometheus_guardrail__5xx_ratio_over_limit__rolls_back_with_query_and_value_audited(
        started: Any, prometheus: tuple[str, Exporter], settings: Any, audit_events: Any) -> None:
    from rollout.models import FlagState, Guardrail
    from rollout.plans.guardrails import guardrail_check
    from rollout.plans.readiness import readiness

    url, exporter = prometheus
    settings.TURNOUT_PROMETHEUS_URL = url

    exporter.ratio.set(0.01)
    _scraped(url, 0.01)
    calm = guardrail_check(flag_state_id=started.pk)
    assert calm.acted is None
    [check] = Guardrail.objects.get(flag_state=started).last_check["checks"]
    assert check == {"name": "prometheus:checkout-5xx", "limit": 0.05, "value": 0.01, "ok": True,
                     "query": "max_over_time(checkout_5xx_ratio[300s])"}

    exporter.ratio.set(0.2)
    _scraped(url, 0.2)
    outcome = guardrail_check(flag_state_id=started.pk)

    assert outcome.acted == "rolled_back"
    state = FlagState.objects.get(pk=started.pk)
    assert (state.stage, float(state.percentage), state.paused_at is not None) == (1, 5.0, True)
    [event] = [e for e in audit_events() if e.action == "flag_state.rolled_back"]
    assert event.actor == "system:guardrail"
    assert "prometheus:checkout-5xx 0.2 > 0.05" in event.reason
    [figures] = event.after["guardrail"]["figures"]["checks"]
    assert (figures["query"], figures["value"], figures["ok"]) == ("max_over_time(checkout_5xx_ratio[300s])", 0.2,
                                                                   False)
    report = readiness(state)
    assert report["guardrails"]["last_check"]["checks"][0]["value"] == 0.2
    assert report["guardrails"]["last_check"]["checks"][0]["query"] == "max_over_time(checkout_5xx_ratio[300s])"


def test_prometheus_guardrail__server_unreachable__not_judged_and_no_action(started: Any, settings: Any) -> None:
    from rollout.plans.guardrails import guardrail_check
    from rollout.plans.health import evaluate_state

    settings.TURNOUT_PROMETHEUS_URL = f"http://127.0.0.1:{free_port()}"

    health = evaluate_state(started)
    [check] = health.checks
    assert (check.value, check.ok) == (None, None) and check.error
    assert guardrail_check(flag_state_id=started.pk).acted is None
