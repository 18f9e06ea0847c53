"""SDK metrics: counted as they arrive, rolled up per minute — no count lost, none counted twice.

Telemetry, not a change of state: nothing here writes an audit event (like a key's last use).

With Redis, ``metrics_record`` is one pipelined round trip of ``HINCRBY`` into the hash of the
current minute (``turnout:metrics:m:<minute>``, one field per environment × flag × path × counter
or latency bucket), an ``RPUSH``/``LTRIM`` of the mismatch samples into the minute's capped list,
and an ``SADD`` of the minute into the set of minutes to roll up.

``metrics_rollup`` (the Celery beat task, every minute) takes each closed minute in three steps:
1. claim: one Lua script renames the minute's hash and list to keys named after a fresh claim id
   and records the claim — atomic, so two runs never take the same counts; increments that arrive
   later re-create the minute's hash and are taken by the next run;
2. apply: one database transaction adds the claimed counts to ``MetricMinute`` rows (locked, so
   racing transactions add rather than overwrite) and inserts ``MetricRollup(claim)``, whose unique
   constraint makes a claim apply at most once;
3. release: the claimed keys are deleted.
A run that dies after 1 or 2 leaves its claim recorded; a later run finishes claims older than
``METRICS_ROLLUP_RECOVER_SECONDS`` (re-applying is refused by the constraint, then released).

Beside the minute, the same round trip counts what guardrails judge (calls, runs, errors, comparisons,
mismatches, latency) into ``turnout:metrics:f:<minute>``, one field per environment × flag × path ×
counter *and when the batch's traffic began* (the receive time less the batch window's length — a
difference on the SDK's clock, so never skewed — less ``FINE_MARGIN_SECONDS``, rounded down to
``FINE_STEP_SECONDS``): a stage's first, partial minute is judged on the batches whose traffic all came
after the stage began (``reads.partial_minute_stats``). Kept ``FINE_TTL`` seconds (with the default
300 s window a stage's first minute stays judged for five); never rolled up. Its size is bounded by the
steps, not by the number of SDK processes: at most 60 / step + a few begin times per field of the
minute's hash.

Without Redis (embedded mode) ``metrics_record`` adds the counts to the ``MetricMinute`` rows
directly in one transaction, and the roll-up has nothing to do.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, transaction

from common.conf import get_setting
from common.redis import get_redis
from rollout.models import MetricMinute, MetricRollup, MismatchSample
from rollout.telemetry.batches import COUNTERS, HISTOGRAM_SIZE, Batch

logger = logging.getLogger("turnout.metrics")

PREFIX = "turnout:metrics"
MINUTES = f"{PREFIX}:minutes"
CLAIMS = f"{PREFIX}:claims"
SEP = "\t"
SAMPLES_PER_LIST = 500  # per minute in Redis, all environments; each environment keeps its own cap on roll-up
KEY_TTL = 7 * 24 * 3600  # a safety net only: a healthy roll-up deletes each key within minutes
FINE_TTL = 900  # a stage's first partial minute is judged from these for 15 minutes
FINE_STEP_SECONDS = 5
FINE_COUNTERS = ("calls", "runs", "errors", "comparisons", "mismatches")
#: how much earlier than (receive time - window length) a batch's traffic may have begun: its post's delay
FINE_MARGIN_SECONDS = 1.0

# KEYS: minute hash, minute samples, minutes set, claimed hash, claimed samples, claims set
# ARGV: minute, claim id
_CLAIM = """
local taken = 0
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('RENAME', KEYS[1], KEYS[4]); taken = taken + 1 end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('RENAME', KEYS[2], KEYS[5]); taken = taken + 1 end
redis.call('SREM', KEYS[3], ARGV[1])
if taken > 0 then redis.call('SADD', KEYS[6], ARGV[2]) end
return taken
"""

Counts = dict[str, Any]  # counter -> int, plus "latency_ms" -> list[int], "error_codes" -> dict
RowKey = tuple[int, str, str, int]  # environment id, flag key, path, minute (epoch minutes)


def _minute_of(ts: float) -> int:
    return int(ts // 60)


def _minute_dt(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, UTC)


def _hash_key(minute: int) -> str:
    return f"{PREFIX}:m:{minute}"


def _samples_key(minute: int) -> str:
    return f"{PREFIX}:s:{minute}"


def fine_key(minute: int) -> str:
    return f"{PREFIX}:f:{minute}"


def _claimed_keys(claim: str) -> tuple[str, str]:
    return f"{PREFIX}:claimed:{claim}:m", f"{PREFIX}:claimed:{claim}:s"


def _empty_counts() -> Counts:
    counts: Counts = dict.fromkeys(COUNTERS, 0)
    counts["latency_ms"] = [0] * HISTOGRAM_SIZE
    counts["error_codes"] = {}
    return counts


def _sample_doc(environment_id: int, sample: Any) -> dict[str, Any]:
    return {"environment_id": environment_id, "flag": sample.flag, "version": sample.version,
            "key_hash": sample.key_hash, "served": sample.served, "legacy": sample.legacy,
            "parallel": sample.parallel, "truncated": sample.truncated, "at": sample.at.isoformat()}


# -- recording -----------------------------------------------------------------------------------


def metrics_record(*, environment_id: int, batch: Batch, now: float | None = None) -> None:
    """Count one SDK batch for the environment, in the minute the server received it."""
    ts = time.time() if now is None else now
    minute = _minute_of(ts)
    for event in batch.breaker_events:
        logger.info("sdk.breaker", extra={"environment_id": environment_id, **event})
    if batch.dropped:
        logger.info("sdk.metrics_dropped", extra={"environment_id": environment_id, **batch.dropped})
    client = get_redis()
    if client is None:
        _record_in_database(environment_id, batch, minute)
        return
    hash_key, samples_key = _hash_key(minute), _samples_key(minute)
    pipe = client.pipeline(transaction=False)
    for row in batch.rows:
        base = f"{environment_id}{SEP}{row.flag}{SEP}{row.path}{SEP}"
        for name, value in row.counts.items():
            if value:
                pipe.hincrby(hash_key, base + name, value)
        for index, value in enumerate(row.latency):
            if value:
                pipe.hincrby(hash_key, f"{base}lat{SEP}{index}", value)
        for code, value in row.error_codes.items():
            if value:
                pipe.hincrby(hash_key, f"{base}code{SEP}{code}", value)
        if not any(row.counts.values()):  # still record that the flag was reported
            pipe.hincrby(hash_key, base + "calls", 0)
    pipe.expire(hash_key, KEY_TTL)
    began = ts - (batch.window_end - batch.window_start).total_seconds() - FINE_MARGIN_SECONDS
    began = int(began // FINE_STEP_SECONDS * FINE_STEP_SECONDS)  # down: never later than the traffic began
    fine = fine_key(minute)
    for row in batch.rows:
        base = f"{began}{SEP}{environment_id}{SEP}{row.flag}{SEP}{row.path}{SEP}"
        for name in FINE_COUNTERS:
            if row.counts[name]:
                pipe.hincrby(fine, base + name, row.counts[name])
        for index, value in enumerate(row.latency):
            if value:
                pipe.hincrby(fine, f"{base}lat{SEP}{index}", value)
    pipe.expire(fine, FINE_TTL)
    if batch.samples:
        pipe.rpush(samples_key, *(json.dumps(_sample_doc(environment_id, s)) for s in batch.samples))
        pipe.ltrim(samples_key, 0, SAMPLES_PER_LIST - 1)
        pipe.expire(samples_key, KEY_TTL)
    pipe.sadd(MINUTES, minute)
    pipe.execute()


def _rows_of(environment_id: int, batch: Batch, minute: int) -> dict[RowKey, Counts]:
    rows: dict[RowKey, Counts] = defaultdict(_empty_counts)
    for row in batch.rows:
        counts = rows[(environment_id, row.flag, row.path, minute)]
        for name, value in row.counts.items():
            counts[name] += value
        counts["latency_ms"] = [a + b for a, b in zip(counts["latency_ms"], row.latency, strict=True)]
        for code, value in row.error_codes.items():
            counts["error_codes"][code] = counts["error_codes"].get(code, 0) + value
    return rows


def _record_in_database(environment_id: int, batch: Batch, minute: int) -> None:
    rows = _rows_of(environment_id, batch, minute)
    with transaction.atomic():
        _add_counts(rows)
        _store_samples(minute, [_sample_doc(environment_id, s) for s in batch.samples])


def _add_counts(rows: dict[RowKey, Counts]) -> None:
    """Add counts to their MetricMinute rows (inside the caller's transaction). Rows are locked in
    one order, so concurrent writers queue on a row instead of deadlocking or overwriting."""
    for (environment_id, flag, path, minute) in sorted(rows):
        counts = rows[(environment_id, flag, path, minute)]
        fields = {name: counts[name] for name in COUNTERS}
        obj, created = MetricMinute.objects.select_for_update().get_or_create(
            environment_id=environment_id, flag_key=flag, path=path, minute=_minute_dt(minute),
            defaults={**fields, "latency_ms": counts["latency_ms"], "error_codes": counts["error_codes"]},
        )
        if created:
            continue
        for name, value in fields.items():
            setattr(obj, name, getattr(obj, name) + value)
        old = list(obj.latency_ms or []) + [0] * (HISTOGRAM_SIZE - len(obj.latency_ms or []))
        obj.latency_ms = [a + b for a, b in zip(old, counts["latency_ms"], strict=True)]
        codes = dict(obj.error_codes or {})
        for code, value in counts["error_codes"].items():
            codes[code] = codes.get(code, 0) + value
        obj.error_codes = codes
        obj.save()


def _store_samples(minute: int, docs: list[dict[str, Any]]) -> int:
    """Keep up to METRICS_SAMPLES_PER_MINUTE samples per environment and minute; returns how many."""
    cap = get_setting("METRICS_SAMPLES_PER_MINUTE")
    when = _minute_dt(minute)
    by_env: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for doc in docs:
        by_env[doc["environment_id"]].append(doc)
    stored = 0
    for env_id, env_docs in by_env.items():
        room = cap - MismatchSample.objects.filter(environment_id=env_id, minute=when).count()
        if room <= 0:
            continue
        MismatchSample.objects.bulk_create([
            MismatchSample(environment_id=env_id, flag_key=d["flag"], version=d["version"], key_hash=d["key_hash"],
                           served=d["served"], legacy=d["legacy"], parallel=d["parallel"],
                           truncated=d["truncated"], at=datetime.fromisoformat(d["at"]), minute=when)
            for d in env_docs[:room]
        ])
        stored += min(room, len(env_docs))
    return stored


# -- roll-up -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RollupResult:
    minutes: int
    rows: int
    samples: int
    recovered: int


def metrics_rollup(*, now: float | None = None, include_open: bool = False) -> RollupResult:
    """Move every closed minute's counts from Redis into MetricMinute (see the module docstring).

    ``include_open`` also takes the current minute (tests, shutdown): correct at any time, because
    counts arriving after a claim land in a fresh hash that the next run takes.
    """
    client = get_redis()
    if client is None:
        return RollupResult(0, 0, 0, 0)
    ts = time.time() if now is None else now
    grace = get_setting("METRICS_ROLLUP_GRACE_SECONDS")
    recovered = _recover(client, ts)
    minutes = rows = samples = 0
    claim_script = client.register_script(_CLAIM)
    for raw in sorted(int(m) for m in client.smembers(MINUTES)):
        if not include_open and (raw + 1) * 60 + grace > ts:
            continue
        claim = f"{raw}:{int(ts)}:{uuid.uuid4().hex}"
        claimed_hash, claimed_samples = _claimed_keys(claim)
        taken = claim_script(keys=[_hash_key(raw), _samples_key(raw), MINUTES, claimed_hash, claimed_samples,
                                   CLAIMS], args=[raw, claim])
        if not taken:
            continue  # another run took it first
        applied = _apply_claim(client, claim)
        minutes += 1
        rows += applied[0]
        samples += applied[1]
    if minutes or recovered:
        logger.info("metrics.rolled_up", extra={"minutes": minutes, "rows": rows, "samples": samples,
                                                "recovered": recovered})
    return RollupResult(minutes, rows, samples, recovered)


def _recover(client: Any, ts: float) -> int:
    """Finish claims a crashed run left behind (older than METRICS_ROLLUP_RECOVER_SECONDS)."""
    cutoff = ts - get_setting("METRICS_ROLLUP_RECOVER_SECONDS")
    done = 0
    for raw in client.smembers(CLAIMS):
        claim = raw.decode() if isinstance(raw, bytes) else str(raw)
        try:
            claimed_at = int(claim.split(":")[1])
        except (IndexError, ValueError):
            client.srem(CLAIMS, raw)
            continue
        if claimed_at <= cutoff:
            _apply_claim(client, claim)
            done += 1
    return done


def _parse_hash(data: dict[bytes, bytes], minute: int) -> dict[RowKey, Counts]:
    rows: dict[RowKey, Counts] = defaultdict(_empty_counts)
    for raw_field, raw_value in data.items():
        parts = raw_field.decode().split(SEP)
        value = int(raw_value)
        env_id, flag, path = int(parts[0]), parts[1], parts[2]
        counts = rows[(env_id, flag, path, minute)]
        if parts[3] == "lat":
            index = int(parts[4])
            if 0 <= index < HISTOGRAM_SIZE:
                counts["latency_ms"][index] += value
        elif parts[3] == "code":
            counts["error_codes"][parts[4]] = counts["error_codes"].get(parts[4], 0) + value
        elif parts[3] in COUNTERS:
            counts[parts[3]] += value
    return rows


FineKey = tuple[int, str, str, int]  # environment id, flag key, path, second the traffic began


def parse_fine(data: dict[bytes, bytes]) -> dict[FineKey, Counts]:
    """The fields of a ``fine_key`` hash, by environment, flag, path and the second traffic began."""
    rows: dict[FineKey, Counts] = defaultdict(_empty_counts)
    for raw_field, raw_value in data.items():
        parts = raw_field.decode().split(SEP)
        counts = rows[(int(parts[1]), parts[2], parts[3], int(parts[0]))]
        if parts[4] == "lat":
            index = int(parts[5])
            if 0 <= index < HISTOGRAM_SIZE:
                counts["latency_ms"][index] += int(raw_value)
        elif parts[4] in FINE_COUNTERS:
            counts[parts[4]] += int(raw_value)
    return rows


def _apply_claim(client: Any, claim: str) -> tuple[int, int]:
    """Write a claim's counts once (MetricRollup's unique claim), then delete its keys."""
    minute = int(claim.split(":")[0])
    claimed_hash, claimed_samples = _claimed_keys(claim)
    rows = _parse_hash(client.hgetall(claimed_hash), minute)
    docs = [json.loads(d) for d in client.lrange(claimed_samples, 0, -1)]
    stored = 0
    try:
        with transaction.atomic():
            MetricRollup.objects.create(claim=claim, minute=_minute_dt(minute), rows=len(rows))
            _add_counts(rows)
            stored = _store_samples(minute, docs)
    except IntegrityError:
        # Already applied (a run that died before releasing the claim): only release it.
        if not MetricRollup.objects.filter(claim=claim).exists():
            raise
        rows = {}
    client.delete(claimed_hash, claimed_samples)
    client.srem(CLAIMS, claim)
    return len(rows), stored
