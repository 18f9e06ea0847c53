"""SDK metrics: accepted with one cheap write, rolled up by the worker — no count lost, none counted twice.

Telemetry, not a change of state: nothing here writes an audit event (like a key's last use).

**Accepting** (the request path, with Redis): after the batch is checked (``batches.parse_batch``,
``datamigration.telemetry.parse_migration_batch``), ``metrics_accept`` appends its body, as received, to
one Redis stream (``turnout:metrics:stream``; fields: environment id, receive time, body) with one Lua
script — one round trip, whatever the batch holds. The same script
- refuses the batch (``Backlog``, a 503 for the SDK to retry) when more than ``METRICS_BACKLOG_MAX``
  batches wait, so a stopped worker can never fill Redis's memory;
- drops a batch whose ``batch_id`` it took in the last ``METRICS_BATCH_ID_SECONDS`` (an SDK retrying a
  batch whose answer it never got): counted once, answered ``202`` again;
- sets a flag (``turnout:metrics:drain-queued``) and tells the caller to queue a roll-up when none is
  queued, so batches are rolled up within moments without a task per batch.

**Rolling up** (``metrics_drain``, a Celery task; queued as above, and by beat every minute as a safety
net): in one database transaction per chunk of entries it locks the stream's ``MetricCursor`` row, reads
the entries after the cursor, adds their counts to ``MetricMinute`` (the minute the server received
them) and ``MigrationMinute``, stores their samples and divergences, and moves the cursor to the last
entry. So an entry is applied exactly once: a run that dies before the commit leaves the cursor where
it was (the entries are read again), one that dies after it leaves entries the next run skips (they are
after the cursor no more), and two runs at once queue on the row lock (or, on a database without row
locks, the second's conditional cursor update fails and it rolls back). Entries are deleted from the
stream (``XTRIM MINID``) only after their chunk is committed.

Beside the minute, the counts guardrails judge (calls, runs, errors, comparisons, mismatches, latency)
go into ``turnout:metrics:f:<minute>``, one field per environment × flag × path × counter *and when the
batch's traffic began* (the receive time less the batch window's length — a difference on the SDK's
clock, so never skewed — less ``FINE_MARGIN_SECONDS``, rounded down to ``FINE_STEP_SECONDS``): a stage's
first, partial minute is judged on the batches whose traffic all came after the stage began
(``reads.partial_minute_stats``). Written by the roll-up after its commit (at most once: a crash in
between leaves a few seconds out of that partial-minute view, never in it twice); kept ``FINE_TTL``
seconds, never rolled up.

Minute hashes (``turnout:metrics:m:<minute>``) are how servers before the stream counted; ``metrics_rollup``
still claims and applies any it finds (one Lua rename per minute, then ``MetricRollup(claim)`` unique),
so an upgrade in the middle of traffic loses nothing.

Without Redis (embedded mode) ``metrics_record`` adds the counts to the ``MetricMinute`` rows directly
in one transaction, and the roll-up has nothing to do.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery import current_app
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Field
from django.utils import timezone

from common import clock
from common.conf import get_setting
from common.redis import get_redis
from rollout.datamigration.telemetry import MigrationBatch, migration_apply, parse_migration_batch
from rollout.delivery.lean import BadRequest
from rollout.models import MetricCursor, MetricMinute, MetricRollup, MismatchSample
from rollout.telemetry.batches import COUNTERS, HISTOGRAM_SIZE, Batch, parse_batch

logger = logging.getLogger("turnout.metrics")

PREFIX = "turnout:metrics"
STREAM = f"{PREFIX}:stream"
DRAIN_QUEUED = f"{PREFIX}:drain-queued"
SEEN = f"{PREFIX}:batch"
CURSOR = "metrics"
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

# KEYS: stream, the batch id's key (the stream again when there is none), the drain-queued flag
# ARGV: environment id, receive time, body, seconds a batch id is remembered (0: no id),
#       backlog limit, milliseconds the drain-queued flag lives
# -> -2 backlog full (nothing written), -1 a batch id seen before (nothing written),
#    1 appended and a roll-up should be queued, 0 appended (one is queued already)
_ACCEPT = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[5]) then return -2 end
if tonumber(ARGV[4]) > 0 then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[4]) then return -1 end
end
redis.call('XADD', KEYS[1], '*', 'e', ARGV[1], 't', ARGV[2], 'b', ARGV[3])
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[6]) then return 1 end
return 0
"""
DRAIN_QUEUED_MS = 10_000  # a queued roll-up that never ran (a lost enqueue) is queued again after this
DRAIN_TASK = "rollout.tasks.drain_metrics"

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


