from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.test import Client

from rollout.access.keys import sdk_key_create
from rollout.models import MetricMinute, MetricRollup, MismatchSample
from rollout.telemetry.batches import COUNTERS, HISTOGRAM_SIZE
from rollout.telemetry.ingest import metrics_rollup

URL = "/api/v1/sdk/metrics"
KEY_HASH = "a" * 64


def _batch(n: int = 1, *, samples: int = 0, flags: tuple[str, ...] = ("invoice-engine", "search")) -> dict[str, Any]:
    rows = []
    for i, flag in enumerate(flags):
        for path in ("legacy", "parallel"):
            latency = [0] * HISTOGRAM_SIZE
            latency[(n + i) % HISTOGRAM_SIZE] = n
            latency[-1] = 1
            rows.append({"flag": flag, "path": path, "version": 3, "calls": n + 1, "errors": 1, "fallbacks": n % 2,
                         "latency_ms": latency, "comparisons": 2, "mismatches": 1, "compare_skipped": 0,
                         "compare_errors": 0, "compare_timeouts": 1, "error_codes": {"GENERAL": 1}})
    return {
        "sdk": {"name": "turnout-python", "version": "0.1.0", "code_version": "2026.11.1"},
        "window": {"start": "2026-11-26T10:00:00Z", "end": "2026-11-26T10:00:10.5Z"},
        "flags": rows,
        "mismatch_samples": [{"flag": flags[0], "version": 3, "key_hash": KEY_HASH, "served": "legacy",
                              "legacy": {"total": 10}, "parallel": {"total": 11 + s}, "truncated": False,
                              "at": "2026-11-26T10:00:03Z"} for s in range(samples)],
        "breaker_events": [],
        "dropped": {},
    }


