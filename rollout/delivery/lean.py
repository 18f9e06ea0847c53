"""Lean SDK endpoints: plain Django views with the SDK API's auth, throttling and error body.

The evaluate and OFREP endpoints sit on every request path of the services that call them, so
they skip DRF's request wrapping, content negotiation and renderers (measured in
``bench/evaluate``). What they keep is the contract: the SDK key (``Authorization: Bearer`` or
``X-API-Key``) resolved through the same cached ``sdk_principal``, the same per-key throttle
budget for every SDK endpoint (``sdk_throttle_wait``), and the one error body. ``described`` hangs an
``APIView`` subclass on the view function, which is all drf-spectacular needs to list it in
``/api/v1/schema/``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import math
import time
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, TypeVar, cast

import redis
from asgiref.sync import SyncToAsync, iscoroutinefunction, sync_to_async
from django.core.cache import cache
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import IsAuthenticated
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from common.auth import bearer
from common.conf import get_setting
from common.errors import error_body
from common.jsonio import JsonInputError, loads
from common.redis import get_async_redis, get_redis
from common.secrets import digest
from rollout.access.auth import (
    NotLocal,
    SdkKeyAuthentication,
    SdkPrincipal,
    sdk_key_local_expiry,
    sdk_principal,
    sdk_principal_local,
)
from rollout.delivery import local
from rollout.delivery.local import version_cache_key

AUTH_MESSAGE = "Missing, invalid or revoked SDK key."
WWW_AUTHENTICATE = 'Bearer realm="sdk"'
_JSON_SEPARATORS = (",", ":")

_View = TypeVar("_View", bound=Callable[..., Any])  # a view function, plain or async
T = TypeVar("T")


class BadRequest(Exception):
    """Input the endpoint refuses; ``field`` names the bad part (dotted path)."""

    def __init__(self, field: str, message: str, *, code: str = "invalid") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.code = code


def sdk_throttle_wait(ident: str) -> float | None:
    """Count one request against the key's ``sdk`` rate; seconds to wait when over it, else None.

    A fixed window per key: one counter per window in the shared cache (Redis when configured),
    so the cost stays one round trip whatever the rate (a sliding log would store and rewrite
    every timestamp of the window on every request).
    """
    return _count_request(ident, None)[0]


def _window(ident: str) -> tuple[int | None, int | None, float, int, str]:
    """The ``sdk`` rate (requests, seconds), now, the fixed window's number and its counter's key."""
    rate = api_settings.DEFAULT_THROTTLE_RATES.get("sdk")
    num, duration = SimpleRateThrottle.parse_rate(None, rate) if rate else (None, None)  # type: ignore[arg-type]  # never reads self
    now = time.time()
    window = int(now // duration) if duration else 0
    return num, duration, now, window, f"throttle:sdk:{ident}:{window}"


def _queue(pipe: Any, key: str, num: int | None, duration: int | None, environment: str | None) -> None:
    """The round trip's commands, on a sync or an asyncio pipeline alike."""
    if num is not None and duration is not None:
        pipe.incr(f"turnout:{key}")
        pipe.expire(f"turnout:{key}", duration + 1, nx=True)
    if environment is not None:
        pipe.get(version_cache_key(environment))


def _outcome(results: list[Any] | None, count: int, num: int | None, duration: int | None, now: float,
             window: int, environment: str | None) -> tuple[float | None, int | None]:
    version: int | None = None
    if results is not None:
        if num is not None:
            count = results[0]
        if environment is not None and results[-1] is not None:
            version = int(results[-1])
    if num is not None and duration is not None and count > num:
        return (window + 1) * duration - now, version
    return None, version


def _count_request(ident: str, environment: str | None) -> tuple[float | None, int | None]:
    """The throttle count, and with Redis the environment's cached ruleset version, in ONE round trip."""
    num, duration, now, window, key = _window(ident)
    client = get_redis()
    results: list[Any] | None = None
    count = 0
    if client is not None:
        pipe = client.pipeline(transaction=False)
        _queue(pipe, key, num, duration, environment)
        try:
            results = pipe.execute()
        except redis.RedisError:
            return None, None  # Redis away: SDK keys are not counted (fail open), the database has the version
    elif num is not None and duration is not None:
        try:
            count = cache.incr(key)
        except ValueError:
            count = 1 if cache.add(key, 1, timeout=duration + 1) else cache.incr(key)
    return _outcome(results, count, num, duration, now, window, environment)