# -- accepting ----------------------------------------------------------------------------------


class Backlog(Exception):
    """More than ``METRICS_BACKLOG_MAX`` batches wait for the roll-up: the batch is refused (the SDK
    keeps it and retries at its next flush), so a stopped worker cannot fill Redis."""

    def __init__(self, waiting: int) -> None:
        super().__init__(f"{waiting} metrics batches wait for the roll-up")
        self.waiting = waiting


def _log_events(environment_id: int, batch: Batch) -> None:
    for event in batch.breaker_events:
        logger.info("sdk.breaker", extra={"environment_id": environment_id, **event})
    if batch.dropped:
        logger.info("sdk.metrics_dropped", extra={"environment_id": environment_id, **batch.dropped})


def _accept_call(environment_id: int, body: bytes, batch: Batch, ts: float) -> tuple[list[str], list[Any]]:
    """The accept script's keys and arguments."""
    remember = get_setting("METRICS_BATCH_ID_SECONDS") if batch.batch_id else 0
    seen = f"{SEEN}:{environment_id}:{batch.batch_id}" if batch.batch_id else STREAM
    return ([STREAM, seen, DRAIN_QUEUED],
            [environment_id, repr(ts), body, remember, get_setting("METRICS_BACKLOG_MAX"), DRAIN_QUEUED_MS])


_scripts: dict[int, tuple[Any, Any]] = {}


def _accept_script(client: Any) -> Any:
    """The accept script registered on ``client`` (sync or asyncio), made once per client."""
    found = _scripts.get(id(client))
    if found is None or found[0] is not client:
        found = (client, client.register_script(_ACCEPT))
        _scripts[id(client)] = found
    return found[1]


def _accepted(outcome: int) -> tuple[bool, bool]:
    """(new batch, queue a roll-up) from the accept script's answer; Backlog when refused."""
    if outcome == -2:
        raise Backlog(get_setting("METRICS_BACKLOG_MAX"))
    return outcome != -1, outcome == 1


def metrics_accept(*, environment_id: int, body: bytes, batch: Batch, migrations: MigrationBatch | None = None,
                   now: float | None = None, queue_drain: bool = True) -> tuple[bool, bool]:
    """Take one checked SDK batch (``body`` as received, ``batch`` and ``migrations`` parsed from it) for
    the environment. Returns (new, drain): ``new`` is False for a ``batch_id`` taken before (not counted
    again); ``drain`` says a roll-up should be queued (done here unless ``queue_drain`` is False).

    With Redis: one round trip (see the module docstring); ``redis.RedisError`` when Redis fails,
    ``Backlog`` when too many batches wait. Without Redis: counted in the database at once."""
    ts = clock.now().timestamp() if now is None else now
    _log_events(environment_id, batch)
    client = get_redis()
    if client is None:
        _record_in_database(environment_id, batch, migrations, _minute_of(ts))
        return True, False
    keys, args = _accept_call(environment_id, body, batch, ts)
    new, drain = _accepted(int(_accept_script(client)(keys=keys, args=args)))
    if drain and queue_drain:
        queue_metrics_drain()
    return new, drain


async def ametrics_accept(client: Any, *, environment_id: int, body: bytes, batch: Batch) -> tuple[bool, bool]:
    """``metrics_accept`` on an event loop's ``redis.asyncio`` client (the async endpoint): the same one
    round trip, awaited; queuing the roll-up is left to the caller (it is a broker call)."""
    ts = clock.now().timestamp()
    _log_events(environment_id, batch)
    keys, args = _accept_call(environment_id, body, batch, ts)
    return _accepted(int(await _accept_script(client)(keys=keys, args=args)))


def queue_metrics_drain() -> None:
    """Queue a roll-up (``rollout.tasks.drain_metrics``); never raises: when the broker is away the
    flag that stops other requests from queuing one expires in ``DRAIN_QUEUED_MS``, and beat runs one
    every minute anyway."""
    try:
        # By name from the app's registry: rollout.tasks imports this module (no import cycle).
        current_app.tasks[DRAIN_TASK].apply_async(retry=False)
    except Exception as exc:
        logger.warning("metrics.drain_not_queued", extra={"error": type(exc).__name__})