def _expected(batches: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for batch in batches:
        for row in batch["flags"]:
            t = totals.setdefault((row["flag"], row["path"]), {**dict.fromkeys(COUNTERS, 0),
                                                               "latency_ms": [0] * HISTOGRAM_SIZE, "error_codes": {}})
            for name in COUNTERS:  # a batch without "runs" (an older SDK) ran what its histogram timed
                t[name] += row.get(name, sum(row["latency_ms"])) if name == "runs" else row[name]
            t["latency_ms"] = [a + b for a, b in zip(t["latency_ms"], row["latency_ms"], strict=True)]
            for code, value in row["error_codes"].items():
                t["error_codes"][code] = t["error_codes"].get(code, 0) + value
    return totals


def _stored() -> dict[tuple[str, str], dict[str, Any]]:
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for row in MetricMinute.objects.all():
        t = totals.setdefault((row.flag_key, row.path), {**dict.fromkeys(COUNTERS, 0),
                                                         "latency_ms": [0] * HISTOGRAM_SIZE, "error_codes": {}})
        for name in COUNTERS:
            t[name] += getattr(row, name)
        t["latency_ms"] = [a + b for a, b in zip(t["latency_ms"], row.latency_ms, strict=True)]
        for code, value in row.error_codes.items():
            t["error_codes"][code] = t["error_codes"].get(code, 0) + value
    return totals


def _post(client: Client, key: str, body: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body)
    return client.post(URL, data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")


def _post_concurrently(key: str, batches: list[dict[str, Any]]) -> list[int]:
    statuses: list[int] = []
    lock = threading.Lock()

    def send(chunk: list[dict[str, Any]]) -> None:
        client = Client()
        try:
            for body in chunk:
                status = _post(client, key, body).status_code
                with lock:
                    statuses.append(status)
        finally:
            from django.db import connection

            connection.close()

    threads = [threading.Thread(target=send, args=(batches[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


@pytest.fixture
def key(envs, actor):  # type: ignore[no-untyped-def]
    return sdk_key_create(actor=actor, environment="staging", name="svc")[1]


@pytest.fixture
def embedded(settings):  # type: ignore[no-untyped-def]
    settings.REDIS_URL = None


def _clean_metrics_keys(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter("turnout:metrics:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def in_redis(redis_url, settings):  # type: ignore[no-untyped-def]
    settings.REDIS_URL = redis_url
    _clean_metrics_keys(redis_url)
    yield redis_url
    _clean_metrics_keys(redis_url)


@pytest.fixture
def no_drain(monkeypatch):  # type: ignore[no-untyped-def]
    """Batches are accepted but no roll-up is queued (as while the worker is away); counts the asks."""
    from rollout.telemetry import ingest

    asked: list[int] = []
    monkeypatch.setattr(ingest, "queue_metrics_drain", lambda: asked.append(1))
    return asked


# -- validation ----------------------------------------------------------------------------------


def _bad(body: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    target: Any = body
    for part in path[:-1]:
        target = target[part]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


@pytest.mark.parametrize(("path", "value", "field"), [
    (["sdk"], None, "sdk"),
    (["sdk", "name"], "", "sdk.name"),
    (["window", "start"], "yesterday", "window.start"),
    (["window", "end"], "2026-11-26T09:00:00Z", "window.end"),
    (["window", "start"], "2026-11-26T10:00:00", "window.start"),
    (["flags"], {}, "flags"),
    (["flags", 0, "path"], "both", "flags[0].path"),
    (["flags", 1, "calls"], -1, "flags[1].calls"),
    (["flags", 1, "calls"], KeyError, "flags[1].calls"),
    (["flags", 0, "errors"], 1.5, "flags[0].errors"),
    (["flags", 0, "errors"], True, "flags[0].errors"),
    (["flags", 2, "latency_ms"], [1, 2, 3], "flags[2].latency_ms"),
    (["flags", 2, "latency_ms"], KeyError, "flags[2].latency_ms"),
    (["flags", 0, "flag"], "x" * 101, "flags[0].flag"),
    (["flags", 0, "version"], "3", "flags[0].version"),
    (["mismatch_samples", 0, "key_hash"], "user-1", "mismatch_samples[0].key_hash"),
    (["mismatch_samples", 0, "legacy"], "x" * 20_000, "mismatch_samples[0].legacy"),
    (["mismatch_samples", 0, "at"], 5, "mismatch_samples[0].at"),
])
def test_metrics__bad_field__400_naming_it_and_nothing_counted(client, key, embedded, path, value, field):
    response = _post(client, key, _bad(_batch(samples=1), path, value))
    assert response.status_code == 400
    error = response.json()["error"]
    assert field in error["fields"], error
    assert error["message"].startswith(field)
    assert not MetricMinute.objects.exists() and not MismatchSample.objects.exists()


def test_metrics__too_many_rows__400(client, key, embedded, settings):
    settings.TURNOUT_METRICS_MAX_ROWS = 3
    response = _post(client, key, _batch())
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"flags": ["has more than 3 items"]}


def test_metrics__body_over_limit__413(client, key, embedded, settings):
    settings.TURNOUT_METRICS_MAX_BODY = 200
    assert _post(client, key, _batch()).status_code == 413


def test_metrics__no_key__401(client, key):
    assert client.post(URL, "{}", content_type="application/json").status_code == 401


def test_metrics__unknown_fields__ignored_for_newer_sdks(client, key, embedded):
    body = _batch()
    body["future"] = {"x": 1}
    body["flags"][0]["future_counter"] = 7
    assert _post(client, key, body).status_code == 202


# -- embedded mode (the database) ------------------------------------------------------------------


def test_metrics__embedded__counted_in_minute_rows(client, key, embedded, envs):
    response = _post(client, key, _batch(2, samples=2))
    assert response.status_code == 202
    assert response.json() == {"accepted": True}
    assert _stored() == _expected([_batch(2)])
    row = MetricMinute.objects.get(flag_key="invoice-engine", path="parallel")
    assert row.environment == envs["staging"] and row.minute.second == 0
    assert [(s.flag_key, s.key_hash, s.parallel) for s in MismatchSample.objects.order_by("parallel")] == [
        ("invoice-engine", KEY_HASH, {"total": 11}), ("invoice-engine", KEY_HASH, {"total": 12})]


def test_metrics__embedded__migration_fields_counted_at_once_without_a_roll_up(client, key, embedded, envs):
    from rollout.models import MigrationMinute

    body = {**_batch(1), "migrations": [{"flag": "accounts-store", "stage": "shadow", "origin": "parallel",
                                          "operation": "read", "calls": 9, "errors": 2, "checks": 9,
                                          "inconsistent": 1, "latency_ms": [0, 9] + [0] * (HISTOGRAM_SIZE - 2)}]}
    assert _post(client, key, body).status_code == 202
    row = MigrationMinute.objects.get()
    assert (row.environment, row.calls, row.errors, row.inconsistent, row.latency_ms[1]) == (
        envs["staging"], 9, 2, 1, 9)
    assert _stored() == _expected([_batch(1)])


def test_metrics__embedded__samples_capped_per_minute(client, key, embedded, settings):
    settings.TURNOUT_METRICS_SAMPLES_PER_MINUTE = 3
    for _ in range(3):
        assert _post(client, key, _batch(samples=2)).status_code == 202
    assert MismatchSample.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_metrics__embedded_concurrent_batches__totals_exact(key, embedded):
    batches = [_batch(n) for n in range(40)]
    assert _post_concurrently(key, batches) == [202] * 40
    assert _stored() == _expected(batches)
    assert metrics_rollup(include_open=True).minutes == 0  # nothing waits in Redis


# -- Redis mode ----------------------------------------------------------------------------------


@pytest.mark.services
def test_metrics__redis__one_stream_append_each_then_rolled_up_once(client, key, in_redis, envs, no_drain):
    from common.redis import get_redis
    from rollout.telemetry import ingest

    r = get_redis()
    assert _post(client, key, _batch(4, samples=2)).status_code == 202
    assert _post(client, key, _batch(5)).status_code == 202
    # Accepted = appended to the stream, nothing else yet; one roll-up asked for, not one per batch.
    assert (r.xlen(ingest.STREAM), MetricMinute.objects.exists(), no_drain) == (2, False, [1])
    result = ingest.metrics_drain()
    assert (result.batches, result.rows, result.samples, result.minutes, result.backlog) == (2, 4, 2, 1, 0)
    assert _stored() == _expected([_batch(4), _batch(5)])
    assert MismatchSample.objects.count() == 2
    assert ingest.metrics_drain().batches == 0 and r.xlen(ingest.STREAM) == 0  # taken once, then trimmed
    assert _post(client, key, _batch(6)).status_code == 202
    assert no_drain == [1, 1]  # the run cleared the flag: the next batch asks again


@pytest.mark.services
def test_metrics__roll_up_dies_before_or_after_its_commit__every_batch_counted_once(
        client, key, in_redis, no_drain, monkeypatch):
    import redis as redis_lib

    from rollout.telemetry import ingest

    batches = [_batch(n, samples=1) for n in range(6)]
    for body in batches:
        assert _post(client, key, body).status_code == 202

    def dies(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("worker killed")

    # Before the commit (while storing samples): nothing kept, the cursor did not move.
    with monkeypatch.context() as m:
        m.setattr(ingest, "_store_samples", dies)
        with pytest.raises(RuntimeError):
            ingest.metrics_drain(chunk=4)
    assert not MetricMinute.objects.exists()
    # After the first chunk's commit, before the stream is trimmed: the next run starts after the cursor.
    with monkeypatch.context() as m:
        m.setattr(redis_lib.Redis, "xtrim", dies)
        with pytest.raises(RuntimeError):
            ingest.metrics_drain(chunk=4)
    assert _stored() == _expected(batches[:4])
    result = ingest.metrics_drain(chunk=4)
    assert result.batches == 2
    for _ in range(2):  # redelivered / repeated runs find nothing more
        assert ingest.metrics_drain().batches == 0
    assert _stored() == _expected(batches)
    assert MismatchSample.objects.count() == 6


@pytest.mark.services
def test_metrics__sdk_retries_a_batch_with_its_batch_id__counted_once(client, key, in_redis, envs, actor):
    body = {**_batch(3), "batch_id": "7f9c2ba4e88f827d616045507605853e"}
    first, retry = _post(client, key, body), _post(client, key, body)
    assert (first.status_code, first.json()) == (202, {"accepted": True})
    assert (retry.status_code, retry.json()) == (202, {"accepted": True, "duplicate": True})
    other = sdk_key_create(actor=actor, environment="production", name="svc")[1]
    assert _post(client, other, body).json() == {"accepted": True}  # ids are per environment
    assert _stored() == _expected([_batch(3), _batch(3)])
    assert _post(client, key, {**body, "batch_id": "short"}).status_code == 400


@pytest.mark.services
def test_metrics__backlog_full__503_with_retry_after_and_the_retry_counted(client, key, in_redis, settings, no_drain):
    from rollout.telemetry import ingest

    settings.TURNOUT_METRICS_BACKLOG_MAX = 1
    assert _post(client, key, _batch(1)).status_code == 202
    body = {**_batch(2), "batch_id": "retry-after-backlog-0001"}
    refused = _post(client, key, body)
    assert (refused.status_code, refused.json()["error"]["code"], refused["Retry-After"]) == (
        503, "metrics_backlog", "5")
    ingest.metrics_drain()
    assert _post(client, key, body).json() == {"accepted": True}  # the refused batch's id was not kept
    ingest.metrics_drain()
    assert _stored() == _expected([_batch(1), _batch(2)])


@pytest.mark.services
def test_metrics__redis_down__503_naming_redis_and_nothing_counted(client, key, in_redis, settings):
    from tests.conftest import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = _post(client, key, _batch(2))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "redis_unavailable"
    assert "Redis" in response.json()["error"]["message"] and response["Retry-After"] == "5"
    assert not MetricMinute.objects.exists()


@pytest.mark.services
def test_metrics__legacy_minute_hash__open_minute_left_until_closed(in_redis, envs):
    """Minute hashes written by servers from before the stream are still rolled up (an upgrade under traffic)."""
    import time

    now = time.time()
    _legacy_write(envs["staging"].pk, _batch(), int(now // 60))
    assert metrics_rollup(now=now).minutes == 0
    assert metrics_rollup(now=now + 120).minutes == 1
    assert _stored() == _expected([_batch()])


def _legacy_write(environment_id: int, body: dict[str, Any], minute: int) -> None:
    """What ``metrics_record`` wrote before the stream: HINCRBY into the minute's hash."""
    from common.redis import get_redis
    from rollout.telemetry import ingest as svc

    r = get_redis()
    for row in body["flags"]:
        base = f"{environment_id}\t{row['flag']}\t{row['path']}\t"
        for name in COUNTERS:
            value = row.get(name, sum(row["latency_ms"])) if name == "runs" else row[name]
            r.hincrby(svc._hash_key(minute), base + name, value)
        for index, value in enumerate(row["latency_ms"]):
            r.hincrby(svc._hash_key(minute), f"{base}lat\t{index}", value)
        for code, value in row["error_codes"].items():
            r.hincrby(svc._hash_key(minute), f"{base}code\t{code}", value)
    r.sadd(svc.MINUTES, minute)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_metrics__redis_concurrent_batches_and_racing_rollups__totals_exact(key, in_redis):
    batches = [_batch(n, samples=1) for n in range(60)]
    first, second = batches[:30], batches[30:]
    assert _post_concurrently(key, first) == [202] * 30

    # Two roll-ups race while the second half arrives: every count lands exactly once.
    def roll() -> None:
        from django.db import connection

        try:
            metrics_rollup(include_open=True)
        finally:
            connection.close()

    rollers = [threading.Thread(target=roll) for _ in range(2)]
    for t in rollers:
        t.start()
    assert _post_concurrently(key, second) == [202] * 30
    for t in rollers:
        t.join()
    metrics_rollup(include_open=True)
    assert _stored() == _expected(batches)
    # METRICS_SAMPLES_PER_MINUTE (50) per minute; 60 were sent, possibly across a minute's turn.
    assert 50 <= MismatchSample.objects.count() <= 60


@pytest.mark.services
def test_metrics__redis_claim_left_by_a_crash__finished_once(client, key, in_redis, envs):
    import time

    from common.redis import get_redis
    from rollout.telemetry import ingest as svc

    _legacy_write(envs["staging"].pk, _batch(5), int(time.time() // 60))
    r = get_redis()
    minute = int(next(iter(r.smembers(svc.MINUTES))))
    claim = f"{minute}:{int(time.time()) - 3600}:crashed"
    claimed_hash, claimed_samples = svc._claimed_keys(claim)
    # A run claimed the minute and died before writing anything.
    r.register_script(svc._CLAIM)(keys=[svc._hash_key(minute), svc._samples_key(minute), svc.MINUTES, claimed_hash,
                                        claimed_samples, svc.CLAIMS], args=[minute, claim])
    assert metrics_rollup(include_open=True).recovered == 1
    assert _stored() == _expected([_batch(5)])
    # A run that wrote the counts but died before releasing the claim: released, not counted twice.
    _legacy_write(envs["staging"].pk, _batch(6), int(time.time() // 60))
    minute = int(next(iter(r.smembers(svc.MINUTES))))
    claim = f"{minute}:{int(time.time()) - 3600}:half-done"
    claimed_hash, claimed_samples = svc._claimed_keys(claim)
    r.register_script(svc._CLAIM)(keys=[svc._hash_key(minute), svc._samples_key(minute), svc.MINUTES, claimed_hash,
                                        claimed_samples, svc.CLAIMS], args=[minute, claim])
    svc._apply_claim(r, claim)
    r.sadd(svc.CLAIMS, claim)
    r.hset(claimed_hash, f"{1}\tinvoice-engine\tlegacy\tcalls", 1000)
    assert metrics_rollup(include_open=True).recovered == 1
    assert _stored() == _expected([_batch(5), _batch(6)])
    assert MetricRollup.objects.count() == 2
    assert not r.exists(claimed_hash) and not r.smembers(svc.CLAIMS)


def _start_worker() -> Any:
    import os
    import subprocess
    import sys
    import time

    from config.celery import app
    from tests.conftest import ROOT, subprocess_env

    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "--concurrency=1",
         "--loglevel=WARNING", "--without-heartbeat", "--without-gossip", "--without-mingle",
         "-n", f"test-again-{os.getpid()}@%h"], cwd=ROOT, env=subprocess_env())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if app.control.ping(timeout=0.5):
            return proc
    proc.kill()
    pytest.fail("the second celery worker did not answer a ping within 30 s")


@pytest.mark.services
def test_metrics__real_worker_killed_and_restarted__sent_equals_stored(celery_worker_process, key, redis_url):
    """Sent = stored through the real path: the endpoint appends, the worker's queued roll-ups apply.
    The worker is killed (SIGKILL, at whatever point of a roll-up it was) while batches arrive, batches
    arrive with no worker at all, a new worker starts, and roll-ups are asked for several times over
    (as redelivered or duplicated tasks would be): every count is stored exactly once."""
    from rollout.tasks import drain_metrics, rollup_metrics
    from rollout.telemetry import ingest

    _clean_metrics_keys(redis_url)
    first = [_batch(n, samples=1) for n in range(16)]
    assert _post_concurrently(key, first) == [202] * 16
    celery_worker_process.kill()
    celery_worker_process.wait()
    second = [_batch(n) for n in range(16, 24)]
    assert _post_concurrently(key, second) == [202] * 8  # accepted with no worker at all
    worker = _start_worker()
    try:
        repeats = [drain_metrics.delay() for _ in range(3)]
        # (disable_sync_subtasks: tasks ran eagerly in this process before, which leaves Celery's
        # "inside a task" guard set; these calls wait on a real worker, not on a task of their own)
        assert rollup_metrics.delay(include_open=True).get(timeout=60, disable_sync_subtasks=False)["recovered"] == 0
        for repeat in repeats:
            repeat.get(timeout=60, disable_sync_subtasks=False)
    finally:
        worker.terminate()
        worker.wait(timeout=15)
    assert _stored() == _expected(first + second)
    from common.redis import get_redis

    assert get_redis().xlen(ingest.STREAM) == 0
    assert sum(MetricMinute.objects.values_list("calls", flat=True)) == sum(
        row["calls"] for body in first + second for row in body["flags"])


def test_metrics__beat_schedule__rolls_up_every_minute(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["rollup-metrics"]
    assert entry["task"] == "rollout.tasks.rollup_metrics" and entry["schedule"] == 60.0
