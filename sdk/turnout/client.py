"""The Turnout client: local decisions, ``run()`` with shadow comparison, background sync.

Threads and what they own:

* the caller's threads run ``decide()``/``run()``: they read ``self._ruleset`` (one attribute,
  swapped atomically by the sync thread), increment a decision counter without a lock, and only
  take short locks for ``run()`` bookkeeping;
* ``turnout-sync`` fetches the ruleset (ETag), follows the stream, falls back to polling and
  backs off on failure;
* ``turnout-metrics`` ships batched metrics;
* ``turnout-shadow-N`` (lazily, bounded) run shadow comparisons.

Nothing Turnout does raises into the host: problems become log warnings (one per distinct
problem until it is resolved), ``on_error`` callbacks, and safe decisions (the last good
ruleset, or ``legacy`` with reason ``ERROR``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import functools
import inspect
import json
import logging
import operator
import os
import random
import ssl
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path as FsPath
from typing import Any, Final, ParamSpec, Protocol, TypeVar, cast, overload

from . import engine as _engine
from ._breaker import Breaker, BreakerState, FlagBreaker
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
    Sender,
)
from ._stream import Stream, StreamUnsupported
from ._transport import HTTPStatusError, Transport, TransportError
from .types import Decision, ErrorCode, Path, Reason
from .wire import METRICS_PATH, RULESET_PATH, SDK_NAME, key_hash

__all__ = ["Turnout", "TurnoutError"]

__version__: Final = "0.1.0"

log = logging.getLogger("turnout")

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")

_PARALLEL: Final = Path.PARALLEL
_LEGACY: Final = Path.LEGACY
_MAX_PROBLEMS: Final = 1000

#: ``redact(flag, result) -> JSON-safe value`` applied to both results of a mismatch sample.
Redactor = Callable[[str, Any], Any]


class TurnoutError(Exception):
    """What ``on_error`` receives. Never raised into the host by Turnout itself.

    ``kind`` is one of ``"fetch"``, ``"ruleset"``, ``"stream"``, ``"metrics"``,
    ``"decision"``, ``"breaker"``, ``"bootstrap"``, ``"redact"``, ``"switch"``,
    ``"internal"``; ``problem`` is the stable key used to log a problem once.
    """

    def __init__(self, kind: str, problem: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.problem = problem


class _Decider(Protocol):
    @property
    def version(self) -> int | None: ...

    def decide(
        self, flag: str, key: str | None, attributes: Mapping[str, Any] | None = None
    ) -> Decision: ...


class _NotReady:
    """What decides before any ruleset is loaded: the engine's own answer for "no ruleset"."""

    version = None

    def decide(
        self, flag: str, key: str | None, attributes: Mapping[str, Any] | None = None
    ) -> Decision:
        return _engine.evaluate(None, flag, key, attributes)


class _Forced:
    """A ruleset with some flags' decisions pinned (``turnout.testing.forced``)."""

    def __init__(self, inner: _Decider, forced: Mapping[str, Decision]) -> None:
        self._inner = inner
        self._forced = forced
        self.version = inner.version

    def decide(
        self, flag: str, key: str | None, attributes: Mapping[str, Any] | None = None
    ) -> Decision:
        d = self._forced.get(flag)
        if d is None:
            return self._inner.decide(flag, key, attributes)
        return d


_NOT_READY: Final = _NotReady()
_DEFAULT_BREAKER: Final = Breaker()
_clients: weakref.WeakSet[Turnout] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for client in list(_clients):
        try:
            client.close()
        except Exception:  # pragma: no cover
            pass


def _after_fork_in_child() -> None:
    for client in list(_clients):
        try:
            client._after_fork_in_child()
        except Exception:  # pragma: no cover
            pass


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _jitter(delay: float) -> float:
    return delay * random.uniform(0.5, 1.0)


