"""The lean ASGI path: SDK and OpenFeature routes run through a short middleware chain of their own.

Django has one middleware list for every request. The SDK routes (``/api/v1/sdk/…``, ``/ofrep/v1/…``)
authenticate by header only, never by cookie or session, and answer JSON (or an event stream), so
most of the project's middleware does nothing for them but still runs on every poll: sessions,
CSRF (the views are exempt), authentication of a user, messages, clickjacking and CSP headers (for
pages), htmx, the static files lookup, the health probes. ``LeanASGIHandler`` is Django's own ASGI
handler built from ``SDK_MIDDLEWARE`` (``config/settings.py``) instead; what the SDK contract needs
stays: the security headers and HTTPS redirect, the request id, the request log line and
Prometheus counts, the refusal of non-text charsets before a body is read, ``Content-Length`` on
every answer (clients check a body against it), and the JSON ``503`` naming a service that is
down. URL resolution, views, errors and responses are exactly those of the full handler:
``sdk_asgi_application`` only picks the chain by path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler

Scope = dict[str, Any]  # the types Django's ASGIHandler.__call__ declares
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SDK_PREFIXES = ("/api/v1/sdk/", "/ofrep/v1/")


class LeanASGIHandler(ASGIHandler):
    """Django's ASGI handler with the ``SDK_MIDDLEWARE`` chain."""

    def load_middleware(self, is_async: bool = False) -> None:
        # Django builds the chain from settings.MIDDLEWARE; it reads it once, here, when the handler
        # is made (at import of the ASGI module, before any request).
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = list(settings.SDK_MIDDLEWARE)
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


async def lifespan(receive: Receive, send: Send) -> None:
    """The ASGI lifespan of a web process: at startup, with Redis, its ruleset listener starts (one
    pub/sub subscription per process), so the process's copy of the current versions hears every
    change from the first request on (``rollout/delivery/local.py``); at shutdown it stops."""
    from common.redis import redis_url
    from rollout.delivery.broadcast import broadcaster

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if redis_url():
                broadcaster.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await broadcaster.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


def sdk_asgi_application(full: ASGIApp, lean: ASGIApp | None = None) -> ASGIApp:
    """An ASGI application sending HTTP requests for the SDK routes to the lean chain, the lifespan
    to ``lifespan``, everything else (the UI, the management API) to ``full``."""
    lean_app: ASGIApp = lean if lean is not None else LeanASGIHandler()

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(SDK_PREFIXES):
            await lean_app(scope, receive, send)
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)
        else:
            await full(scope, receive, send)

    return application
