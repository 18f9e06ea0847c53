"""The one core that runs a call: run the chosen path, maybe fall back, maybe compare, record.

``run()`` and ``arun()`` — and the shadow comparisons each of them starts, on a worker thread
or as an ``asyncio`` task — share one implementation. A call is written once, as a *plan*: a
generator that yields the host's callables it wants run (the served path, the legacy
fallback, the other path of a comparison) and receives their results, or their exceptions
thrown back in. The plan holds every decision and all bookkeeping; two small drivers execute
it, ``drive`` by calling each step, ``adrive`` by calling and awaiting it. Nothing in a plan
or a driver raises except the host's own exceptions, re-raised as they were.

Threads: ``turnout-shadow-N`` (lazily, bounded by ``shadow_workers``/``shadow_queue``) run
thread shadows; async shadows are tasks on the caller's loop, at most ``async_shadow_limit``
in flight per client.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import math
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from ._breaker import BreakerState, FlagBreaker
from ._compare import ShadowPool
from ._metrics import (
    COMPARE_ERRORS,
    COMPARE_TIMEOUTS,
    COMPARISONS,
    FALLBACKS,
    MISMATCHES,
    SKIPPED,
    Recorder,
    RowKey,
)
from ._options import Options, Redactor
from ._problems import Problems, label, log
from .types import Decision, ErrorCode, Path, Reason
from .wire import key_hash

__all__ = ["CallCore", "Shadow", "adrive", "drive"]

T = TypeVar("T")

_PARALLEL: Final = Path.PARALLEL
_LEGACY: Final = Path.LEGACY

#: one thing a plan wants run: a host callable (sync, or returning an awaitable for ``adrive``)
Step = Callable[[], Any]
Plan = Generator[Step, Any, T]


class _Late(Exception):
    """A shadow did not finish within its ``compare_timeout`` (thrown into its plan)."""


def _nothing() -> None:
    return None


#: what a step did: its value, or the exception it raised
_Outcome = tuple[Any, Exception | None]


def _resume(plan: Plan[T], outcome: _Outcome) -> tuple[bool, Any]:
    """Hand a step's value (or throw its exception) back to the plan: ``(False, next step)``, or
    ``(True, the plan's result)`` when it has finished. Shared by ``drive`` and ``adrive``."""
    value, error = outcome
    try:
        return False, (_throw(plan, error) if error is not None else plan.send(value))
    except StopIteration as stop:
        return True, stop.value


def drive(plan: Plan[T]) -> T:
    """Execute ``plan`` on this thread: call each step, send back its result or throw back its
    exception. The plan's own exception (the host's, re-raised) propagates unchanged."""
    step = next(plan)
    while True:
        try:
            outcome: _Outcome = (step(), None)
        except Exception as exc:
            outcome = (None, exc)
        done, step = _resume(plan, outcome)
        if done:
            return step  # type: ignore[no-any-return]  # the plan's result, not a step


async def adrive(plan: Plan[T], timeout: float | None = None) -> T:
    """``drive`` for coroutines: each step's awaitable is awaited (a plain value is used as
    it is), bounded by ``timeout`` seconds when given."""
    step = next(plan)
    while True:
        try:
            value = step()
            if inspect.isawaitable(value):
                if timeout is None:
                    value = await value
                else:
                    try:
                        value = await asyncio.wait_for(_awaited(value), timeout)
                    except TimeoutError as exc:
                        raise _Late() from exc
            outcome: _Outcome = (value, None)
        except Exception as exc:
            outcome = (None, exc)
        done, step = _resume(plan, outcome)
        if done:
            return step  # type: ignore[no-any-return]  # the plan's result, not a step


def _throw(plan: Plan[Any], exc: Exception) -> Step:
    try:
        return plan.throw(exc)
    except RuntimeError as err:
        # a host's StopIteration re-raised inside the generator becomes RuntimeError (PEP 479):
        # give the host its own exception back
        if isinstance(exc, StopIteration) and err.__cause__ is exc:
            raise exc from None
        raise


async def _awaited(value: Awaitable[T]) -> T:
    return await value


@dataclass(slots=True)
class Shadow:
    """A comparison to run: the other path of ``decision``, compared with ``result``."""

    decision: Decision
    key: object
    result: Any
    other: Step
    compare: Callable[[Any, Any], object]
    timeout: float
    redact: Redactor | None

    @property
    def row(self) -> RowKey:
        d = self.decision
        return (d.flag, d.path is _PARALLEL, d.version)


#: how a driver runs a shadow: a step that starts it (in the background) or runs it inline
ShadowStarter = Callable[[Shadow], Step]


class CallCore:
    """Runs calls for one client: the plans, their bookkeeping, the local circuit breaker, and
    the bounded places where shadows run."""

    def __init__(self, recorder: Recorder, options: Options, problems: Problems) -> None:
        self.recorder = recorder
        self.options = options
        self.problems = problems
        #: flags whose breaker is open or half-open (read by decide() on every call)
        self.tripped: dict[str, FlagBreaker] = {}
        self.breakers: dict[str, FlagBreaker] = {}
        #: turnout.testing: shadows run on the caller's thread / are awaited by the caller
        self.inline = False
        self.closed = False
        self.new_process_state()

    def new_process_state(self) -> None:
        self.start_lock = threading.Lock()
        self.async_lock = threading.Lock()
        self.pool: ShadowPool | None = None
        self.migration_pool: ShadowPool | None = None
        self.async_inflight = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def after_fork_in_child(self) -> None:
        self.new_process_state()
        for br in self.breakers.values():
            br.reset_lock()

    def close(self) -> None:
        self.closed = True
        for pool in (self.pool, self.migration_pool):
            if pool is not None:
                pool.close(timeout=min(self.options.compare_timeout, 1.0))

    # -- where a data migration's non-authoritative runs go (turnout.migration) -----------

    def migration_workers(self) -> ShadowPool:
        """The bounded pool of migration runs (its own: a slow origin never starves shadows)."""
        with self.start_lock:
            if self.migration_pool is None:
                self.migration_pool = ShadowPool(workers=self.options.shadow_workers,
                                                 queue_size=self.options.shadow_queue, name="turnout-migration")
            return self.migration_pool

    def task_slot(self) -> bool:
        """Take one of the ``async_shadow_limit`` task slots (False when none is free)."""
        with self.async_lock:
            if self.closed or self.async_inflight >= self.options.async_shadow_limit:
                return False
            self.async_inflight += 1
            return True

    def track_task(self, task: asyncio.Task[None]) -> None:
        """Keep a task started in a slot alive until it ends, then free the slot."""
        def finished(t: asyncio.Task[None]) -> None:
            self.tasks.discard(t)
            with self.async_lock:
                self.async_inflight -= 1

        self.tasks.add(task)
        task.add_done_callback(finished)

    # -- the plan of a call -------------------------------------------------------------

    def call(
        self,
        d: Decision,
        key: object,
        legacy: Step,
        parallel: Step,
        *,
        compare: Callable[[Any, Any], object],
        compare_timeout: object,
        fallback: object,
        redact: Redactor | None,
        shadow: ShadowStarter,
    ) -> Plan[Any]:
        """Run the path ``d`` chose; when parallel raises and ``fallback``, run legacy; when
        ``d.compare``, start a comparison with the other path; record all of it."""
        par = d.path is _PARALLEL
        row: RowKey = (d.flag, par, d.version)
        t0 = time.perf_counter_ns()
        try:
            result = yield parallel if par else legacy
        except Exception:
            self.executed(row, time.perf_counter_ns() - t0, error=True)
            if not (par and self._flag("fallback", fallback, True)):
                raise
            self.count(row, FALLBACKS)
            legacy_row: RowKey = (d.flag, False, d.version)
            t1 = time.perf_counter_ns()
            try:
                result = yield legacy
            except Exception:
                self.executed(legacy_row, time.perf_counter_ns() - t1, error=True)
                raise
            self.executed(legacy_row, time.perf_counter_ns() - t1, error=False)
            return result
        self.executed(row, time.perf_counter_ns() - t0, error=False)
        if d.compare:
            try:
                job = Shadow(d, key, result, legacy if par else parallel, compare,
                             self._timeout(compare_timeout), redact)
                yield shadow(job)
            except Exception as exc:  # pragma: no cover - starting a shadow never raises
                self.problems.report("internal:shadow", "starting a comparison failed", "internal", exc)
        return result

    def shadow_plan(self, job: Shadow) -> Plan[None]:
        """The plan of a comparison: run the other path within the timeout, compare, record."""
        row = job.row
        t0 = time.perf_counter()
        try:
            other_result = yield job.other
        except _Late:
            self.count(row, COMPARE_TIMEOUTS)
            return
        except Exception:
            self.count(row, COMPARE_ERRORS)
            return
        if time.perf_counter() - t0 > job.timeout:
            self.count(row, COMPARE_TIMEOUTS)
            return
        self.compared(job, other_result)

    # -- where shadows run ----------------------------------------------------------------

    def thread_shadow(self, job: Shadow) -> Step:
        """Start ``job`` on the bounded pool (or run it now, inline); counted as skipped when
        the pool is full or closed."""
        try:
            ctx = contextvars.copy_context()

            def run_job() -> None:
                try:
                    ctx.run(drive, self.shadow_plan(job))
                except Exception as exc:  # pragma: no cover - plans do not raise
                    self.problems.report("internal:shadow", "a comparison failed", "internal", exc)

            if self.inline:
                run_job()
                return _nothing
            pool = self.pool
            if pool is None and not self.closed:
                with self.start_lock:
                    if self.pool is None:
                        self.pool = ShadowPool(workers=self.options.shadow_workers,
                                               queue_size=self.options.shadow_queue)
                    pool = self.pool
            if pool is None or not pool.submit(run_job):
                self.count(job.row, SKIPPED)
        except Exception as exc:  # pragma: no cover
            self.problems.report("internal:shadow", "scheduling a comparison failed", "internal", exc)
        return _nothing

    def task_shadow(self, job: Shadow) -> Step:
        """Start ``job`` as an ``asyncio`` task on the running loop (or hand the caller a
        coroutine to await, inline); counted as skipped beyond ``async_shadow_limit``."""
        try:
            with self.async_lock:
                full = self.closed or self.async_inflight >= self.options.async_shadow_limit
                if not full or self.inline:
                    self.async_inflight += 1
            if self.inline:
                coro = self._shadow_task(job)
                return lambda: coro
            if full:
                self.count(job.row, SKIPPED)
                return _nothing
            coro = self._shadow_task(job)
            try:
                task = asyncio.get_running_loop().create_task(coro)
            except BaseException:
                coro.close()
                with self.async_lock:
                    self.async_inflight -= 1
                raise
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        except Exception as exc:  # pragma: no cover
            self.problems.report("internal:shadow", "scheduling a comparison failed", "internal", exc)
        return _nothing

    async def _shadow_task(self, job: Shadow) -> None:
        try:
            await adrive(self.shadow_plan(job), job.timeout)
        except Exception as exc:  # pragma: no cover - plans do not raise
            self.problems.report("internal:shadow", "a comparison failed", "internal", exc)
        finally:
            with self.async_lock:
                self.async_inflight -= 1

    # -- recording (never raises) ---------------------------------------------------------

    def compared(self, job: Shadow, other_result: Any) -> None:
        d = job.decision
        row = job.row
        served = job.result
        legacy_r, parallel_r = (other_result, served) if d.path is _PARALLEL else (served, other_result)
        try:
            same = bool(job.compare(legacy_r, parallel_r))
        except Exception:
            self.count(row, COMPARE_ERRORS)
            return
        self.count(row, COMPARISONS)
        if same:
            return
        self.count(row, MISMATCHES)
        try:
            if not self.recorder.wants_sample():
                self.recorder.drop("samples")
                return
        except Exception:  # pragma: no cover
            return
        hook = job.redact if job.redact is not None else self.options.redact
        try:
            if hook is not None:
                legacy_r = hook(d.flag, legacy_r)
                parallel_r = hook(d.flag, parallel_r)
        except Exception as exc:
            self.recorder.drop("samples")
            self.problems.report(
                f"redact:{label(d.flag)}",
                f"the redact hook raised {type(exc).__name__} for flag {label(d.flag)!r}: mismatch sample dropped",
                "redact",
                exc,
            )
            return
        try:
            self.recorder.sample(
                flag=d.flag,
                version=d.version,
                key_hash=key_hash(job.key),
                served=str(d.path),
                legacy=legacy_r,
                parallel=parallel_r,
            )
        except Exception as exc:
            self.recorder.drop("samples")
            self.problems.report("internal:sample", "a mismatch sample could not be encoded", "internal", exc)

    def executed(self, row: RowKey, elapsed_ns: int, *, error: bool) -> None:
        try:
            self.recorder.latency(row, elapsed_ns, error=error)
            config = self.options.breaker
            if row[1] and config is not None:
                flag = row[0]
                br = self.breakers.get(flag)
                if br is None:
                    br = self.breakers.setdefault(flag, FlagBreaker(config))
                changed = br.record(not error, elapsed_ns / 1e6)
                if changed is not None:
                    self.breaker_changed(flag, br, changed)
        except Exception as exc:  # pragma: no cover
            self.problems.report("internal:metrics", "recording a call failed", "internal", exc)

    def count(self, row: RowKey, index: int) -> None:
        try:
            self.recorder.count(row, index)
        except Exception as exc:  # pragma: no cover
            self.problems.report("internal:metrics", "recording a call failed", "internal", exc)

    # -- the local circuit breaker ----------------------------------------------------------

    def breaker_changed(self, flag: str, br: FlagBreaker, state: BreakerState) -> None:
        self.recorder.breaker_event(flag, str(state), br.reason)
        if state is BreakerState.OPEN:
            self.tripped[flag] = br
            self.problems.report(
                f"breaker:{flag}",
                f"circuit breaker opened for flag {flag!r} ({br.reason}): deciding legacy in this process",
                "breaker",
                event="breaker.opened",
            )
        elif state is BreakerState.HALF_OPEN:
            log.info("turnout.breaker.half_opened: flag %r, probing the parallel path", flag)
        else:
            self.tripped.pop(flag, None)
            self.problems.resolved(f"breaker:{flag}")

    def tripped_decision(self, d: Decision) -> Decision:
        """``d`` as the breaker of its flag lets it through (legacy, CIRCUIT_OPEN when not)."""
        br = self.tripped.get(d.flag)
        if br is None:
            return d
        if d.path is _PARALLEL:
            try:
                allowed, changed = br.allow()
                if changed is not None:
                    self.breaker_changed(d.flag, br, changed)
            except Exception:  # pragma: no cover
                allowed = False
            if allowed:
                return d
        return Decision(d.flag, _LEGACY, Reason.ERROR, error_code=ErrorCode.CIRCUIT_OPEN, rule="error",
                        bucket=d.bucket, stage=d.stage, version=d.version)

    # -- arguments of a call, checked without raising ---------------------------------------

    def _timeout(self, value: object) -> float:
        default = self.options.compare_timeout
        if value is None:
            return default
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value > 0
        ):
            return float(value)
        self.problems.report("call:compare_timeout",
                             f"compare_timeout must be a number > 0, got a {type(value).__name__}; "
                             f"using the client's {default:g}s", "call")
        return default

    def _flag(self, name: str, value: object, default: bool) -> bool:
        if value is True or value is False:
            return value
        try:
            return bool(value)
        except Exception as exc:
            self.problems.report(f"call:{name}", f"{name} must be True or False, got a {type(value).__name__}; "
                                 f"using {default}", "call", exc)
            return default
