"""The Turnout client: local decisions, ``run()`` with shadow comparison, background sync.

This module is the public front door; the work lives in private modules:

* ``_options`` — every constructor option, grouped in ``Options`` and checked in one place;
* ``_call`` — the one core that runs a call (``run``/``arun`` and their shadows), the local
  circuit breaker and the bounded places where shadows run;
* ``_sync`` — the ruleset (fetch, stream, poll, backoff) and metrics shipping threads;
* ``_problems`` — reporting trouble without raising (log once, ``on_error``).

Threads and what they own:

* the caller's threads run ``decide()``/``run()``: they read ``self._ruleset`` (one attribute,
  swapped atomically by the sync thread), increment a decision counter without a lock, and only
  take short locks for ``run()`` bookkeeping;
* ``turnout-sync`` fetches the ruleset (ETag), follows the stream, falls back to polling and
  backs off on failure; ``turnout-metrics`` ships batched metrics;
* ``turnout-shadow-N`` (lazily, bounded) run shadow comparisons.

Nothing Turnout does raises into the host: problems become log warnings (one per distinct
problem until it is resolved), ``on_error`` callbacks, and safe decisions (the last good
ruleset, or ``legacy`` with reason ``ERROR``). The only exceptions are configuration errors
when a client is built or a function decorated (``ValueError``/``TypeError`` naming the bad
option), and the host's own exceptions from ``legacy``/``parallel``.
"""

from __future__ import annotations

import atexit
import json
import math
import operator
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path as FsPath
from typing import Any, Final, ParamSpec, Protocol, TypeVar, Unpack, cast, overload

from . import engine as _engine
from ._breaker import FlagBreaker
from ._call import CallCore, adrive, drive
from ._metrics import Recorder, RowKey, Sender
from ._options import Bootstrap, Options, OptionsKwargs, Redactor
from ._problems import MAX_PROBLEMS, Problems, TurnoutError, label
from ._switch import switch_decorator
from ._sync import MetricsShipper, RulesetSync
from ._transport import Transport
from .feedback import BATCH_DELAY, FeedbackSender
from .migration import Compare, Identify, Migration, Order
from .types import Decision, ErrorCode, Path, Reason, StageDecision
from .wire import SDK_NAME

__all__ = ["Options", "Turnout", "TurnoutError"]

__version__: Final = "0.1.0"

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")

_PARALLEL: Final = Path.PARALLEL
_LEGACY: Final = Path.LEGACY


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