class Turnout:
    """A Turnout SDK client. Create one per process and share it between threads.

    ``url`` is the Turnout server (``https://turnout.example.com``), ``sdk_key`` the
    environment's SDK key. With ``url=None`` the client is offline: it decides from
    ``bootstrap`` only and sends nothing. See the README for every option.
    """

    def __init__(
        self,
        url: str | None,
        sdk_key: str | None,
        *,
        stream: bool = True,
        poll_interval: float = 30.0,
        timeout: float = 5.0,
        stream_read_timeout: float = 45.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        bootstrap: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        on_error: Callable[[TurnoutError], object] | None = None,
        send_metrics: bool = True,
        flush_interval: float = 10.0,
        flush_retries: int = 3,
        max_pending_batches: int = 10,
        shadow_workers: int = 2,
        shadow_queue: int = 32,
        compare_timeout: float = 2.0,
        async_shadow_limit: int = 64,
        redact: Redactor | None = None,
        max_samples: int = 20,
        max_sample_bytes: int = 2048,
        breaker: Breaker | None = _DEFAULT_BREAKER,
        code_version: str | None = None,
        max_ruleset_bytes: int = 32 * 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        for name, value in (
            ("poll_interval", poll_interval),
            ("timeout", timeout),
            ("stream_read_timeout", stream_read_timeout),
            ("backoff_base", backoff_base),
            ("flush_interval", flush_interval),
            ("compare_timeout", compare_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if backoff_max < backoff_base:
            raise ValueError("backoff_max must be >= backoff_base")
        if shadow_workers < 1 or shadow_queue < 1 or async_shadow_limit < 1:
            raise ValueError("shadow_workers, shadow_queue and async_shadow_limit must be >= 1")

        self._offline = not url
        self._use_stream = stream
        self._poll_interval = poll_interval
        self._timeout = timeout
        self._stream_read_timeout = stream_read_timeout
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._on_error = on_error
        self._send_metrics = send_metrics and not self._offline
        self._flush_interval = flush_interval
        self._shadow_workers = shadow_workers
        self._shadow_queue = shadow_queue
        self._compare_timeout = compare_timeout
        self._async_shadow_limit = async_shadow_limit
        self._redact = redact
        self._breaker_config = breaker
        self._code_version = code_version
        self._inline_shadow = False  # turnout.testing runs shadows on the caller's thread

        self._transport: Transport | None = None
        if url:
            if not sdk_key:
                raise ValueError("sdk_key is required with a url (use url=None to run offline)")
            self._transport = Transport(
                url,
                sdk_key,
                timeout=timeout,
                user_agent=f"{SDK_NAME}/{__version__}",
                ssl_context=ssl_context,
                max_body=max_ruleset_bytes,
            )

        # decision state: the sync thread swaps ``_ruleset`` whole; readers never lock
        self._ruleset: _Decider = _NOT_READY
        self._real: _engine.Ruleset | None = None
        self._etag: str | None = None
        self._forced: dict[str, Decision] = {}
        self._tripped: dict[str, FlagBreaker] = {}
        self._breakers: dict[str, FlagBreaker] = {}
        self._recorder = Recorder(max_samples=max_samples, max_sample_bytes=max_sample_bytes)
        self._epoch = self._recorder.current
        self._sender = Sender(retries=flush_retries, max_pending=max_pending_batches)
        self._problems: dict[str, str] = {}
        self._closed = False
        self._dormant = False
        self._last_event_id: str | None = None
        self._new_process_state()

        if bootstrap is not None:
            self._load_bootstrap(bootstrap)
        _clients.add(self)
        if not self._offline:
            self._dormant = True
            self._wake()

    @classmethod
    def offline(
        cls, bootstrap: str | os.PathLike[str] | Mapping[str, Any] | None = None, **options: Any
    ) -> Turnout:
        """A client that never touches the network: it decides from ``bootstrap`` (a
        ruleset document or the path of a JSON file) and keeps its metrics in memory."""
        return cls(None, None, bootstrap=bootstrap, **options)

    # -- process-local state (recreated in a forked child) -----------------------------

    def _new_process_state(self) -> None:
        self._start_lock = threading.Lock()
        self._problems_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._async_lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        if self._real is not None:
            self._ready.set()
        self._sync_thread: threading.Thread | None = None
        self._metrics_thread: threading.Thread | None = None
        self._stream: Stream | None = None
        self._pool: ShadowPool | None = None
        self._async_inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _after_fork_in_child(self) -> None:
        # Only the forking thread survives in the child: every lock may be held by a thread
        # that no longer exists, every socket is shared with the parent. Start over, keep the
        # ruleset (that is the point of preloading), restart background work on first use.
        stream = self._stream
        if stream is not None:
            stream.abandon()
        if self._transport is not None:
            self._transport.after_fork_in_child()
        self._new_process_state()
        self._recorder.after_fork_in_child()
        self._epoch = self._recorder.epoch(self.version)
        self._sender = Sender(retries=self._sender.retries, max_pending=self._sender.max_pending)
        for br in self._breakers.values():
            br.reset_lock()
        self._problems = {}
        if not self._closed and not self._offline:
            self._dormant = True

    def _wake(self) -> None:
        """Start the background threads (at construction, and lazily after a fork)."""
        with self._start_lock:
            if not self._dormant or self._closed:
                return
            self._dormant = False
            self._sync_thread = threading.Thread(
                target=self._sync_loop, name="turnout-sync", daemon=True
            )
            self._sync_thread.start()
            if self._send_metrics:
                self._metrics_thread = threading.Thread(
                    target=self._metrics_loop, name="turnout-metrics", daemon=True
                )
                self._metrics_thread.start()

    # -- public state --------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once a ruleset (bootstrapped or fetched) is in use."""
        return self._real is not None

    @property
    def version(self) -> int | None:
        """The version of the ruleset in use, or None before the first one."""
        return self._real.version if self._real is not None else None

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Block until a ruleset is in use or ``timeout`` seconds pass; return ``ready``."""
        if self._dormant:
            self._wake()
        return self._ready.wait(timeout)

    # -- deciding ------------------------------------------------------------------------

    def decide(
        self, flag: str, key: str | None, attributes: Mapping[str, Any] | None = None
    ) -> Decision:
        """Which path ``key`` takes for ``flag``, decided locally. Never raises."""
        if self._dormant:
            self._wake()
        try:
            d = self._ruleset.decide(flag, key, attributes)
        except Exception as exc:  # the engine promises not to raise; do not trust it
            d = self._engine_failed(flag, exc)
        if self._tripped and flag in self._tripped:
            d = self._tripped_decision(d)
        epoch = self._epoch
        try:
            shard = epoch.local.counts  # this thread's own counts: no lock, no lost increment
        except AttributeError:
            shard = self._recorder.shard(epoch)
        counts = shard.get(flag)
        if counts is None:
            counts = shard[flag] = [0, 0]
        counts[d.path is _PARALLEL] += 1
        if d.error_code is not None:
            self._decision_problem(d)
        return d

    def _engine_failed(self, flag: str, exc: Exception) -> Decision:
        self._problem("internal:engine", f"the engine raised {type(exc).__name__}", "internal", exc)
        return Decision(flag, _LEGACY, Reason.ERROR, error_code=ErrorCode.GENERAL, rule="error")

    def _decision_problem(self, d: Decision) -> None:
        try:
            code = d.error_code
            self._recorder.error_code((d.flag, d.path is _PARALLEL, d.version), str(code))
            if code is ErrorCode.CIRCUIT_OPEN:
                return  # announced once when the breaker opened
            if code is ErrorCode.PROVIDER_NOT_READY:
                key, msg = "decision:not-ready", "deciding before any ruleset is loaded: legacy"
            elif code is ErrorCode.FLAG_NOT_FOUND:
                key = f"decision:flag-not-found:{d.flag}"
                msg = f"flag {d.flag!r} is not in ruleset version {d.version}: legacy"
            else:
                key = f"decision:{code}:{d.flag}"
                msg = f"flag {d.flag!r}: {code}: legacy"
            if key not in self._problems and len(self._problems) < _MAX_PROBLEMS:
                self._problem(key, msg, "decision", notify=True)
        except Exception:  # pragma: no cover - never let bookkeeping escape
            pass

    def _tripped_decision(self, d: Decision) -> Decision:
        br = self._tripped.get(d.flag)
        if br is None:
            return d
        if d.path is _PARALLEL:
            try:
                allowed, changed = br.allow()
                if changed is not None:
                    self._breaker_changed(d.flag, br, changed)
            except Exception:  # pragma: no cover
                allowed = False
            if allowed:
                return d
        return Decision(
            d.flag,
            _LEGACY,
            Reason.ERROR,
            error_code=ErrorCode.CIRCUIT_OPEN,
            rule="error",
            bucket=d.bucket,
            stage=d.stage,
            version=d.version,
        )

    # -- running -------------------------------------------------------------------------

    def run(
        self,
        flag: str,
        key: str | None,
        attributes: Mapping[str, Any] | None = None,
        *,
        legacy: Callable[[], T],
        parallel: Callable[[], T],
        compare: Callable[[T, T], object] = operator.eq,
        compare_timeout: float | None = None,
        fallback: bool = True,
        redact: Redactor | None = None,
    ) -> T:
        """Run the path the decision chooses and return its result.

        When the decision says ``compare``, the other path also runs, in the background
        (bounded pool, ``compare_timeout``), and ``compare(legacy_result, parallel_result)``
        is recorded; a false answer records a mismatch sample through ``redact``. When the
        parallel path raises and ``fallback`` is true, legacy runs and its result is returned;
        with ``fallback=False`` the exception propagates. Exceptions from legacy always
        propagate: they are the host's, not Turnout's.
        """
        d = self.decide(flag, key, attributes)
        par = d.path is _PARALLEL
        row: RowKey = (flag, par, d.version)
        t0 = time.perf_counter_ns()
        try:
            result = parallel() if par else legacy()
        except Exception:
            self._executed(row, time.perf_counter_ns() - t0, error=True)
            if not (par and fallback):
                raise
            self._count(row, FALLBACKS)
            legacy_row: RowKey = (flag, False, d.version)
            t1 = time.perf_counter_ns()
            try:
                result = legacy()
            except Exception:
                self._executed(legacy_row, time.perf_counter_ns() - t1, error=True)
                raise
            self._executed(legacy_row, time.perf_counter_ns() - t1, error=False)
            return result
        self._executed(row, time.perf_counter_ns() - t0, error=False)
        if d.compare:
            self._shadow(d, key, result, legacy if par else parallel, compare, compare_timeout, redact)
        return result

    async def arun(
        self,
        flag: str,
        key: str | None,
        attributes: Mapping[str, Any] | None = None,
        *,
        legacy: Callable[[], Awaitable[T]],
        parallel: Callable[[], Awaitable[T]],
        compare: Callable[[T, T], object] = operator.eq,
        compare_timeout: float | None = None,
        fallback: bool = True,
        redact: Redactor | None = None,
    ) -> T:
        """``run()`` for coroutines: ``legacy``/``parallel`` are called with no arguments
        and awaited. The shadow is an ``asyncio`` task bounded by ``compare_timeout`` (it is
        cancelled when late) and by ``async_shadow_limit`` tasks in flight."""
        d = self.decide(flag, key, attributes)
        par = d.path is _PARALLEL
        row: RowKey = (flag, par, d.version)
        t0 = time.perf_counter_ns()
        try:
            result = await (parallel() if par else legacy())
        except Exception:
            self._executed(row, time.perf_counter_ns() - t0, error=True)
            if not (par and fallback):
                raise
            self._count(row, FALLBACKS)
            legacy_row: RowKey = (flag, False, d.version)
            t1 = time.perf_counter_ns()
            try:
                result = await legacy()
            except Exception:
                self._executed(legacy_row, time.perf_counter_ns() - t1, error=True)
                raise
            self._executed(legacy_row, time.perf_counter_ns() - t1, error=False)
            return result
        self._executed(row, time.perf_counter_ns() - t0, error=False)
        if d.compare:
            other = legacy if par else parallel
            if self._inline_shadow:
                with self._async_lock:
                    self._async_inflight += 1
                limit = self._compare_timeout if compare_timeout is None else compare_timeout
                await self._ashadow_job(d, key, result, other, compare, limit, redact)
            else:
                self._ashadow(d, key, result, other, compare, compare_timeout, redact)
        return result

    @overload
    def switch(
        self,
        flag: str,
        *,
        key: str | Callable[..., str | None],
        legacy: Callable[P, R],
        attributes: Callable[..., Mapping[str, Any] | None] | None = None,
        compare: Callable[[Any, Any], object] = operator.eq,
        compare_timeout: float | None = None,
        fallback: bool = True,
        redact: Redactor | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    @overload
    def switch(
        self,
        flag: str,
        *,
        key: str | Callable[..., str | None],
        parallel: Callable[P, R],
        attributes: Callable[..., Mapping[str, Any] | None] | None = None,
        compare: Callable[[Any, Any], object] = operator.eq,
        compare_timeout: float | None = None,
        fallback: bool = True,
        redact: Redactor | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def switch(
        self,
        flag: str,
        *,
        key: str | Callable[..., str | None],
        legacy: Callable[P, R] | None = None,
        parallel: Callable[P, R] | None = None,
        attributes: Callable[..., Mapping[str, Any] | None] | None = None,
        compare: Callable[[Any, Any], object] = operator.eq,
        compare_timeout: float | None = None,
        fallback: bool = True,
        redact: Redactor | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator form of ``run()``/``arun()``.

        Decorate the new implementation and name the old one (or the other way round)::

            @client.switch("invoice-engine", key="tenant_id", legacy=old_total)
            def new_total(tenant_id: str, invoice: Invoice) -> Decimal: ...

        Both functions take the same arguments. ``key`` is the name of an argument, or a
        function of the arguments returning the subject's key; ``attributes``, if given, is a
        function of the arguments returning the context attributes. A coroutine function is
        routed through ``arun()``.
        """
        if (legacy is None) == (parallel is None):
            raise TypeError("switch() takes exactly one of legacy= or parallel=")
        other = cast("Callable[P, R]", legacy if legacy is not None else parallel)
        decorated_is_parallel = legacy is not None

        def decorator(fn: Callable[P, R]) -> Callable[P, R]:
            get_key = self._key_getter(flag, key, fn)

            def context(a: Any, k: Any) -> tuple[str | None, Mapping[str, Any] | None]:
                subject = get_key(a, k)
                attrs = None
                if attributes is not None:
                    try:
                        attrs = attributes(*a, **k)
                    except Exception as exc:
                        self._problem(
                            f"switch:attributes:{flag}",
                            f"switch({flag!r}): the attributes function raised "
                            f"{type(exc).__name__}; deciding without attributes",
                            "switch",
                            exc,
                        )
                return subject, attrs

            if inspect.iscoroutinefunction(fn):
                afn = cast("Callable[..., Awaitable[Any]]", fn)
                aother = cast("Callable[..., Awaitable[Any]]", other)

                @functools.wraps(fn)
                async def async_wrapper(*a: Any, **k: Any) -> Any:
                    subject, attrs = context(a, k)
                    new = functools.partial(afn, *a, **k)
                    old = functools.partial(aother, *a, **k)
                    return await self.arun(
                        flag,
                        subject,
                        attrs,
                        legacy=old if decorated_is_parallel else new,
                        parallel=new if decorated_is_parallel else old,
                        compare=compare,
                        compare_timeout=compare_timeout,
                        fallback=fallback,
                        redact=redact,
                    )

                return cast("Callable[P, R]", async_wrapper)

            @functools.wraps(fn)
            def wrapper(*a: P.args, **k: P.kwargs) -> R:
                subject, attrs = context(a, k)
                new: Callable[[], R] = functools.partial(fn, *a, **k)
                old: Callable[[], R] = functools.partial(other, *a, **k)
                result: R = self.run(
                    flag,
                    subject,
                    attrs,
                    legacy=old if decorated_is_parallel else new,
                    parallel=new if decorated_is_parallel else old,
                    compare=compare,
                    compare_timeout=compare_timeout,
                    fallback=fallback,
                    redact=redact,
                )
                return result

            return wrapper

        return decorator

    def _key_getter(
        self, flag: str, key: str | Callable[..., str | None], fn: Callable[..., Any]
    ) -> Callable[[Any, Any], str | None]:
        if isinstance(key, str):
            name = key
            try:
                params = list(inspect.signature(fn).parameters.values())
            except (TypeError, ValueError):  # pragma: no cover - builtins
                params = []
            names = [p.name for p in params]
            if name not in names:
                raise TypeError(f"switch({flag!r}): {fn.__qualname__} has no argument {name!r}")
            param = params[names.index(name)]
            pos = (
                names.index(name)
                if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD)
                else None
            )

            def by_name(a: Any, k: Any) -> str | None:
                if name in k:
                    value = k[name]
                elif pos is not None and pos < len(a):
                    value = a[pos]
                else:
                    return None
                return None if value is None else str(value)

            return by_name

        keyfn = key

        def by_function(a: Any, k: Any) -> str | None:
            try:
                value = keyfn(*a, **k)
            except Exception as exc:
                self._problem(
                    f"switch:key:{flag}",
                    f"switch({flag!r}): the key function raised {type(exc).__name__}; "
                    "deciding without a key (legacy)",
                    "switch",
                    exc,
                )
                return None
            return None if value is None else str(value)

        return by_function

    # -- run() bookkeeping (never raises) ----------------------------------------------

    def _executed(self, row: RowKey, elapsed_ns: int, *, error: bool) -> None:
        try:
            self._recorder.latency(row, elapsed_ns, error=error)
            if row[1] and self._breaker_config is not None:
                flag = row[0]
                br = self._breakers.get(flag)
                if br is None:
                    br = self._breakers.setdefault(flag, FlagBreaker(self._breaker_config))
                changed = br.record(not error, elapsed_ns / 1e6)
                if changed is not None:
                    self._breaker_changed(flag, br, changed)
        except Exception as exc:  # pragma: no cover
            self._problem("internal:metrics", "recording a call failed", "internal", exc)

    def _count(self, row: RowKey, index: int) -> None:
        try:
            self._recorder.count(row, index)
        except Exception as exc:  # pragma: no cover
            self._problem("internal:metrics", "recording a call failed", "internal", exc)

    def _breaker_changed(self, flag: str, br: FlagBreaker, state: BreakerState) -> None:
        self._recorder.breaker_event(flag, str(state), br.reason)
        if state is BreakerState.OPEN:
            self._tripped[flag] = br
            self._problem(
                f"breaker:{flag}",
                f"circuit breaker opened for flag {flag!r} ({br.reason}): "
                "deciding legacy in this process",
                "breaker",
                event="breaker.opened",
            )
        elif state is BreakerState.HALF_OPEN:
            log.info("turnout.breaker.half_opened: flag %r, probing the parallel path", flag)
        else:
            self._tripped.pop(flag, None)
            self._resolved(f"breaker:{flag}")

    def _shadow(
        self,
        d: Decision,
        key: str | None,
        result: Any,
        other: Callable[[], Any],
        compare: Callable[[Any, Any], object],
        timeout: float | None,
        redact: Redactor | None,
    ) -> None:
        try:
            row: RowKey = (d.flag, d.path is _PARALLEL, d.version)
            ctx = contextvars.copy_context()
            limit = self._compare_timeout if timeout is None else timeout

            def job() -> None:
                ctx.run(self._shadow_job, d, key, result, other, compare, limit, redact)

            if self._inline_shadow:
                job()
                return
            pool = self._pool
            if pool is None and not self._closed:
                with self._start_lock:
                    if self._pool is None:
                        self._pool = ShadowPool(
                            workers=self._shadow_workers, queue_size=self._shadow_queue
                        )
                    pool = self._pool
            if pool is None or not pool.submit(job):
                self._recorder.count(row, SKIPPED)
        except Exception as exc:  # pragma: no cover
            self._problem("internal:shadow", "scheduling a comparison failed", "internal", exc)

    def _shadow_job(
        self,
        d: Decision,
        key: str | None,
        result: Any,
        other: Callable[[], Any],
        compare: Callable[[Any, Any], object],
        timeout: float,
        redact: Redactor | None,
    ) -> None:
        row: RowKey = (d.flag, d.path is _PARALLEL, d.version)
        t0 = time.perf_counter()
        try:
            other_result = other()
        except Exception:
            self._count(row, COMPARE_ERRORS)
            return
        if time.perf_counter() - t0 > timeout:
            self._count(row, COMPARE_TIMEOUTS)
            return
        self._compared(d, key, result, other_result, compare, redact)

    def _ashadow(
        self,
        d: Decision,
        key: str | None,
        result: Any,
        other: Callable[[], Awaitable[Any]],
        compare: Callable[[Any, Any], object],
        timeout: float | None,
        redact: Redactor | None,
    ) -> None:
        row: RowKey = (d.flag, d.path is _PARALLEL, d.version)
        try:
            with self._async_lock:
                full = self._closed or self._async_inflight >= self._async_shadow_limit
                if not full:
                    self._async_inflight += 1
            if full:
                self._count(row, SKIPPED)
                return
            coro = self._ashadow_job(
                d, key, result, other, compare,
                self._compare_timeout if timeout is None else timeout, redact,
            )
            try:
                task = asyncio.get_running_loop().create_task(coro)
            except BaseException:
                coro.close()
                with self._async_lock:
                    self._async_inflight -= 1
                raise
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        except Exception as exc:  # pragma: no cover
            self._problem("internal:shadow", "scheduling a comparison failed", "internal", exc)

    async def _ashadow_job(
        self,
        d: Decision,
        key: str | None,
        result: Any,
        other: Callable[[], Awaitable[Any]],
        compare: Callable[[Any, Any], object],
        timeout: float,
        redact: Redactor | None,
    ) -> None:
        row: RowKey = (d.flag, d.path is _PARALLEL, d.version)
        try:
            try:
                other_result = await asyncio.wait_for(_awaitable(other), timeout)
            except TimeoutError:
                self._count(row, COMPARE_TIMEOUTS)
                return
            except Exception:
                self._count(row, COMPARE_ERRORS)
                return
            self._compared(d, key, result, other_result, compare, redact)
        finally:
            with self._async_lock:
                self._async_inflight -= 1

    def _compared(
        self,
        d: Decision,
        key: str | None,
        served_result: Any,
        other_result: Any,
        compare: Callable[[Any, Any], object],
        redact: Redactor | None,
    ) -> None:
        par = d.path is _PARALLEL
        row: RowKey = (d.flag, par, d.version)
        legacy_r, parallel_r = (other_result, served_result) if par else (served_result, other_result)
        try:
            same = bool(compare(legacy_r, parallel_r))
        except Exception:
            self._count(row, COMPARE_ERRORS)
            return
        self._count(row, COMPARISONS)
        if same:
            return
        self._count(row, MISMATCHES)
        if not self._recorder.wants_sample():
            self._recorder.drop("samples")
            return
        hook = redact if redact is not None else self._redact
        try:
            if hook is not None:
                legacy_r = hook(d.flag, legacy_r)
                parallel_r = hook(d.flag, parallel_r)
        except Exception as exc:
            self._recorder.drop("samples")
            self._problem(
                f"redact:{d.flag}",
                f"the redact hook raised {type(exc).__name__} for flag {d.flag!r}: "
                "mismatch sample dropped",
                "redact",
                exc,
            )
            return
        try:
            self._recorder.sample(
                flag=d.flag,
                version=d.version,
                key_hash=key_hash(key),
                served=str(d.path),
                legacy=legacy_r,
                parallel=parallel_r,
            )
        except Exception as exc:
            self._recorder.drop("samples")
            self._problem("internal:sample", "a mismatch sample could not be encoded", "internal", exc)

    # -- problems ------------------------------------------------------------------------

    def _problem(
        self,
        key: str,
        message: str,
        kind: str,
        exc: BaseException | None = None,
        *,
        notify: bool = True,
        event: str | None = None,
    ) -> None:
        """Log ``message`` once per ``key`` until resolved; tell ``on_error`` each time."""
        try:
            first = False
            if key not in self._problems:
                with self._problems_lock:
                    if key not in self._problems and len(self._problems) < _MAX_PROBLEMS:
                        self._problems[key] = message
                        first = True
            if first:
                name = event or f"{kind}.problem"
                log.warning(
                    "turnout.%s: %s",
                    name,
                    message,
                    extra={"turnout_event": name, "turnout_problem": key},
                )
            if notify and self._on_error is not None:
                err = TurnoutError(kind, key, message)
                err.__cause__ = exc
                self._on_error(err)
        except Exception:
            pass  # on_error raised, or logging is broken: never the host's problem

    def _resolved(self, prefix: str) -> None:
        if not self._problems:
            return
        with self._problems_lock:
            keys = [k for k in self._problems if k.startswith(prefix)]
            for k in keys:
                del self._problems[k]
        for k in keys:
            log.info("turnout.resolved: %s", k, extra={"turnout_event": "resolved", "turnout_problem": k})

    # -- ruleset -------------------------------------------------------------------------

    def _load_bootstrap(self, source: str | os.PathLike[str] | Mapping[str, Any]) -> None:
        try:
            if isinstance(source, Mapping):
                doc = source
            else:
                doc = json.loads(FsPath(source).read_text(encoding="utf-8"))
            self._install(_engine.compile_ruleset(doc), etag=None)
        except Exception as exc:
            self._problem(
                "bootstrap",
                f"bootstrap ruleset unusable ({type(exc).__name__}: {exc}); "
                "waiting for the server",
                "bootstrap",
                exc,
            )

    def _install(self, ruleset: _engine.Ruleset, *, etag: str | None) -> None:
        self._epoch = self._recorder.epoch(ruleset.version)
        self._real = ruleset
        self._etag = etag
        self._ruleset = _Forced(ruleset, self._forced) if self._forced else ruleset
        self._ready.set()
        self._resolved("decision:not-ready")  # decisions come from a ruleset again
        for warning in ruleset.warnings:  # a ``matches`` pattern this host does not run: told once
            if f"pattern:{warning}" not in self._problems:
                self._problem(f"pattern:{warning}", warning, "ruleset", event="ruleset.pattern_unusable")

    def _set_forced(self, forced: Mapping[str, Decision]) -> None:
        """Pin decisions for some flags (used by ``turnout.testing``)."""
        self._forced = dict(forced)
        inner: _Decider = self._real if self._real is not None else _NOT_READY
        self._ruleset = _Forced(inner, self._forced) if self._forced else inner

    def _refresh(self) -> bool:
        """Fetch the ruleset once (conditional on the ETag). True when the server answered
        with a usable ruleset or 304."""
        transport = self._transport
        if transport is None:
            return False
        headers = {"Accept": "application/json"}
        if self._etag and self._real is not None:
            headers["If-None-Match"] = self._etag
        try:
            resp = transport.request("GET", RULESET_PATH, headers=headers)
        except TransportError as exc:
            if self._stop.is_set():
                return False  # close() cut the request short: not the server's failure
            self._problem(
                f"fetch:{exc.kind}",
                f"cannot fetch the ruleset ({exc}); {self._keeping()}",
                "fetch",
                exc,
                event="ruleset.fetch_failed",
            )
            return False
        if resp.status == 304:
            self._resolved("fetch:")
            return True
        if resp.status in (401, 403):
            self._problem(
                "fetch:unauthorized",
                f"the server rejected the SDK key (HTTP {resp.status}); {self._keeping()}",
                "fetch",
                event="ruleset.fetch_failed",
            )
            return False
        if resp.status != 200:
            self._problem(
                f"fetch:http-{resp.status}",
                f"the server answered HTTP {resp.status} for the ruleset; {self._keeping()}",
                "fetch",
                event="ruleset.fetch_failed",
            )
            return False
        self._resolved("fetch:")
        try:
            ruleset = _engine.compile_ruleset(json.loads(resp.body))
        except Exception as exc:
            self._problem(
                "ruleset:invalid",
                f"the server sent an unusable ruleset ({type(exc).__name__}: {exc}); "
                f"{self._keeping()}",
                "ruleset",
                exc,
                event="ruleset.rejected",
            )
            return False
        self._resolved("ruleset:")
        previous = self.version
        self._install(ruleset, etag=resp.headers.get("ETag"))
        if previous != ruleset.version:
            log.debug("turnout.ruleset.installed: version %s", ruleset.version)
        return True

    def _keeping(self) -> str:
        v = self.version
        return "no ruleset yet: deciding legacy" if v is None else f"keeping version {v}"

    # -- background: sync ----------------------------------------------------------------

    def _backoff(self, failures: int) -> float:
        return _jitter(min(self._backoff_max, self._backoff_base * 2 ** min(failures - 1, 30)))

    def _sync_loop(self) -> None:
        stop = self._stop
        fetch_failures = stream_failures = 0
        while not stop.is_set():
            try:
                if not self._refresh():
                    fetch_failures += 1
                    delay = self._backoff(fetch_failures)
                else:
                    fetch_failures = 0
                    if self._use_stream and not stop.is_set():
                        if self._stream_session():
                            stream_failures = 0
                            delay = _jitter(self._backoff_base)
                        else:
                            stream_failures += 1
                            delay = min(self._backoff(stream_failures), self._poll_interval)
                    else:
                        delay = _jitter(self._poll_interval)
            except Exception as exc:  # pragma: no cover - a bug here must not kill the thread
                self._problem("internal:sync", f"sync loop error: {exc!r}", "internal", exc)
                delay = self._backoff_max
            stop.wait(delay)

    def _stream_session(self) -> bool:
        """Follow the stream until it ends. True when it was healthy (connected and lasted),
        so the caller reconnects promptly; False to back off (and poll meanwhile)."""
        transport = self._transport
        if transport is None:  # pragma: no cover
            return False
        stream = Stream(
            transport, read_timeout=self._stream_read_timeout, connect_timeout=self._timeout
        )
        self._stream = stream
        started = time.monotonic()
        try:
            try:
                stream.connect(self._last_event_id)
            except StreamUnsupported as exc:
                self._use_stream = False
                self._problem(
                    "stream:unsupported",
                    f"{exc}; polling every {self._poll_interval:g}s instead",
                    "stream",
                    exc,
                    event="stream.unavailable",
                )
                return False
            except HTTPStatusError as exc:
                kind = "unauthorized" if exc.status in (401, 403) else f"http-{exc.status}"
                self._problem(
                    f"stream:{kind}",
                    f"the stream answered HTTP {exc.status}; polling meanwhile",
                    "stream",
                    exc,
                    event="stream.failed",
                )
                return False
            if self._stop.is_set():
                return False
            self._resolved("stream:")
            for ev in stream.events():
                if self._stop.is_set():
                    return False
                if stream.parser.last_id:
                    self._last_event_id = stream.parser.last_id
                if ev.event == "ruleset" and not self._on_ruleset_event(ev.data):
                    # the announced ruleset could not be fetched: leave the stream so the
                    # loop retries the fetch with backoff instead of waiting for next event
                    return False
            return time.monotonic() - started >= min(5.0, self._stream_read_timeout)
        except TransportError as exc:
            if not self._stop.is_set():
                self._problem(
                    f"stream:{exc.kind}",
                    f"stream lost ({exc}); reconnecting",
                    "stream",
                    exc,
                    event="stream.failed",
                )
            return time.monotonic() - started >= min(5.0, self._stream_read_timeout)
        finally:
            stream.close()
            if self._stream is stream:
                self._stream = None

    def _on_ruleset_event(self, data: str) -> bool:
        try:
            announced = json.loads(data).get("version")
        except Exception:
            announced = None
        current = self.version
        if not isinstance(announced, int) or current is None or announced > current:
            return self._refresh()
        return True

    # -- background: metrics -------------------------------------------------------------

    def _metrics_loop(self) -> None:
        stop = self._stop
        while not stop.wait(_jitter(self._flush_interval)):
            try:
                self._flush_once(background=True)
            except Exception as exc:  # pragma: no cover
                self._problem("internal:metrics", f"metrics loop error: {exc!r}", "internal", exc)

    def _post_metrics(self, body: bytes) -> None:
        transport = self._transport
        if transport is None:  # pragma: no cover
            return
        resp = transport.request("POST", METRICS_PATH, body=body)
        if 200 <= resp.status < 300:
            return
        if 400 <= resp.status < 500 and resp.status not in (401, 403, 408, 429):
            raise ValueError(f"the server refused a metrics batch (HTTP {resp.status})")
        raise HTTPStatusError(resp.status)

    def _flush_once(self, *, final: bool = False, background: bool = False) -> bool:
        with self._flush_lock:
            batch = self._recorder.drain(sdk_version=__version__, code_version=self._code_version)
            if batch is not None:
                self._sender.add(batch)
            if not self._send_metrics:
                return True
            before = self._sender.dropped_batches
            err = self._sender.send(self._post_metrics, give_up=final)
            if err is None:
                self._resolved("metrics:")
            elif background and self._stop.is_set():
                pass  # close() cut the post short; its final flush sends the batch and reports
            else:
                kind = (
                    f"http-{err.status}" if isinstance(err, HTTPStatusError)
                    else getattr(err, "kind", "refused")
                )
                self._problem(
                    f"metrics:{kind}",
                    f"cannot send metrics ({err}); retrying {self._sender.retries} times "
                    f"at most, then dropping",
                    "metrics",
                    err,
                    event="metrics.send_failed",
                )
            if self._sender.dropped_batches > before:
                self._problem(
                    "metrics:dropped",
                    "metrics batches dropped after failed sends",
                    "metrics",
                    notify=False,
                    event="metrics.dropped",
                )
            return err is None

    def flush(self) -> bool:
        """Send the metrics counted so far now (blocking, bounded by ``timeout``).
        True when everything pending was delivered. Never raises."""
        try:
            return self._flush_once()
        except Exception as exc:  # pragma: no cover
            self._problem("internal:metrics", f"flush error: {exc!r}", "internal", exc)
            return False

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop background work and flush metrics once. Idempotent; never raises.
        Decisions keep working after ``close()`` with the last ruleset."""
        try:
            with self._start_lock:
                if self._closed:
                    return
                self._closed = True
                self._dormant = False
            self._stop.set()
            stream = self._stream
            if stream is not None:
                stream.close()
            if self._transport is not None:
                self._transport.close()  # wakes a thread blocked on the network
            for t in (self._sync_thread, self._metrics_thread):
                if t is not None and t is not threading.current_thread():
                    t.join(1.0)
            pool = self._pool
            if pool is not None:
                pool.close(timeout=min(self._compare_timeout, 1.0))
            if self._send_metrics:
                self._flush_once(final=True)
            if self._transport is not None:
                self._transport.close()
            _clients.discard(self)
        except Exception as exc:  # pragma: no cover
            self._problem("internal:close", f"close error: {exc!r}", "internal", exc)

    def __enter__(self) -> Turnout:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("offline" if self._offline else "online")
        return f"<Turnout {state} version={self.version}>"


async def _awaitable(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()

