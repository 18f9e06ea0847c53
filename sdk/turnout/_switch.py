"""``Turnout.switch``: the decorator form of ``run()``/``arun()``.

Misuse is a configuration error, raised as ``TypeError`` when decorating; a decorated function's
calls never raise because of Turnout (a key or attributes function that raises, a key whose
``str()`` raises: reported, and the call decides without it).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from ._options import Redactor
from ._problems import label

if TYPE_CHECKING:
    from .client import Turnout

__all__ = ["switch_decorator"]

P = ParamSpec("P")
R = TypeVar("R")


def switch_decorator(
    client: Turnout,
    flag: str,
    *,
    report: Callable[..., None],
    key: str | Callable[..., str | None],
    legacy: Callable[P, R] | None,
    parallel: Callable[P, R] | None,
    attributes: Callable[..., Mapping[str, Any] | None] | None,
    compare: Callable[[Any, Any], object],
    compare_timeout: float | None,
    fallback: bool,
    redact: Redactor | None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    if (legacy is None) == (parallel is None):
        raise TypeError("switch() takes exactly one of legacy= or parallel=")
    other = cast("Callable[P, R]", legacy if legacy is not None else parallel)
    if not callable(other):
        raise TypeError(f"switch(): legacy=/parallel= must be a function, got a {type(other).__name__}")
    decorated_is_parallel = legacy is not None
    name = label(flag)
    key_attribute = key if isinstance(key, str) else None
    problem = report

    def decorator(fn: Callable[P, R]) -> Callable[P, R]:
        get_key = _key_getter(name, key, fn, problem)

        def context(a: Any, k: Any) -> tuple[str | None, Mapping[str, Any] | None]:
            subject = get_key(a, k)
            attrs = None
            if attributes is not None:
                try:
                    attrs = attributes(*a, **k)
                except Exception as exc:
                    problem(f"switch:attributes:{name}",
                            f"switch({name!r}): the attributes function raised {type(exc).__name__}; "
                            "deciding without attributes", "switch", exc)
            if key_attribute is not None and subject is not None:
                # ``key="tenant_id"`` names what the key is: a flag bucketed (or a cohort matched)
                # by ``tenant_id`` sees it too, unless the attributes function gave its own.
                try:
                    if attrs is None:
                        attrs = {key_attribute: subject}
                    elif isinstance(attrs, Mapping) and key_attribute not in attrs:
                        attrs = {**attrs, key_attribute: subject}
                except Exception:  # an odd mapping: decide with it as it is (the engine copes)
                    pass
            return subject, attrs

        if inspect.iscoroutinefunction(fn):
            afn = cast("Callable[..., Awaitable[Any]]", fn)
            aother = cast("Callable[..., Awaitable[Any]]", other)

            @functools.wraps(fn)
            async def async_wrapper(*a: Any, **k: Any) -> Any:
                subject, attrs = context(a, k)
                new = functools.partial(afn, *a, **k)
                old = functools.partial(aother, *a, **k)
                return await client.arun(
                    flag, subject, attrs,
                    legacy=old if decorated_is_parallel else new,
                    parallel=new if decorated_is_parallel else old,
                    compare=compare, compare_timeout=compare_timeout, fallback=fallback, redact=redact,
                )

            return cast("Callable[P, R]", async_wrapper)

        @functools.wraps(fn)
        def wrapper(*a: P.args, **k: P.kwargs) -> R:
            subject, attrs = context(a, k)
            new: Callable[[], R] = functools.partial(fn, *a, **k)
            old: Callable[[], R] = functools.partial(other, *a, **k)
            result: R = client.run(
                flag, subject, attrs,
                legacy=old if decorated_is_parallel else new,
                parallel=new if decorated_is_parallel else old,
                compare=compare, compare_timeout=compare_timeout, fallback=fallback, redact=redact,
            )
            return result

        return wrapper

    return decorator


def _key_getter(
    name: str,
    key: str | Callable[..., str | None],
    fn: Callable[..., Any],
    problem: Callable[..., None],
) -> Callable[[Any, Any], str | None]:
    """How a ``switch`` wrapper finds the subject's key among its call's arguments."""
    if isinstance(key, str):
        arg = key
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):  # pragma: no cover - builtins
            params = []
        names = [p.name for p in params]
        if arg not in names:
            raise TypeError(f"switch({name!r}): {getattr(fn, '__qualname__', fn)} has no argument {arg!r}")
        param = params[names.index(arg)]
        pos = (
            names.index(arg)
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD)
            else None
        )

        def by_name(a: Any, k: Any) -> str | None:
            if arg in k:
                value = k[arg]
            elif pos is not None and pos < len(a):
                value = a[pos]
            else:
                return None
            return _key_text(value, name, problem)

        return by_name
    if not callable(key):
        raise TypeError(f"switch({name!r}): key= must be an argument name or a function, "
                        f"got a {type(key).__name__}")
    keyfn = key

    def by_function(a: Any, k: Any) -> str | None:
        try:
            value = keyfn(*a, **k)
        except Exception as exc:
            problem(f"switch:key:{name}",
                    f"switch({name!r}): the key function raised {type(exc).__name__}; deciding without a key "
                    "(legacy)", "switch", exc)
            return None
        return _key_text(value, name, problem)

    return by_function


def _key_text(value: object, name: str, problem: Callable[..., None]) -> str | None:
    if value is None or value.__class__ is str:
        return cast("str | None", value)
    try:
        return str(value)
    except Exception as exc:
        problem(f"switch:key:{name}",
                f"switch({name!r}): the key's str() raised {type(exc).__name__}; deciding without a key (legacy)",
                "switch", exc)
        return None