def _wire(batch: Batch) -> bytes:
    """A parsed batch back in the wire format (what ``parse_batch`` reads)."""
    data: dict[str, Any] = {
        "sdk": batch.sdk,
        "window": {"start": batch.window_start.isoformat(), "end": batch.window_end.isoformat()},
        "flags": [{"flag": r.flag, "path": r.path, "version": r.version, **r.counts, "latency_ms": r.latency,
                   "error_codes": r.error_codes} for r in batch.rows],
        "mismatch_samples": [{k: v for k, v in _sample_doc(0, s).items() if k != "environment_id"}
                             for s in batch.samples],
        "breaker_events": [], "dropped": {},
    }
    if batch.batch_id:
        data["batch_id"] = batch.batch_id
    return json.dumps(data, separators=(",", ":")).encode()


def metrics_record(*, environment_id: int, batch: Batch, now: float | None = None) -> None:
    """Count one SDK batch for the environment, in the minute the server received it (``now``): the
    endpoint's path for a batch already parsed (``metrics_accept``)."""
    metrics_accept(environment_id=environment_id, body=_wire(batch), batch=batch, now=now)


def _merge_rows(rows: dict[RowKey, Counts], environment_id: int, batch: Batch, minute: int) -> None:
    for row in batch.rows:
        counts = rows[(environment_id, row.flag, row.path, minute)]
        for name, value in row.counts.items():
            counts[name] += value
        counts["latency_ms"] = [a + b for a, b in zip(counts["latency_ms"], row.latency, strict=True)]
        for code, value in row.error_codes.items():
            counts["error_codes"][code] = counts["error_codes"].get(code, 0) + value


def _rows_of(environment_id: int, batch: Batch, minute: int) -> dict[RowKey, Counts]:
    rows: dict[RowKey, Counts] = defaultdict(_empty_counts)
    _merge_rows(rows, environment_id, batch, minute)
    return rows


def _record_in_database(environment_id: int, batch: Batch, migrations: MigrationBatch | None, minute: int) -> None:
    rows = _rows_of(environment_id, batch, minute)
    with transaction.atomic():
        _add_counts(rows)
        _store_samples(minute, [_sample_doc(environment_id, s) for s in batch.samples])
        if migrations:
            migration_apply(environment_id=environment_id, minute=_minute_dt(minute), batch=migrations)


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


@dataclass
class DrainResult:
    """What one ``metrics_drain`` run applied: batches (stream entries), MetricMinute rows written,
    mismatch samples stored, distinct minutes; entries that could not be read (logged, skipped); the
    largest time from a batch's acceptance to the commit that applied it; entries still waiting."""

    batches: int = 0
    rows: int = 0
    samples: int = 0
    minutes: int = 0
    skipped: int = 0
    lag_seconds: float | None = None
    backlog: int = 0
    busy: bool = False
    _minutes: set[int] = field(default_factory=set, repr=False)


class _Raced(Exception):
    """The cursor moved under this run (a database without row locks): roll back and read again."""