async def _acount_request(request: HttpRequest, ident: str, environment: str | None,
                          ) -> tuple[float | None, int | None]:
    """``_count_request`` from an async view served by ASGI: counted in the process and the version
    from the process's copy (``rollout/delivery/local.py``), so most requests make no round trip at
    all; when the count is due to be added to the shared counter, the request would cross the limit,
    or the copy of the version has expired, ONE pipelined round trip on the event loop's own
    ``redis.asyncio`` client does both. Otherwise (a WSGI server or the test client runs an async
    view on a loop made for that one request, and embedded mode counts in the local-memory cache)
    the sync ``_count_request`` on the request's thread."""
    client = get_async_redis() if isinstance(request, ASGIRequest) else None
    if client is None:
        return await run_detached(_count_request, ident, environment, release=False)
    num, duration, now, window, key = _window(ident)
    mono = time.monotonic()
    version = local.versions.get(environment, mono) if environment is not None else None
    send = local.ALLOW
    if num is not None and duration is not None:
        send = local.throttle.count(ident, num, window, mono)
        if send == local.REFUSE:
            return (window + 1) * duration - now, version
    if send == local.ALLOW and (environment is None or version is not None):
        return None, version
    pipe = client.pipeline(transaction=False)
    if send > 0:
        pipe.incrby(f"turnout:{key}", send)
        pipe.expire(f"turnout:{key}", (duration or 0) + 1, nx=True)
    if environment is not None:
        pipe.get(version_cache_key(environment))
    try:
        results = await pipe.execute()
    except redis.RedisError:
        if send > 0:
            local.throttle.failed(ident, window, send, mono)
        return None, version  # as in _count_request: not counted (fail open); the database has the version
    if environment is not None and results[-1] is not None:
        version = local.versions.offer(environment, int(results[-1]), mono)
    if send > 0 and num is not None and duration is not None:
        total = int(results[0])
        local.throttle.synced(ident, window, total, mono)
        if total > num:
            return (window + 1) * duration - now, version
    return None, version


