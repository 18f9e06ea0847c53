"""Data migrations: ``client.migration(flag)`` reads and writes through the origins a stage names.

    accounts = client.migration("accounts-store", identify=lambda row: str(row.id))
    row = accounts.write(tenant.id, legacy=lambda: old_db.save(acct), parallel=lambda: new_db.save(acct))
    acct = accounts.read(tenant.id, legacy=lambda: old_db.get(id), parallel=lambda: new_db.get(id))

A subject's stage comes from the ruleset (``Ruleset.decide_stage``; docs/migrations.md). A call runs
the **authoritative** origin on the caller's thread (or task) and returns its result; its exception
is the host's and propagates unchanged. The other origin, when the stage runs one, runs on a small
bounded pool (a task for ``aread``/``awrite``): the call waits for it at most ``budget`` seconds
after the authoritative one returned, then returns anyway (counted as ``late``). Whatever it does —
raise, hang, return garbage — never changes the result or raises into the host.

Recorded per (flag, ruleset version, stage, origin, operation): runs, errors, late and skipped runs,
latency; for reads that ran both origins a consistency check (``compare(legacy, parallel)``, with a
few inconsistent pairs kept as samples through ``redact``, capped like mismatch samples); for writes
whose non-authoritative side failed (raised, or could not run) a **divergence** — the subject's key
hash, the error, and an identifier from the ``identify`` hook (given the authoritative result) — the
reconciliation trail the server lists until someone resolves it.
"""

from __future__ import annotations

import asyncio
import json
import math
import operator
import threading
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar

from ._compare import ShadowPool
from .types import Path, StageDecision
from .wire import _BOUNDS_NS, LATENCY_BUCKETS_MS, ConsistencySample, DivergenceReport, MigrationRow, key_hash

if TYPE_CHECKING:
    from .client import Turnout

__all__ = ["Migration", "MigrationRecorder", "Operation", "Order"]

T = TypeVar("T")
Order = Literal["serial", "concurrent"]
Operation = Literal["read", "write"]
Identify = Callable[[Any], object]
Compare = Callable[[Any, Any], object]

_NBUCKETS: Final = len(LATENCY_BUCKETS_MS) + 1
CALLS, ERRORS, LATE, SKIPPED, CHECKS, INCONSISTENT, CHECK_ERRORS, DIVERGENCES = range(8)
_COUNTERS: Final = ("calls", "errors", "late", "skipped", "checks", "inconsistent", "check_errors", "divergences")
MAX_ROWS: Final = 2_000
MAX_DIVERGENCES: Final = 1_000
MAX_IDENTIFIER: Final = 200
MAX_ERROR: Final = 300