def _entry_id(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _after(entry_id: str) -> str:
    """The smallest stream id after ``entry_id`` (``XTRIM MINID`` keeps ids >= it)."""
    ms, seq = entry_id.split("-")
    return f"{ms}-{int(seq) + 1}"


def metrics_drain(*, wait: bool = True, budget_seconds: float | None = None, chunk: int | None = None,
                  now: float | None = None) -> DrainResult:
    """Apply the batches waiting in the stream (see the module docstring), up to the newest one when the
    run first held the cursor, in chunks of ``METRICS_DRAIN_CHUNK`` entries, for at most
    ``METRICS_DRAIN_BUDGET_SECONDS`` (then it queues the next run). ``wait`` False: return at once
    (``busy``) when another run holds the cursor — that run takes these entries too."""
    result = DrainResult()
    client = get_redis()
    if client is None:
        return result
    size = chunk or get_setting("METRICS_DRAIN_CHUNK")
    budget = get_setting("METRICS_DRAIN_BUDGET_SECONDS") if budget_seconds is None else budget_seconds
    deadline = time.monotonic() + budget
    MetricCursor.objects.get_or_create(name=CURSOR)
    retries = 0
    tip: list[str] = []  # the newest entry when this run first held the cursor: where it stops
    while True:
        try:
            last = _drain_chunk(client, tip, size, wait, result, now)
        except (_Raced, IntegrityError):
            retries += 1  # another writer got there first: nothing of this chunk was kept
            if retries > 5:
                raise
            continue
        if last is None or last == tip[0]:
            break
        if time.monotonic() > deadline:
            queue_metrics_drain()  # the rest in the next run, so one task never holds a worker for long
            break
    result.minutes = len(result._minutes)
    result.backlog = int(client.xlen(STREAM))
    if result.batches or result.skipped:
        logger.info("metrics.drained", extra={"batches": result.batches, "rows": result.rows,
                                              "samples": result.samples, "skipped": result.skipped,
                                              "lag_seconds": result.lag_seconds, "backlog": result.backlog})
    return result


def _drain_chunk(client: Any, tip: list[str], size: int, wait: bool, result: DrainResult,
                 now: float | None) -> str | None:
    """Apply the next ``size`` entries after the cursor (up to ``tip[0]``) in one transaction; the last
    id applied, or None when there was nothing to do (or the cursor was busy and ``wait`` is False).

    The first call of a run, once it holds the cursor, clears the drain-queued flag and then reads the
    newest entry into ``tip``: a batch accepted after that queues the next run (which waits here for
    this one), one accepted before is taken by this run — none is left waiting for beat."""
    with transaction.atomic():
        cursor = MetricCursor.objects.select_for_update(skip_locked=not wait).filter(name=CURSOR).first()
        if cursor is None:
            result.busy = True
            return None
        if not tip:
            client.delete(DRAIN_QUEUED)
            newest = client.xrevrange(STREAM, count=1)
            if not newest:
                return None
            tip.append(_entry_id(newest[0][0]))
        start = f"({cursor.last_id}" if cursor.last_id else "-"
        entries = client.xrange(STREAM, min=start, max=tip[0], count=size)
        if not entries:
            return None
        applied = _apply_entries(entries)
        last = _entry_id(entries[-1][0])
        moved = MetricCursor.objects.filter(pk=cursor.pk, last_id=cursor.last_id).update(
            last_id=last, batches=F("batches") + applied.batches, updated_at=timezone.now())
        if moved != 1:
            raise _Raced
    # Committed: the entries are counted; drop them from the stream and keep the fine counts.
    client.xtrim(STREAM, minid=_after(last), approximate=False)
    if applied.fine:
        pipe = client.pipeline(transaction=False)
        for (minute, name), value in applied.fine.items():
            pipe.hincrby(fine_key(minute), name, value)
        for minute in {minute for minute, _ in applied.fine}:
            pipe.expire(fine_key(minute), FINE_TTL)
        pipe.execute()
    ts = time.time() if now is None else now
    result.batches += applied.batches
    result.rows += applied.rows
    result.samples += applied.samples
    result.skipped += applied.skipped
    result._minutes |= applied.minutes
    if applied.oldest is not None:
        lag = max(0.0, ts - applied.oldest)
        result.lag_seconds = lag if result.lag_seconds is None else max(result.lag_seconds, lag)
    return last


@dataclass
class _Applied:
    batches: int = 0
    rows: int = 0
    samples: int = 0
    skipped: int = 0
    oldest: float | None = None
    minutes: set[int] = field(default_factory=set)
    fine: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))


