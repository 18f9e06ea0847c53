from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from csp.middleware import CSPMiddleware
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware as _WhiteNoiseMiddleware

from common import metrics
from common.charsets import refused_charset
from common.conf import get_setting
from common.errors import error_body
from common.hybrid import HybridMiddleware
from common.request_context import request_id_var

request_logger = logging.getLogger("turnout.http")

_VALID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def client_address(request: Any) -> str:
    """The address of the client a request came from: the one place that reads it.

    ``TURNOUT_TRUSTED_PROXIES`` (default 0) is how many reverse proxies in front of the server append
    to ``X-Forwarded-For``. With 0 the header is ignored (anyone can send it) and the address is the
    connection's peer (``REMOTE_ADDR``); with N the address is the N-th entry from the right: the one
    the outermost trusted proxy saw, which the client cannot choose. DRF's ``NUM_PROXIES`` is set from
    the same setting, so throttles that use DRF's ``get_ident`` agree with this.
    """
    meta = getattr(request, "META", {})
    remote = str(meta.get("REMOTE_ADDR") or "")
    proxies = int(get_setting("TRUSTED_PROXIES") or 0)
    forwarded = str(meta.get("HTTP_X_FORWARDED_FOR") or "")
    if proxies > 0 and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            remote = hops[-min(proxies, len(hops))]
    return remote[:64]


def _request_id(request: HttpRequest) -> str:
    incoming = request.headers.get("X-Request-ID", "")
    return incoming if _VALID.match(incoming) else uuid.uuid4().hex


class RequestIdMiddleware(HybridMiddleware):
    """Gives every request an id (or keeps a sane incoming ``X-Request-ID``) and echoes it back."""

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self.__acall__(request)
        rid = _request_id(request)
        request.request_id = rid  # type: ignore[attr-defined]  # our attribute on Django's request class
        token = request_id_var.set(rid)
        try:
            response = self.respond(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = rid
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        rid = _request_id(request)
        request.request_id = rid  # type: ignore[attr-defined]  # our attribute on Django's request class
        token = request_id_var.set(rid)
        try:
            response = await self.arespond(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = rid
        return response


def _route(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    return match.route if match is not None and match.route else "unmatched"


class RequestLogMiddleware(HybridMiddleware):
    """Counts and times every request for ``/metrics`` (by route pattern, never the raw path) and
    writes one ``http.request`` log line (with the request id) when ``LOG_REQUESTS`` is on."""

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self.__acall__(request)
        start = time.perf_counter()
        response = self.respond(request)
        self._record(request, response, start)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        start = time.perf_counter()
        response = await self.arespond(request)
        self._record(request, response, start)
        return response

    def _record(self, request: HttpRequest, response: HttpResponse, start: float) -> None:
        elapsed = time.perf_counter() - start
        route = _route(request)
        method = request.method or "GET"
        metrics.HTTP_REQUESTS.labels(method=method, route=route, status=str(response.status_code)).inc()
        metrics.HTTP_LATENCY.labels(method=method, route=route).observe(elapsed)
        if getattr(settings, "LOG_REQUESTS", False):
            request_logger.info("http.request", extra={
                "method": method, "route": route, "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 2),
            })


class WhiteNoiseMiddleware(_WhiteNoiseMiddleware):  # type: ignore[misc]  # whitenoise has no type information
    """WhiteNoise's middleware, async-capable: the same static files with the same headers.

    WhiteNoise's own is sync-only, and one sync-only middleware turns the whole chain under ASGI
    into a trip through a thread for every request (async views included). Here a request that is
    not for a static file goes straight on; serving a file (which opens it, and with autorefresh
    looks it up on disk) runs in a thread as before.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]],
                 *args: Any, **kwargs: Any) -> None:
        super().__init__(get_response, *args, **kwargs)
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        response: HttpResponse = super().__call__(request)  # whitenoise is untyped
        return response

    def _static(self, request: HttpRequest) -> HttpResponse | None:
        static_file = self.find_file(request.path_info) if self.autorefresh else self.files.get(request.path_info)
        return None if static_file is None else self.serve(static_file, request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if self.autorefresh or request.path_info in self.files:
            response = await sync_to_async(self._static)(request)
            if response is not None:
                return response
        passed: HttpResponse = await self.get_response(request)  # whitenoise is untyped
        return passed


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware (``CONTENT_SECURITY_POLICY``), async-capable.

    django-csp's is a ``MiddlewareMixin`` whose async path runs both hooks in a thread; they only set
    an attribute and a header, so here they run inline and async views stay on the event loop.
    """

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        self.process_request(request)
        response = await cast(Awaitable[HttpResponseBase], self.get_response(request))  # the async path
        return self.process_response(request, response)


def _charset_refused(request: HttpRequest) -> HttpResponse | None:
    name = refused_charset(getattr(request, "content_params", None))
    if name is None:
        return None
    message = f'Unsupported charset "{name[:40]}" in the request Content-Type: it is not a text encoding.'
    return JsonResponse(error_body("parse_error", message, {"Content-Type": [message]}), status=400)


class UnsupportedCharsetMiddleware(HybridMiddleware):
    """A request whose ``Content-Type`` names a codec that is not a text encoding (``rot13``, ``hex``)
    gets a JSON 400 before anything reads its body (Django would decode form fields with it: a 500)."""

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self.__acall__(request)
        return _charset_refused(request) or self.respond(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        return _charset_refused(request) or await self.arespond(request)
