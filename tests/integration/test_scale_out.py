"""Scale-out: several web processes share one database and one Redis.

- A ruleset is built once per version across processes (the Redis cache and its build lock), counted
  through each process's ``/metrics``, not by timing.
- A change reaches an SDK stream held by another process (Redis pub/sub).
- gunicorn's workers sum their metrics through the multiprocess directory.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.actors import Actor
from rollout.access.keys import sdk_key_create
from rollout.models import Environment
from rollout.services.flags import flag_create, flag_state_update
from rollout.services.workloads import workload_create
from tests.conftest import ROOT, ServerProcess, subprocess_env, wait_for_port

pytestmark = pytest.mark.services


def _get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def _metric(base_url: str, name: str, **labels: str) -> float:
    status, _, body = _get(f"{base_url}/metrics")
    assert status == 200
    total = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _builds(servers: list[ServerProcess], environment: str) -> float:
    return sum(_metric(s.url, "turnout_ruleset_builds_total", environment=environment) for s in servers)


def _fetch_everywhere(servers: list[ServerProcess], secret: str, rounds: int = 6) -> set[str]:
    """Ruleset requests spread over every process at once; the ETags seen."""
    urls = [f"{s.url}/api/v1/sdk/ruleset" for s in servers] * rounds
    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        results = list(pool.map(lambda url: _get(url, Authorization=f"Bearer {secret}"), urls))
    assert {status for status, _, _ in results} == {200}
    return {headers["etag"] for _, headers, _ in results}


class _Servers:
    def __init__(self, count: int, **env: str) -> None:
        self.servers = [ServerProcess(None, **env) for _ in range(count)]

    def __enter__(self) -> list[ServerProcess]:
        for server in self.servers:
            server.start()
        return self.servers

    def __exit__(self, *exc: Any) -> None:
        for server in self.servers:
            server.stop()


def test_two_web_processes__ruleset_requested_on_both_at_once__built_once_per_version(
    transactional_db: Any, redis_url: str, envs: Any
) -> None:
    secret = sdk_key_create(actor=Actor.system("test"), environment="staging", name="scale")[1]
    workload_create(actor=Actor.system("test"), key="billing", name="Billing", risk="low")
    flag_create(actor=Actor.system("test"), key="invoice-engine", workload="billing")
    with _Servers(2) as servers:
        etags = _fetch_everywhere(servers, secret)
        assert len(etags) == 1
        assert _builds(servers, "staging") == 1

        flag_state_update(actor=Actor.system("test"), flag="invoice-engine", environment="staging", version=None,
                          percentage_value=25)
        new_etags = _fetch_everywhere(servers, secret)
        assert len(new_etags) == 1 and new_etags != etags
        assert _builds(servers, "staging") == 2  # one more build for the new version, in one process
        assert _builds(servers, "production") == 0


class GunicornProcess(ServerProcess):
    """The production web process: gunicorn with uvicorn workers and a Prometheus multiprocess dir."""

    def __init__(self, workers: int, multiproc_dir: Path) -> None:
        super().__init__(PROMETHEUS_MULTIPROC_DIR=str(multiproc_dir), WEB_CONCURRENCY=str(workers))
        self.env["BIND"] = f"127.0.0.1:{self.port}"

    def start(self) -> GunicornProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.asgi:application"],
            cwd=ROOT, env=subprocess_env(**self.env),
        )
        wait_for_port(self.port, self.proc, timeout=30)
        return self


def test_gunicorn_two_workers__requests_spread_over_workers__metrics_summed_in_one_scrape(
    transactional_db: Any, redis_url: str, envs: Any, tmp_path: Path
) -> None:
    secret = sdk_key_create(actor=Actor.system("test"), environment="staging", name="mp")[1]
    server = GunicornProcess(workers=2, multiproc_dir=tmp_path / "prometheus")
    server.start()
    try:
        # Wait until both workers have served (each keeps its own counters in its own file): which worker
        # accepts a connection is the kernel's choice, so send small concurrent bursts until both have.
        def counting_workers() -> set[str]:
            return {p.name.rsplit("_", 1)[-1] for p in (tmp_path / "prometheus").glob("counter_*.db")}

        deadline = time.monotonic() + 30
        while len(counting_workers()) < 2 and time.monotonic() < deadline:
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda u: _get(u, Authorization=f"Bearer {secret}"),
                              [f"{server.url}/api/v1/sdk/ruleset"] * 16))
        before = _metric(server.url, "turnout_http_requests_total", route="api/v1/sdk/ruleset", status="200")
        urls = [f"{server.url}/api/v1/sdk/ruleset"] * 40
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(lambda u: _get(u, Authorization=f"Bearer {secret}")[0], urls))
        assert statuses == [200] * 40
        assert len(counting_workers()) == 2  # both workers counted requests...
        for _ in range(5):  # ...and any worker's scrape shows the sum
            after = _metric(server.url, "turnout_http_requests_total", route="api/v1/sdk/ruleset", status="200")
            assert after - before == 40
    finally:
        server.stop()


def test_two_web_processes__change_committed__stream_on_the_other_process_hears_it_within_a_second(
    transactional_db: Any, redis_url: str, envs: Any
) -> None:
    import httpx

    secret = sdk_key_create(actor=Actor.system("test"), environment="staging", name="stream")[1]
    workload_create(actor=Actor.system("test"), key="billing", name="Billing", risk="low")
    flag_create(actor=Actor.system("test"), key="invoice-engine", workload="billing")
    with _Servers(2) as (writer, streamer):
        versions: list[int] = []
        connected = threading.Event()
        heard = threading.Event()

        def read_stream() -> None:
            headers = {"Authorization": f"Bearer {secret}", "Accept": "text/event-stream"}
            with httpx.Client(timeout=httpx.Timeout(10, read=20)) as http, \
                    http.stream("GET", f"{streamer.url}/api/v1/sdk/stream", headers=headers) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    if line.startswith("id:"):
                        versions.append(int(line[3:].strip()))
                        connected.set()
                        if len(versions) >= 2:
                            heard.set()
                            break

        reader = threading.Thread(target=read_stream, daemon=True)
        reader.start()
        assert connected.wait(15), "the stream sent no initial version"
        first_version = versions[0]

        # The change is committed by another process (this one) and announced after commit.
        flag_state_update(actor=Actor.system("test"), flag="invoice-engine", environment="staging", version=None,
                          percentage_value=50)
        # The deadline the protocol promises: a committed change reaches every stream within a second.
        assert heard.wait(1.0), "the change did not reach the stream on the other process within a second"
        new_version = versions[1]
        assert new_version > first_version
        assert Environment.objects.get(key="staging").ruleset_version == new_version
        assert _get(f"{writer.url}/readyz")[0] == 200