#: (flag, ruleset version, stage, origin, operation)
MigrationKey = tuple[str, "int | None", str, str, str]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _describe(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:
        text = type(exc).__name__
    return text[:MAX_ERROR]


class MigrationRecorder:
    """What migration calls did since the last drain: bounded, behind one lock."""

    def __init__(self, *, max_samples: int = 20, max_sample_bytes: int = 2048) -> None:
        self.max_samples = max_samples
        self.max_sample_bytes = max_sample_bytes
        self.reset()

    def reset(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[MigrationKey, tuple[list[int], list[int]]] = {}
        self._samples: list[ConsistencySample] = []
        self._divergences: list[DivergenceReport] = []
        self._dropped: dict[str, int] = {}

    def _row(self, key: MigrationKey) -> tuple[list[int], list[int]] | None:
        row = self._rows.get(key)
        if row is None:
            if len(self._rows) >= MAX_ROWS:
                self._dropped["migration_rows"] = self._dropped.get("migration_rows", 0) + 1
                return None
            row = self._rows[key] = ([0] * len(_COUNTERS), [0] * _NBUCKETS)
        return row

    def ran(self, key: MigrationKey, elapsed_ns: int, *, error: bool) -> None:
        b = bisect_left(_BOUNDS_NS, elapsed_ns)
        with self._lock:
            row = self._row(key)
            if row is not None:
                row[0][CALLS] += 1
                row[1][b] += 1
                if error:
                    row[0][ERRORS] += 1

    def count(self, key: MigrationKey, index: int) -> None:
        with self._lock:
            row = self._row(key)
            if row is not None:
                row[0][index] += 1

    def sample(self, d: StageDecision, key: str, legacy: Any, parallel: Any) -> None:
        if len(self._samples) >= self.max_samples:
            with self._lock:
                self._dropped["consistency_samples"] = self._dropped.get("consistency_samples", 0) + 1
            return
        truncated = False
        sides = []
        for value in (legacy, parallel):
            text = json.dumps(value, default=repr, ensure_ascii=False, sort_keys=True)
            if len(text) > self.max_sample_bytes:
                truncated = True
                sides.append(text[: self.max_sample_bytes])
            else:
                sides.append(json.loads(text))
        sample: ConsistencySample = {
            "flag": d.flag, "version": d.version, "stage": d.stage.value, "key_hash": key_hash(key),
            "authoritative": d.authoritative.value, "legacy": sides[0], "parallel": sides[1],
            "truncated": truncated, "at": _iso(time.time()),
        }
        with self._lock:
            if len(self._samples) < self.max_samples:
                self._samples.append(sample)
            else:
                self._dropped["consistency_samples"] = self._dropped.get("consistency_samples", 0) + 1

    def divergence(self, d: StageDecision, key: str, origin: Path, identifier: str | None, error: str) -> None:
        report: DivergenceReport = {
            "flag": d.flag, "version": d.version, "stage": d.stage.value, "key_hash": key_hash(key),
            "origin": origin.value, "operation": "write", "identifier": identifier, "error": error,
            "at": _iso(time.time()),
        }
        with self._lock:
            row = self._row((d.flag, d.version, d.stage.value, origin.value, "write"))
            if row is not None:
                row[0][DIVERGENCES] += 1
            if len(self._divergences) < MAX_DIVERGENCES:
                self._divergences.append(report)
            else:
                self._dropped["divergences"] = self._dropped.get("divergences", 0) + 1

    def pending_divergences(self) -> list[DivergenceReport]:
        with self._lock:
            return list(self._divergences)

    def drain(self) -> tuple[list[MigrationRow], list[ConsistencySample], list[DivergenceReport], dict[str, int]]:
        with self._lock:
            rows, self._rows = self._rows, {}
            samples, self._samples = self._samples, []
            divergences, self._divergences = self._divergences, []
            dropped, self._dropped = self._dropped, {}
        out: list[MigrationRow] = []
        for (flag, version, stage, origin, operation), (c, latency) in sorted(
                rows.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None else kv[0][1], *kv[0][2:])):
            out.append({
                "flag": flag, "version": version, "stage": stage, "origin": origin, "operation": operation,
                "calls": c[CALLS], "errors": c[ERRORS], "late": c[LATE], "skipped": c[SKIPPED],
                "latency_ms": list(latency), "checks": c[CHECKS], "inconsistent": c[INCONSISTENT],
                "check_errors": c[CHECK_ERRORS], "divergences": c[DIVERGENCES],
            })
        return out, samples, divergences, dropped


class _Other:
    """The non-authoritative run of one call: its outcome, and when the authoritative one is known."""

    __slots__ = ("auth_error", "auth_ready", "auth_value", "done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.auth_ready = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.auth_value: Any = None
        self.auth_error: BaseException | None = None


class Migration(Generic[T]):
    """One data-migration flag's reads and writes (``Turnout.migration``). Share it between threads.

    ``order``: ``"serial"`` runs the other origin of a read after the authoritative one,
    ``"concurrent"`` both at once (writes are always serial: the other origin is written only once
    the authoritative write succeeded). ``budget``: seconds a call waits for the other origin after
    the authoritative one returned. ``compare(legacy, parallel)``: the consistency check of reads
    (equality by default). ``identify(authoritative_result)``: the identifier of a divergence (a row
    id; ``str()`` of what it returns, at most 200 characters; None for none). ``redact(side, value)``:
    what of a result a consistency sample may keep (default: the client's ``redact``).
    """

    def __init__(
        self,
        client: Turnout,
        flag: str,
        *,
        order: Order = "serial",
        budget: float = 0.25,
        compare: Compare = operator.eq,
        identify: Identify | None = None,
        redact: Callable[[str, Any], Any] | None = None,
    ) -> None:
        if not isinstance(flag, str) or not flag:
            raise ValueError("flag must be a non-empty string")
        if order not in ("serial", "concurrent"):
            raise ValueError(f"order must be 'serial' or 'concurrent', got {order!r}")
        if (not isinstance(budget, int | float) or isinstance(budget, bool) or not math.isfinite(budget)
                or budget < 0):
            raise ValueError(f"budget must be a number of seconds >= 0, got {budget!r}")
        for name, fn in (("compare", compare), ("identify", identify), ("redact", redact)):
            if fn is not None and not callable(fn):
                raise ValueError(f"{name} must be a function or None")
        self.flag = str.__str__(flag)
        self.order: Order = order
        self.budget = float(budget)
        self._compare = compare
        self._identify = identify
        self._redact = redact if redact is not None else client.options.redact
        self._client = client

    # what a forked child recreates is looked up on each call, never kept
    @property
    def _recorder(self) -> MigrationRecorder:
        return self._client._recorder.migration

    @property
    def _pool(self) -> ShadowPool:
        return self._client._core.migration_workers()

    # -- deciding ------------------------------------------------------------------------------

    def stage(self, key: str | None, attributes: Mapping[str, Any] | None = None) -> StageDecision:
        """Where ``key`` stands in this migration now. Never raises."""
        return self._client.decide_stage(self.flag, key, attributes)

    # -- sync ----------------------------------------------------------------------------------

    def read(self, key: str | None, attributes: Mapping[str, Any] | None = None, *, legacy: Callable[[], T],
             parallel: Callable[[], T], compare: Compare | None = None) -> T:
        """Read through the stage's origins; the authoritative origin's result (or exception)."""
        d = self.stage(key, attributes)
        origins = d.stage.reads
        fns = {Path.LEGACY: legacy, Path.PARALLEL: parallel}
        auth = origins[0]
        if len(origins) == 1:
            return self._timed(d, auth, "read", fns[auth])
        other = _Other()
        check = compare if compare is not None else self._compare
        job = self._other_job(d, key, origins[1], "read", fns[origins[1]], other, check=check)
        submitted = self.order == "concurrent" and self._submit(d, origins[1], "read", job)
        try:
            value = self._timed(d, auth, "read", fns[auth])
            other.auth_value = value
            return value
        except BaseException as exc:
            other.auth_error = exc
            raise
        finally:
            other.auth_ready.set()
            if self.order == "serial" and other.auth_error is None:
                submitted = self._submit(d, origins[1], "read", job)
            if submitted and other.auth_error is None:
                self._wait(d, origins[1], "read", other)

    def write(self, key: str | None, attributes: Mapping[str, Any] | None = None, *, legacy: Callable[[], T],
              parallel: Callable[[], T], identify: Identify | None = None) -> T:
        """Write through the stage's origins, the authoritative one first; its result (or exception).
        The other origin is written only when the authoritative write succeeded; when it fails (or
        cannot run) a divergence is recorded."""
        d = self.stage(key, attributes)
        origins = d.stage.writes
        fns = {Path.LEGACY: legacy, Path.PARALLEL: parallel}
        value = self._timed(d, origins[0], "write", fns[origins[0]])
        if len(origins) == 1:
            return value
        other = _Other()
        other.auth_value = value
        other.auth_ready.set()
        identifier = self._identifier(identify, value)
        job = self._other_job(d, key, origins[1], "write", fns[origins[1]], other, identifier=identifier)
        if not self._submit(d, origins[1], "write", job):
            self._diverged(d, key, origins[1], identifier, "not run: the migration pool is full")
        else:
            self._wait(d, origins[1], "write", other)
        return value

    # -- async ---------------------------------------------------------------------------------

    async def aread(self, key: str | None, attributes: Mapping[str, Any] | None = None, *,
                    legacy: Callable[[], Awaitable[T]], parallel: Callable[[], Awaitable[T]],
                    compare: Compare | None = None) -> T:
        """``read`` for coroutines: the other origin runs as a task on the caller's loop."""
        d = self.stage(key, attributes)
        origins = d.stage.reads
        fns = {Path.LEGACY: legacy, Path.PARALLEL: parallel}
        auth = origins[0]
        if len(origins) == 1:
            return await self._atimed(d, auth, "read", fns[auth])
        check = compare if compare is not None else self._compare
        auth_outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        task = None
        if self.order == "concurrent":
            task = self._task(d, origins[1], "read", self._aother(d, key, origins[1], "read", fns[origins[1]],
                                                                   auth_outcome, check=check))
        try:
            value = await self._atimed(d, auth, "read", fns[auth])
        except BaseException:
            auth_outcome.cancel()
            raise
        auth_outcome.set_result(value)
        if task is None:
            task = self._task(d, origins[1], "read", self._aother(d, key, origins[1], "read", fns[origins[1]],
                                                                   auth_outcome, check=check))
        if task is not None:
            await self._await(d, origins[1], "read", task)
        return value

    async def awrite(self, key: str | None, attributes: Mapping[str, Any] | None = None, *,
                     legacy: Callable[[], Awaitable[T]], parallel: Callable[[], Awaitable[T]],
                     identify: Identify | None = None) -> T:
        """``write`` for coroutines."""
        d = self.stage(key, attributes)
        origins = d.stage.writes
        fns = {Path.LEGACY: legacy, Path.PARALLEL: parallel}
        value = await self._atimed(d, origins[0], "write", fns[origins[0]])
        if len(origins) == 1:
            return value
        identifier = self._identifier(identify, value)
        auth_outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        auth_outcome.set_result(value)
        task = self._task(d, origins[1], "write", self._aother(d, key, origins[1], "write", fns[origins[1]],
                                                                auth_outcome, identifier=identifier))
        if task is None:
            self._diverged(d, key, origins[1], identifier, "not run: too many migration tasks in flight")
        else:
            await self._await(d, origins[1], "write", task)
        return value

    # -- internals -----------------------------------------------------------------------------

    def _row(self, d: StageDecision, origin: Path, operation: str) -> MigrationKey:
        return (d.flag, d.version, d.stage.value, origin.value, operation)

    def _timed(self, d: StageDecision, origin: Path, operation: str, fn: Callable[[], T]) -> T:
        started = time.perf_counter_ns()
        try:
            value = fn()
        except BaseException:
            self._ran(d, origin, operation, started, error=True)
            raise
        self._ran(d, origin, operation, started, error=False)
        return value

    async def _atimed(self, d: StageDecision, origin: Path, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter_ns()
        try:
            value = await fn()
        except BaseException:
            self._ran(d, origin, operation, started, error=True)
            raise
        self._ran(d, origin, operation, started, error=False)
        return value

    def _ran(self, d: StageDecision, origin: Path, operation: str, started: int, *, error: bool) -> None:
        try:
            self._recorder.ran(self._row(d, origin, operation), time.perf_counter_ns() - started, error=error)
        except Exception:  # pragma: no cover - bookkeeping never escapes
            pass

    def _identifier(self, identify: Identify | None, value: Any) -> str | None:
        hook = identify if identify is not None else self._identify
        if hook is None:
            return None
        try:
            found = hook(value)
            return None if found is None else str(found)[:MAX_IDENTIFIER]
        except Exception as exc:
            self._client._problems.report(f"migration:identify:{self.flag}",
                                          f"migration {self.flag!r}: identify raised {type(exc).__name__}",
                                          "call", exc)
            return None

    def _diverged(self, d: StageDecision, key: str | None, origin: Path, identifier: str | None,
                  error: str) -> None:
        try:
            self._recorder.divergence(d, str(key), origin, identifier, error)
        except Exception:  # pragma: no cover
            pass

    def _check(self, d: StageDecision, key: str | None, legacy: Any, parallel: Any, check: Compare) -> None:
        row = self._row(d, d.authoritative, "read")
        try:
            same = bool(check(legacy, parallel))
        except Exception:
            self._recorder.count(row, CHECK_ERRORS)
            return
        self._recorder.count(row, CHECKS)
        if same:
            return
        self._recorder.count(row, INCONSISTENT)
        if len(self._recorder._samples) >= self._recorder.max_samples:
            self._recorder.sample(d, str(key), None, None)  # only counted as dropped
            return
        try:
            redact = self._redact
            left = redact("legacy", legacy) if redact is not None else legacy
            right = redact("parallel", parallel) if redact is not None else parallel
            self._recorder.sample(d, str(key), left, right)
        except Exception as exc:
            self._client._problems.report(f"migration:redact:{self.flag}",
                                          f"migration {self.flag!r}: redact raised {type(exc).__name__}; "
                                          "sample dropped", "call", exc)

    def _settle(self, d: StageDecision, key: str | None, origin: Path, operation: str, other: _Other,
                check: Compare | None, identifier: str | None) -> None:
        """The other origin finished: compare (reads) or record a divergence (failed writes)."""
        if operation == "write":
            if other.error is not None:
                self._diverged(d, key, origin, identifier, _describe(other.error))
            return
        if other.error is not None or other.auth_error is not None or check is None:
            return
        if origin is Path.PARALLEL:
            self._check(d, key, other.auth_value, other.value, check)
        else:
            self._check(d, key, other.value, other.auth_value, check)

    def _other_job(self, d: StageDecision, key: str | None, origin: Path, operation: str, fn: Callable[[], Any],
                   other: _Other, *, check: Compare | None = None, identifier: str | None = None
                   ) -> Callable[[], None]:
        def job() -> None:
            try:
                try:
                    other.value = self._timed(d, origin, operation, fn)
                except BaseException as exc:
                    other.error = exc
                other.auth_ready.wait()
                self._settle(d, key, origin, operation, other, check, identifier)
            except BaseException:  # pragma: no cover - a job never raises into the pool
                pass
            finally:
                other.done.set()  # after the check or the divergence is recorded

        return job

    def _submit(self, d: StageDecision, origin: Path, operation: str, job: Callable[[], None]) -> bool:
        if self._client._core.inline:  # turnout.testing: on the caller's thread, recorded when the call returns
            job()
            return True
        if self._pool.submit(job):
            return True
        self._recorder.count(self._row(d, origin, operation), SKIPPED)
        return False

    def _wait(self, d: StageDecision, origin: Path, operation: str, other: _Other) -> None:
        if not other.done.wait(self.budget):
            self._recorder.count(self._row(d, origin, operation), LATE)

    async def _aother(self, d: StageDecision, key: str | None, origin: Path, operation: str,
                      fn: Callable[[], Awaitable[Any]], auth_outcome: asyncio.Future[Any], *,
                      check: Compare | None = None, identifier: str | None = None) -> None:
        other = _Other()
        try:
            try:
                other.value = await self._atimed(d, origin, operation, fn)
            except Exception as exc:
                other.error = exc
            try:
                other.auth_value = await auth_outcome
            except BaseException as exc:  # the authoritative run failed: nothing to compare
                other.auth_error = exc
            self._settle(d, key, origin, operation, other, check, identifier)
        except asyncio.CancelledError:
            if operation == "write":
                self._diverged(d, key, origin, identifier, "cancelled before it finished")
            raise

    def _task(self, d: StageDecision, origin: Path, operation: str,
              coro: Any) -> asyncio.Task[None] | None:
        client = self._client
        if not client._core.task_slot():
            coro.close()
            self._recorder.count(self._row(d, origin, operation), SKIPPED)
            return None
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        client._core.track_task(task)
        return task

    async def _await(self, d: StageDecision, origin: Path, operation: str, task: asyncio.Task[None]) -> None:
        done, _ = await asyncio.wait({task}, timeout=self.budget)
        if not done:
            self._recorder.count(self._row(d, origin, operation), LATE)
