"""Helpers for the host application's own tests: force paths, build clients with no network.

    from turnout.testing import TestClient, forced

    def test_new_invoice_engine_totals():
        client = TestClient(flags={"invoice-engine": "parallel"})
        assert compute_total(client, invoice) == Decimal("10.00")

    @forced(app_client, {"invoice-engine": "legacy"})
    def test_old_engine_still_works(): ...

``forced`` works as a context manager and as a decorator (of plain and async functions), on
any ``Turnout`` client, including the application's real one. Forced decisions have reason
``STATIC`` and rule ``"forced"``; they apply process-wide (all threads) while active.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar, cast

from ._problems import label
from .client import Turnout
from .types import Decision, Path, Reason
from .wire import SCHEMA, DivergenceReport, FlagRule, MetricsBatch, MismatchSample, RulesetDocument

__all__ = ["TestClient", "client", "forced", "ruleset"]

F = TypeVar("F", bound=Callable[..., Any])

FlagSpec = str | Path | float | int | Mapping[str, Any]


def ruleset(
    flags: Mapping[str, FlagSpec] | None = None, *, version: int = 1, environment: str = "test"
) -> RulesetDocument:
    """A ruleset document from a short description of each flag.

    ``"parallel"``/``"legacy"`` send everyone that way (100 % / 0 %); a number is the
    percentage on parallel; a mapping gives the flag's fields (``enabled``, ``overrides``,
    ``compare_percentage``...) over defaults. Pass ``cohorts`` through a full document
    instead when you need them. A description that is none of these raises ``ValueError``
    naming the flag.
    """
    if flags is not None and not isinstance(flags, Mapping):
        raise ValueError(f"ruleset(): flags must map flag keys to descriptions, got {label(flags)}")
    out: dict[str, FlagRule] = {}
    try:
        items = list((flags or {}).items())
    except Exception as exc:
        raise ValueError(f"ruleset(): flags cannot be read ({type(exc).__name__})") from None
    for key, spec in items:
        if not isinstance(key, str):
            raise ValueError(f"ruleset(): flag keys must be strings, got {label(key)}")
        f: dict[str, Any] = {
            "enabled": True,
            "retired": False,
            "salt": key,
            "bucket_by": None,
            "overrides": {},
            "exclude_cohorts": [],
            "include_cohorts": [],
            "percentage": 0.0,
            "compare_percentage": 0.0,
            "stage": None,
        }
        if isinstance(spec, Mapping):
            try:
                f.update(spec)
            except Exception as exc:
                raise ValueError(f"ruleset(): flag {label(key)!r}: fields cannot be read "
                                 f"({type(exc).__name__})") from None
        elif isinstance(spec, int | float) and not isinstance(spec, bool):
            f["percentage"] = float(spec)
        else:
            f["percentage"] = 100.0 if _path(spec, f"ruleset(): flag {label(key)!r}") is Path.PARALLEL else 0.0
        out[key] = cast(FlagRule, f)
    return {"schema": SCHEMA, "environment": environment, "version": version, "cohorts": {}, "flags": out}


def _path(value: object, where: str) -> Path:
    """``"legacy"``/``"parallel"`` as a Path; ValueError naming ``where`` otherwise."""
    if isinstance(value, str):
        try:
            return Path(str.__str__(value))
        except ValueError:
            pass
    raise ValueError(f"{where}: must be 'legacy' or 'parallel', got {label(value)!r}")


class forced:
    """Pin the decision of some flags on ``client`` while active.

    ``flags`` maps a flag key to ``"legacy"``/``"parallel"`` (or a full ``Decision``).
    With ``compare=True`` the forced decisions also ask ``run()`` to shadow the other path.
    Nested uses stack; leaving restores what was forced before. Anything else raises
    ``ValueError`` here, naming it.
    """

    def __init__(
        self,
        client: Turnout,
        flags: Mapping[str, str | Path | Decision],
        *,
        compare: bool = False,
    ) -> None:
        if not isinstance(client, Turnout):
            raise ValueError(f"forced(): client must be a turnout.Turnout, got {label(client)}")
        if not isinstance(flags, Mapping):
            raise ValueError(f"forced(): flags must map flag keys to 'legacy'/'parallel', got {label(flags)}")
        self.client = client
        self.compare = compare is True
        self.flags: dict[str, Path | Decision] = {}
        try:
            items = list(flags.items())
        except Exception as exc:
            raise ValueError(f"forced(): flags cannot be read ({type(exc).__name__})") from None
        for flag, value in items:
            if not isinstance(flag, str):
                raise ValueError(f"forced(): flag keys must be strings, got {label(flag)}")
            flag = str.__str__(flag)
            self.flags[flag] = value if isinstance(value, Decision) else _path(value, f"forced(): flag {label(flag)!r}")
        self._previous: list[dict[str, Decision]] = []

    def _decisions(self) -> dict[str, Decision]:
        version = self.client.version
        return {
            flag: value if isinstance(value, Decision) else Decision(
                flag, value, Reason.STATIC, compare=self.compare, rule="forced", version=version)
            for flag, value in self.flags.items()
        }

    def __enter__(self) -> Turnout:
        current = dict(self.client._forced)
        self._previous.append(current)
        self.client._set_forced({**current, **self._decisions()})
        return self.client

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.client._set_forced(self._previous.pop())

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with forced(self.client, self.flags, compare=self.compare):
                    return await fn(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with forced(self.client, self.flags, compare=self.compare):
                return fn(*args, **kwargs)

        return cast(F, wrapper)


class TestClient(Turnout):
    """An offline client for tests: no network, no background threads, shadows run on the
    caller's thread (so a test can assert on mismatches right after ``run()``), and every
    decision is kept in ``decisions``.

    ``TestClient(flags={"invoice-engine": "parallel"})`` or ``TestClient(doc)`` with a full
    ruleset document; any ``Turnout`` option may be passed too (``redact``, ``breaker``...).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        doc: RulesetDocument | Mapping[str, Any] | None = None,
        *,
        flags: Mapping[str, FlagSpec] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(None, None, bootstrap=doc if doc is not None else ruleset(flags), **options)
        self._inline_shadow = True
        self.decisions: list[Decision] = []

    def decide(
        self, flag: str, key: str | None, attributes: Mapping[str, Any] | None = None
    ) -> Decision:
        d = super().decide(flag, key, attributes)
        self.decisions.append(d)
        return d

    def force(self, flags: Mapping[str, str | Path | Decision], *, compare: bool = False) -> forced:
        """``forced(self, flags)``: ``with client.force({"f": "parallel"}): ...``"""
        return forced(self, flags, compare=compare)

    @property
    def mismatches(self) -> list[MismatchSample]:
        """Mismatch samples recorded since the last ``metrics()`` (redacted, as they would be
        sent)."""
        return self._recorder.pending_samples()

    @property
    def divergences(self) -> list[DivergenceReport]:
        """Failed non-authoritative writes of ``migration()`` calls recorded since the last ``metrics()``."""
        return self._recorder.migration.pending_divergences()

    def metrics(self) -> MetricsBatch | None:
        """Take the metrics counted so far, as the batch that would be sent."""
        return self._recorder.drain(sdk_version="test", code_version=self.options.code_version)


def client(
    doc: RulesetDocument | Mapping[str, Any] | None = None,
    *,
    flags: Mapping[str, FlagSpec] | None = None,
    **options: Any,
) -> TestClient:
    """An in-memory client with no network: ``turnout.testing.client(flags={"f": 25})``."""
    return TestClient(doc, flags=flags, **options)