def releasing(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` for a thread, giving its database connection back as soon as it returns: a stream
    lives for hours and must not hold a connection (a pool slot) while it waits, or a few hundred
    idle streams exhaust the pool or PostgreSQL itself."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            for connection in connections.all(initialized_only=True):
                if not connection.in_atomic_block:  # (a test's transaction is left alone)
                    connection.close()

    return run


async def run_detached(fn: Callable[..., T], *args: Any, release: bool = True, **kwargs: Any) -> T:
    """``fn(*args)`` in a thread that is not the request's own, with its connection released.

    Django's ASGI handler gives every request a thread of its own for ``sync_to_async`` calls, kept
    until the request ends: for an SDK stream that is hours, so 10,000 streams that each looked
    something up would each keep an idle thread. This runs ``fn`` where a call made outside any
    request would run (the process's one thread for such calls; under a test's ``async_to_sync``,
    the test's thread, inside its transaction)."""
    context = contextvars.copy_context()
    context.run(SyncToAsync.thread_sensitive_context.set, None)  # type: ignore[arg-type]  # "no request's thread"
    call = sync_to_async(releasing(fn) if release else fn)
    task = asyncio.get_running_loop().create_task(call(*args, **kwargs), context=context)
    return await task


_flights: dict[tuple[asyncio.AbstractEventLoop, Hashable], asyncio.Task[Any]] = {}


async def single_flight(key: Hashable, start: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``await start()``, except that while one is running for ``key`` in this process every other
    caller awaits that one: when a new version appears, the requests that meet it at once read it
    once, not once each, one after the other in the process's one thread for such reads."""
    loop = asyncio.get_running_loop()
    memo = (loop, key)
    task = _flights.get(memo)
    if task is None:
        task = loop.create_task(start())
        _flights[memo] = task
        task.add_done_callback(lambda _: _flights.pop(memo, None))
    result: T = await asyncio.shield(task)
    return result


_lookups: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Task[SdkPrincipal | None]] = {}
REFRESH_AHEAD = 0.2  # the last fifth of the copy's life: renewed in the background, still answered from


def _lookup(value: str | None, *, fresh: bool) -> asyncio.Task[SdkPrincipal | None]:
    loop = asyncio.get_running_loop()
    memo = (loop, digest(value or ""))
    task = _lookups.get(memo)
    if task is None:
        task = loop.create_task(run_detached(sdk_principal, value, fresh=fresh))
        _lookups[memo] = task
        task.add_done_callback(lambda _: _lookups.pop(memo, None))
    return task


async def asdk_principal(value: str | None) -> SdkPrincipal | None:
    """``sdk_principal`` on the event loop: the process-local copy without any I/O; on a miss ONE
    lookup per key and process at a time (every request or stream heartbeat asking meanwhile awaits
    the same one), outside the request's thread (``run_detached``). In the last fifth of the copy's
    life (``SDK_KEY_LOCAL_SECONDS``) that lookup starts in the background while requests are still
    answered from the copy, so a busy key never makes its requests wait for it; the staleness
    stays what it was (the copy is never used past its expiry)."""
    principal = sdk_principal_local(value)
    if not isinstance(principal, NotLocal):
        if principal is not None:
            expires = sdk_key_local_expiry(value)
            ahead = float(get_setting("SDK_KEY_LOCAL_SECONDS")) * REFRESH_AHEAD
            if expires is not None and expires - time.monotonic() < ahead:
                _lookup(value, fresh=True)
        return principal
    return await asyncio.shield(_lookup(value, fresh=False))


def retry_after_seconds(wait: float) -> str:
    """Retry-After in whole seconds (never 0: a client told 0 retries at once)."""
    return str(max(1, math.ceil(wait)))


def json_response(data: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(data, separators=_JSON_SEPARATORS, ensure_ascii=False),
                        content_type="application/json", status=status)


def error_response(status: int, code: str, message: str, fields: dict[str, list[str]] | None = None,
                   **extra: Any) -> JsonResponse:
    return JsonResponse(error_body(code, message, fields, **extra), status=status)


def unauthorized() -> HttpResponse:
    response = error_response(401, "authentication_failed", AUTH_MESSAGE)
    response["WWW-Authenticate"] = WWW_AUTHENTICATE
    return response


def throttled(wait: float) -> HttpResponse:
    seconds = retry_after_seconds(wait)
    response = error_response(429, "throttled", f"Request was throttled. Expected available in {seconds} seconds.",
                              retry_after=int(seconds))
    response["Retry-After"] = seconds
    return response


def authenticate(request: HttpRequest) -> SdkPrincipal | float | None:
    """The request's SDK principal; a float (seconds to wait) when throttled; None when not authenticated."""
    result = authenticate_for_evaluation(request)
    return result if result is None or isinstance(result, float) else result[0]


def authenticate_for_evaluation(request: HttpRequest) -> tuple[SdkPrincipal, int | None] | float | None:
    """Like ``authenticate``, with the environment's cached ruleset version (None: ask the database)
    fetched in the throttle's round trip."""
    principal = sdk_principal(bearer(request))
    if principal is None:
        return None
    wait, version = _count_request(principal.prefix, principal.environment)
    if wait is not None:
        return wait
    return principal, version


async def aauthenticate_for_evaluation(request: HttpRequest) -> tuple[SdkPrincipal, int | None] | float | None:
    """``authenticate_for_evaluation`` for an async view: no thread unless the key has to be looked
    up (a miss of the process-local copy, or its ``last_used`` bookkeeping is due: one lookup per
    key and process at a time), and under ASGI no round trip unless one is due
    (``_acount_request``)."""
    principal = await asdk_principal(bearer(request))
    if principal is None:
        return None
    wait, version = await _acount_request(request, principal.prefix, principal.environment)
    if wait is not None:
        return wait
    return principal, version


def _guarded(result: tuple[SdkPrincipal, int | None] | float | None) -> tuple[SdkPrincipal, int | None] | HttpResponse:
    if result is None:
        return unauthorized()
    if isinstance(result, float):
        return throttled(result)
    return result


async def asdk_guard(request: HttpRequest) -> tuple[SdkPrincipal, int | None] | HttpResponse:
    """``sdk_guard`` for an async view."""
    return _guarded(await aauthenticate_for_evaluation(request))


def sdk_guard(request: HttpRequest) -> tuple[SdkPrincipal, int | None] | HttpResponse:
    """Auth then throttle, answering in the SDK API's error body; the principal and the cached
    ruleset version of its environment (or None)."""
    return _guarded(authenticate_for_evaluation(request))


def read_json(request: HttpRequest, *, max_bytes: int | None = None) -> Any:
    """The request body as JSON; BadRequest(code="parse_error") when it is not JSON or nests too deeply
    (``common.jsonio``), code="too_large" when it is too large."""
    limit = max_bytes if max_bytes is not None else get_setting("EVALUATE_MAX_BODY")
    length = request.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > limit:
        raise BadRequest("body", f"is larger than {limit} bytes", code="too_large")
    body = request.body
    if len(body) > limit:
        raise BadRequest("body", f"is larger than {limit} bytes", code="too_large")
    try:
        return loads(body)
    except JsonInputError as exc:
        raise BadRequest("body", exc.message, code="parse_error") from None


def bad_request(exc: BadRequest) -> HttpResponse:
    status = 413 if exc.code == "too_large" else 400
    return error_response(status, exc.code, str(exc), {exc.field: [exc.message]})


def method_not_allowed(method: str, allowed: list[str]) -> HttpResponse:
    response = error_response(405, "method_not_allowed", f'Method "{method}" not allowed.')
    response["Allow"] = ", ".join(allowed)
    return response


class SdkDescribedView(APIView):
    """What drf-spectacular reads for a lean SDK endpoint (never dispatched itself)."""

    authentication_classes = [SdkKeyAuthentication]
    permission_classes = [IsAuthenticated]


def described(methods: dict[str, dict[str, Any]], *, base: type[APIView] = SdkDescribedView,
              name: str | None = None, options: Callable[[HttpRequest], HttpResponse] | None = None,
              ) -> Callable[[_View], _View]:
    """Route a plain view function and describe it for drf-spectacular.

    ``methods`` maps an HTTP method to its ``extend_schema`` arguments; other methods answer 405,
    except OPTIONS when ``options`` answers it (a CORS preflight). The function is CSRF-exempt:
    these endpoints authenticate by header only, never by cookie.
    """

    def wrap(func: _View) -> _View:
        attrs: dict[str, Any] = {"__module__": func.__module__, "__doc__": func.__doc__}
        for method, schema in methods.items():

            def handler(self: APIView, request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
                response: HttpResponse = func(request, *args, **kwargs)  # func is bound as Callable[..., Any]
                return response

            attrs[method.lower()] = extend_schema(**schema)(handler)
        cls = type(name or "".join(part.title() for part in func.__name__.split("_")) + "View", (base,), attrs)
        allowed = [m.upper() for m in methods]

        view: Callable[..., Any]
        if iscoroutinefunction(func):

            async def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                if request.method not in allowed:
                    if request.method == "OPTIONS" and options is not None:
                        return options(request)
                    return method_not_allowed(request.method or "", allowed)
                response: HttpResponse = await func(request, *args, **kwargs)  # func is bound as Callable[..., Any]
                return response
        else:

            def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                if request.method not in allowed:
                    if request.method == "OPTIONS" and options is not None:
                        return options(request)
                    return method_not_allowed(request.method or "", allowed)
                response: HttpResponse = func(request, *args, **kwargs)  # as above
                return response

        view.__name__ = func.__name__
        view.__doc__ = func.__doc__
        # What drf-spectacular reads off a view function (as off View.as_view()'s); no type declares them.
        view.cls = cls  # type: ignore[union-attr]  # see above: no type declares them
        view.initkwargs = {}  # type: ignore[union-attr]  # as above
        # ``view`` takes func's arguments and answers as func does (or 405), sync or async alike.
        return cast(_View, csrf_exempt(view))

    return wrap