def _fine_counts(fine: dict[tuple[int, str], int], environment_id: int, batch: Batch, ts: float) -> None:
    began = ts - (batch.window_end - batch.window_start).total_seconds() - FINE_MARGIN_SECONDS
    began = int(began // FINE_STEP_SECONDS * FINE_STEP_SECONDS)  # down: never later than the traffic began
    minute = _minute_of(ts)
    for row in batch.rows:
        base = f"{began}{SEP}{environment_id}{SEP}{row.flag}{SEP}{row.path}{SEP}"
        for name in FINE_COUNTERS:
            if row.counts[name]:
                fine[(minute, base + name)] += row.counts[name]
        for index, value in enumerate(row.latency):
            if value:
                fine[(minute, f"{base}lat{SEP}{index}")] += value


def _apply_entries(entries: list[Any]) -> _Applied:
    """Count a chunk of stream entries into the database (inside the caller's transaction)."""
    out = _Applied()
    rows: dict[RowKey, Counts] = defaultdict(_empty_counts)
    docs: dict[int, list[dict[str, Any]]] = defaultdict(list)
    migrations: dict[tuple[int, int], MigrationBatch] = {}
    for entry_id, fields in entries:
        try:
            environment_id, ts = int(fields[b"e"]), float(fields[b"t"])
            data = json.loads(fields[b"b"])
            batch, migration = parse_batch(data), parse_migration_batch(data)
        except (KeyError, ValueError, BadRequest) as exc:  # never written by metrics_accept; never blocks the rest
            logger.error("metrics.entry_unreadable", extra={"entry": _entry_id(entry_id), "error": str(exc)})
            out.skipped += 1
            continue
        minute = _minute_of(ts)
        out.batches += 1
        out.minutes.add(minute)
        out.oldest = ts if out.oldest is None else min(out.oldest, ts)
        _merge_rows(rows, environment_id, batch, minute)
        docs[minute].extend(_sample_doc(environment_id, s) for s in batch.samples)
        if migration:
            into = migrations.setdefault((environment_id, minute), MigrationBatch([], [], []))
            into.rows.extend(migration.rows)
            into.samples.extend(migration.samples)
            into.divergences.extend(migration.divergences)
        _fine_counts(out.fine, environment_id, batch, ts)
    _add_counts_bulk(rows)
    out.rows = len(rows)
    out.samples = sum(_store_samples(minute, minute_docs) for minute, minute_docs in sorted(docs.items()))
    for (environment_id, minute), migration in sorted(migrations.items(), key=lambda kv: kv[0]):
        migration_apply(environment_id=environment_id, minute=_minute_dt(minute), batch=migration)
    return out


def _add_counts_bulk(rows: dict[RowKey, Counts]) -> None:
    """``_add_counts`` in three statements: lock the existing rows, update them, insert the rest. For the
    roll-up, the only writer of these rows with Redis (its cursor serializes runs); a row inserted by
    someone else meanwhile fails the insert (IntegrityError) and the caller reads the chunk again."""
    if not rows:
        return
    minutes = {_minute_dt(key[3]) for key in rows}
    existing = {(r.environment_id, r.flag_key, r.path, _minute_of(r.minute.timestamp())): r
                for r in MetricMinute.objects.select_for_update().filter(
                    environment_id__in={key[0] for key in rows}, flag_key__in={key[1] for key in rows},
                    minute__in=minutes).order_by("pk")}
    now = timezone.now()
    changed: list[MetricMinute] = []
    new: list[MetricMinute] = []
    for key in sorted(rows):
        counts = rows[key]
        obj = existing.get(key)
        if obj is None:
            new.append(MetricMinute(environment_id=key[0], flag_key=key[1], path=key[2], minute=_minute_dt(key[3]),
                                    **{name: counts[name] for name in COUNTERS}, latency_ms=counts["latency_ms"],
                                    error_codes=counts["error_codes"]))
            continue
        for name in COUNTERS:
            setattr(obj, name, getattr(obj, name) + counts[name])
        old = list(obj.latency_ms or []) + [0] * (HISTOGRAM_SIZE - len(obj.latency_ms or []))
        obj.latency_ms = [a + b for a, b in zip(old, counts["latency_ms"], strict=True)]
        codes = dict(obj.error_codes or {})
        for code, value in counts["error_codes"].items():
            codes[code] = codes.get(code, 0) + value
        obj.error_codes = codes
        obj.updated_at = now
        changed.append(obj)
    if changed:
        _update_rows(changed)
    if new:
        MetricMinute.objects.bulk_create(new, batch_size=500)


_UPDATED = [*COUNTERS, "latency_ms", "error_codes", "updated_at"]


def _update_rows(rows: list[MetricMinute]) -> None:
    """Write the new totals of rows already locked: one prepared UPDATE run for every row (``bulk_update``
    builds a CASE per row and field, which cost more CPU than the rest of the roll-up together)."""
    meta = MetricMinute._meta
    fields = [field for field in (meta.get_field(name) for name in _UPDATED) if isinstance(field, Field)]
    pk = meta.pk
    assert pk is not None and len(fields) == len(_UPDATED)
    quote = connection.ops.quote_name
    sql = (f"UPDATE {quote(meta.db_table)} SET {', '.join(f'{quote(f.column)} = %s' for f in fields)} "
           f"WHERE {quote(pk.column)} = %s")
    params = [[f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields] + [row.pk] for row in rows]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


@dataclass(frozen=True)
class RollupResult:
    minutes: int
    rows: int
    samples: int
    recovered: int
    batches: int = 0


def metrics_rollup(*, now: float | None = None, include_open: bool = False) -> RollupResult:
    """Everything waiting: the stream (``metrics_drain``, waiting for a run in progress) and any minute
    hashes left by servers from before the stream (closed minutes; ``include_open`` takes the current
    one too — correct at any time, as counts arriving after a claim land in a fresh hash)."""
    client = get_redis()
    if client is None:
        return RollupResult(0, 0, 0, 0)
    drained = metrics_drain(now=now)
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
    return RollupResult(minutes + drained.minutes, rows + drained.rows, samples + drained.samples, recovered,
                        drained.batches)


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