class Turnout:
    """A Turnout SDK client. Create one per process and share it between threads.

    ``url`` is the Turnout server (``https://turnout.example.com``), ``sdk_key`` the
    environment's SDK key. With ``url=None`` the client is offline: it decides from
    ``bootstrap`` only and sends nothing. Options are keyword arguments, or an ``Options``
    passed as ``options=`` (keyword arguments given as well override its fields); see the
    README for each. A bad option raises ``ValueError`` here, naming it; nothing else does.
    """

    def __init__(
        self,
        url: str | None,
        sdk_key: str | None,
        *,
        options: Options | None = None,
        **overrides: Unpack[OptionsKwargs],
    ) -> None:
        if options is not None and not isinstance(options, Options):
            raise ValueError(f"options must be a turnout.Options, got a {type(options).__name__}")
        opts = (options or Options()).replace(**overrides) if overrides else (options or Options())
        if url is not None and not isinstance(url, str):
            raise ValueError(f"url must be a string or None, got a {type(url).__name__}")
        if sdk_key is not None and not isinstance(sdk_key, str):
            raise ValueError(f"sdk_key must be a string or None, got a {type(sdk_key).__name__}")
        url = None if url is None else str.__str__(url)  # a str subclass: its plain value
        sdk_key = None if sdk_key is None else str.__str__(sdk_key)
        self.options: Final = opts
        self._offline = not url
        self._problems = Problems(opts.on_error)

        self._transport: Transport | None = None
        if url:
            if not sdk_key:
                raise ValueError("sdk_key is required with a url (use url=None to run offline)")
            if not sdk_key.isprintable():
                raise ValueError("sdk_key must be a string of printable characters")
            self._transport = Transport(
                url,
                sdk_key,
                timeout=opts.timeout,
                user_agent=f"{SDK_NAME}/{__version__}",
                ssl_context=opts.ssl_context,
                max_body=opts.max_ruleset_bytes,
            )

        # decision state: the sync thread swaps ``_ruleset`` whole; readers never lock
        self._ruleset: _Decider = _NOT_READY
        self._real: _engine.Ruleset | None = None
        self._forced: dict[str, Decision] = {}
        self._recorder = Recorder(max_samples=opts.max_samples, max_sample_bytes=opts.max_sample_bytes)
        self._epoch = self._recorder.current
        self._core = CallCore(self._recorder, opts, self._problems)
        self._tripped: dict[str, FlagBreaker] = self._core.tripped  # shared: decide() reads it
        self._closed = False
        self._dormant = False
        self._new_process_state()
        self._shipper = MetricsShipper(
            self._transport, self._recorder, opts, self._problems, self._stop, sdk_version=__version__
        )
        self._feedback = FeedbackSender(self._transport, self._problems, sdk_version=__version__,
                                        code_version=opts.code_version, redact=opts.redact,
                                        gather=min(BATCH_DELAY, opts.flush_interval),
                                        backoff=(opts.backoff_base, opts.backoff_max))
        self._sync: RulesetSync | None = None
        if self._transport is not None:
            self._sync = RulesetSync(
                self._transport, opts, self._problems, self._stop,
                install=self._install, version=lambda: self.version, current=lambda: self._real,
            )

        if opts.bootstrap is not None:
            self._load_bootstrap(opts.bootstrap)
        _clients.add(self)
        if not self._offline:
            self._dormant = True
            self._wake()
            if opts.start_wait > 0 and self._sync is not None and not self.ready:
                self._wait_for_start(opts.start_wait)

    @classmethod
    def offline(cls, bootstrap: Bootstrap | None = None, **options: Any) -> Turnout:
        """A client that never touches the network: it decides from ``bootstrap`` (a
        ruleset document or the path of a JSON file) and keeps its metrics in memory."""
        return cls(None, None, bootstrap=bootstrap, **options)

    # -- process-local state (recreated in a forked child) -----------------------------

    def _new_process_state(self) -> None:
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        if self._real is not None:
            self._ready.set()
        self._sync_thread: threading.Thread | None = None
        self._metrics_thread: threading.Thread | None = None

    def _after_fork_in_child(self) -> None:
        # Only the forking thread survives in the child: every lock may be held by a thread
        # that no longer exists, every socket is shared with the parent. Start over, keep the
        # ruleset (that is the point of preloading), restart background work on first use.
        if self._transport is not None:
            self._transport.after_fork_in_child()
        self._new_process_state()
        if self._sync is not None:
            self._sync.after_fork_in_child(self._stop)
        self._shipper.after_fork_in_child(self._stop)
        self._feedback.after_fork_in_child()
        self._core.after_fork_in_child()
        self._recorder.after_fork_in_child()
        self._epoch = self._recorder.epoch(self.version)
        self._problems.after_fork_in_child()
        if not self._closed and not self._offline:
            self._dormant = True

    def _wake(self) -> None:
        """Start the background threads (at construction, and lazily after a fork)."""
        with self._start_lock:
            if not self._dormant or self._closed:
                return
            self._dormant = False
            if self._sync is not None:
                self._sync_thread = threading.Thread(target=self._sync.loop, name="turnout-sync", daemon=True)
                self._sync_thread.start()
            if self._shipper.send:
                self._metrics_thread = threading.Thread(
                    target=self._shipper.loop, name="turnout-metrics", daemon=True
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

    @property
    def ruleset(self) -> _engine.Ruleset | None:
        """The compiled ruleset in use (what ``decide()`` reads), or None before the first."""
        return self._real

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Block until a ruleset is in use or ``timeout`` seconds pass; return ``ready``.
        Never raises (a ``timeout`` that is not a number >= 0 is reported and waits not at all)."""
        try:
            if self._dormant:
                self._wake()
            if timeout is not None:
                if (
                    not isinstance(timeout, int | float)
                    or isinstance(timeout, bool)
                    or math.isnan(timeout)
                    or timeout < 0
                ):
                    self._problems.report("call:wait_until_ready",
                                          f"wait_until_ready(timeout) needs a number >= 0 or None, got a "
                                          f"{type(timeout).__name__}; not waiting", "call")
                    return self.ready
                timeout = min(float(timeout), threading.TIMEOUT_MAX)
            return self._ready.wait(timeout)
        except Exception as exc:  # pragma: no cover
            self._problems.report("internal:wait", "wait_until_ready failed", "internal", exc)
            return self.ready

    def _wait_for_start(self, seconds: float) -> None:
        """``start_wait``: block until the first fetch has an outcome, at most ``seconds``.

        A server that answers with a ruleset makes the client ready before the first decision;
        one that is down or refuses the key ends the wait at once (legacy decisions until the
        ruleset arrives, the failure logged once); a hanging one is waited for ``seconds``.
        """
        try:
            assert self._sync is not None
            answered = self._sync.attempted.wait(min(seconds, threading.TIMEOUT_MAX))
            if not answered and not self.ready:  # a failed fetch has told already
                self._problems.report(
                    "start:not-ready",
                    f"no answer from the server within start_wait={seconds:g}s: deciding legacy until the "
                    "ruleset arrives", "fetch",
                    event="ruleset.not_ready_at_start",
                )
        except Exception as exc:  # pragma: no cover - waiting must never fail the host's start
            self._problems.report("internal:start", "start_wait failed", "internal", exc)

    # -- deciding ------------------------------------------------------------------------

    def decide(
        self, flag: str, key: str | None, attributes: Mapping[str, Any] | None = None
    ) -> Decision:
        """Which path ``key`` takes for ``flag``, decided locally. Never raises."""
        if self._dormant:
            self._wake()
        if flag.__class__ is not str:
            if not isinstance(flag, str):
                return self._not_a_flag(flag)
            flag = str.__str__(flag)  # a str subclass (a StrEnum member...): its plain value
        try:
            d = self._ruleset.decide(flag, key, attributes)
        except Exception as exc:  # the engine promises not to raise; do not trust it
            d = self._engine_failed(flag, exc)
        if self._tripped and flag in self._tripped:
            d = self._core.tripped_decision(d)
        epoch = self._epoch
        try:
            shard = epoch.local.counts  # this thread's own counts: no lock, no lost increment
        except AttributeError:
            shard = self._recorder.shard(epoch)
        counts = shard.get(flag)
        if counts is None:
            counts = shard[flag] = [0, 0]
        counts[d.path is _PARALLEL] += 1
        if d.error_code is not None or d.detail is not None:
            self._decision_problem(d)
        return d

    def decide_stage(
        self, flag: str, key: str | None, attributes: Mapping[str, Any] | None = None
    ) -> StageDecision:
        """Where ``key`` stands in the data migration ``flag`` (docs/migrations.md). Never raises:
        before any ruleset, or for an unknown flag, the stage is ``off`` (legacy only)."""
        if self._dormant:
            self._wake()
        real = self._real
        try:
            if real is None:
                return _engine.evaluate_stage(None, str(flag), key, attributes)
            return real.decide_stage(flag, key, attributes)
        except Exception as exc:  # the engine promises not to raise; do not trust it
            self._problems.report("internal:engine", f"the engine raised {type(exc).__name__}", "internal", exc)
            return _engine.evaluate_stage(None, "", key, attributes)

    def migration(
        self,
        flag: str,
        *,
        order: Order = "serial",
        budget: float = 0.25,
        compare: Compare = operator.eq,
        identify: Identify | None = None,
        redact: Redactor | None = None,
    ) -> Migration[Any]:
        """The reads and writes of a data-migration flag (``turnout.migration.Migration``). Bad
        options raise ``ValueError`` here; the calls never raise beyond the authoritative origin."""
        return Migration(self, flag, order=order, budget=budget, compare=compare, identify=identify, redact=redact)

    def _not_a_flag(self, flag: object) -> Decision:
        """A flag key that is not a string: legacy, not counted, reported once per type."""
        name = label(flag)
        self._problems.report(f"decision:flag-type:{name}",
                              f"a flag key must be a string, got {name}: legacy", "decision")
        return Decision(name, _LEGACY, Reason.ERROR, error_code=ErrorCode.FLAG_NOT_FOUND, rule="error",
                        version=self.version)

    def _engine_failed(self, flag: str, exc: Exception) -> Decision:
        self._problems.report("internal:engine", f"the engine raised {type(exc).__name__}", "internal", exc)
        return Decision(flag, _LEGACY, Reason.ERROR, error_code=ErrorCode.GENERAL, rule="error")

    def _decision_problem(self, d: Decision) -> None:
        try:
            code = d.error_code
            if code is None:  # a receipt with a detail: the bucket_by attribute is missing
                key = f"decision:bucket-by-missing:{d.flag}"
                if key not in self._problems.open and len(self._problems.open) < MAX_PROBLEMS:
                    self._problems.report(key, f"flag {d.flag!r}: {d.detail} (legacy); pass it in the "
                                          "attributes", "decision", notify=True,
                                          event="decision.bucket_by_missing")
                return
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
            if key not in self._problems.open and len(self._problems.open) < MAX_PROBLEMS:
                self._problems.report(key, msg, "decision", notify=True)
        except Exception:  # pragma: no cover - never let bookkeeping escape
            pass

    # -- feedback ------------------------------------------------------------------------

    def feedback(
        self,
        flag: str,
        key: str | None,
        *,
        score: int | None = None,
        comment: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        path: Path | str | None = None,
        redact: Redactor | None = None,
    ) -> bool:
        """Record a subject's feedback on ``flag``: ``score`` (a whole number from 1 to 5) and/or a
        ``comment``, with the path the subject is on — ``path`` when given, else decided now (the
        answer ``decide()`` gives, not counted as a decision). The comment and ``attributes`` pass
        ``redact`` (else the client's hook), are scrubbed and capped, and are sent in the background
        (``turnout.feedback``, docs/feedback.md). True when recorded; never raises."""
        try:
            return self._feedback.record(self._feedback_decision, flag, key, score=score, comment=comment,
                                         attributes=attributes, path=path, redact=redact)
        except Exception as exc:  # pragma: no cover - never let bookkeeping escape
            self._problems.report("internal:feedback", f"feedback() failed: {exc!r}", "internal", exc)
            return False

    def _feedback_decision(self, flag: str, key: str, attributes: Mapping[str, Any] | None) -> Decision:
        """The path ``key`` is on now, as ``decide()`` answers, without counting it (a breaker that is
        not closed keeps its flag on legacy)."""
        d = self._ruleset.decide(flag, key, attributes)
        breaker = self._tripped.get(flag) if self._tripped else None
        if breaker is not None and d.path is _PARALLEL and breaker.state != "closed":
            return Decision(flag, _LEGACY, d.reason, error_code=ErrorCode.CIRCUIT_OPEN, version=d.version)
        return d

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
        core = self._core
        plan = core.call(d, key, legacy, parallel, compare=compare, compare_timeout=compare_timeout,
                         fallback=fallback, redact=redact, shadow=core.thread_shadow)
        return cast(T, drive(plan))

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
        core = self._core
        plan = core.call(d, key, legacy, parallel, compare=compare, compare_timeout=compare_timeout,
                         fallback=fallback, redact=redact, shadow=core.task_shadow)
        return cast(T, await adrive(plan))

    def report(self, decision: Decision, *, ok: bool, elapsed: float | None = None) -> None:
        """Report the outcome of a path the host ran itself after ``decide()``: ``ok`` false when
        it failed, ``elapsed`` its duration in seconds when known. Counted like a ``run()`` of the
        decision's path (a run, an error; with ``elapsed``, a timing the local breaker sees too), so
        guardrails judge it; a bare ``decide()`` is never counted as a run. Never raises: anything
        but a ``Decision`` from this SDK is reported as a problem and ignored."""
        try:
            if not isinstance(decision, Decision) or not isinstance(decision.flag, str) \
                    or decision.path not in (_PARALLEL, _LEGACY):
                self._problems.report("call:report", f"report() needs a Decision from decide(), got "
                                      f"{label(decision)}: ignored", "call")
                return
            failed = not ok
            seconds = elapsed if isinstance(elapsed, int | float) and not isinstance(elapsed, bool) else None
            if seconds is not None and not 0.0 <= seconds < 1e9:  # NaN, negative, absurd: no timing
                seconds = None
            row = (decision.flag, decision.path is _PARALLEL, decision.version)
            if seconds is None:
                self._recorder.outcome(row, error=failed)
            else:
                self._core.executed(row, int(seconds * 1e9), error=failed)
        except Exception as exc:  # ``ok`` whose truth value raises, and anything else
            self._problems.report("call:report", f"report() failed: {exc!r}: ignored", "call", exc)

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
        routed through ``arun()``. Misuse (neither or both of ``legacy=``/``parallel=``, a
        ``key`` naming no argument) raises ``TypeError`` when decorating; calls never raise.
        """
        return switch_decorator(
            self, flag, report=self._problems.report, key=key, legacy=legacy, parallel=parallel,
            attributes=attributes, compare=compare,
            compare_timeout=compare_timeout, fallback=fallback, redact=redact,
        )

    # -- run() internals, kept reachable for the host's and our own tests -------------------

    def _executed(self, row: RowKey, elapsed_ns: int, *, error: bool) -> None:
        self._core.executed(row, elapsed_ns, error=error)

    @property
    def _inline_shadow(self) -> bool:
        return self._core.inline

    @_inline_shadow.setter
    def _inline_shadow(self, value: bool) -> None:
        self._core.inline = value

    @property
    def _tasks(self) -> set[Any]:
        return self._core.tasks

    @property
    def _async_inflight(self) -> int:
        return self._core.async_inflight

    @property
    def _sender(self) -> Sender:
        return self._shipper.sender

    # -- ruleset -------------------------------------------------------------------------

    def _load_bootstrap(self, source: object) -> None:
        try:
            if isinstance(source, Mapping):
                doc = source
            elif isinstance(source, str | os.PathLike):
                doc = json.loads(FsPath(source).read_text(encoding="utf-8"))
            else:
                raise TypeError(f"expected a ruleset document or a file path, got a {type(source).__name__}")
            self._install(_engine.compile_ruleset(doc), etag=None)
        except Exception as exc:  # any document, any file, any depth: reported, never raised
            self._problems.report(
                "bootstrap",
                f"bootstrap ruleset unusable ({type(exc).__name__}: {_short(exc)}); waiting for the server",
                "bootstrap",
                exc,
            )

    def _install(self, ruleset: _engine.Ruleset, etag: str | None = None) -> None:
        self._epoch = self._recorder.epoch(ruleset.version)
        self._real = ruleset
        if self._sync is not None:
            self._sync.etag = etag
        self._ruleset = _Forced(ruleset, self._forced) if self._forced else ruleset
        self._ready.set()
        self._problems.resolved("decision:not-ready")  # decisions come from a ruleset again
        self._problems.resolved("start:")
        for warning in ruleset.warnings:  # a ``matches`` pattern this host does not run: told once
            if f"pattern:{warning}" not in self._problems.open:
                self._problems.report(f"pattern:{warning}", warning, "ruleset", event="ruleset.pattern_unusable")

    def _set_forced(self, forced: Mapping[str, Decision]) -> None:
        """Pin decisions for some flags (used by ``turnout.testing``)."""
        self._forced = dict(forced)
        inner: _Decider = self._real if self._real is not None else _NOT_READY
        self._ruleset = _Forced(inner, self._forced) if self._forced else inner

    # -- metrics -------------------------------------------------------------------------

    def flush(self) -> bool:
        """Send the metrics counted so far now (blocking, bounded by ``timeout``).
        True when everything pending was delivered. Never raises."""
        try:
            sent = self._feedback.flush()
            return self._shipper.flush_once() and sent
        except Exception as exc:  # pragma: no cover
            self._problems.report("internal:metrics", f"flush error: {exc!r}", "internal", exc)
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
            self._recorder.urgent.set()  # wakes the metrics thread waiting for an early flush
            if self._sync is not None:
                self._sync.close()
            if self._transport is not None:
                self._transport.close()  # wakes a thread blocked on the network
            for t in (self._sync_thread, self._metrics_thread):
                if t is not None and t is not threading.current_thread():
                    t.join(1.0)
            self._core.close()
            self._feedback.close()
            if self._shipper.send:
                self._shipper.flush_once(final=True)
            if self._transport is not None:
                self._transport.close()
            _clients.discard(self)
        except Exception as exc:  # pragma: no cover
            self._problems.report("internal:close", f"close error: {exc!r}", "internal", exc)

    def __enter__(self) -> Turnout:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("offline" if self._offline else "online")
        return f"<Turnout {state} version={self.version}>"


def _short(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        return "?"
    return text if len(text) <= 300 else text[:300] + "…"
