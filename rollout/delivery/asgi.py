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

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http.response import HttpResponseBase
from django.urls import Resolver404, get_resolver, set_script_prefix

from common.redis import redis_url
from rollout.delivery.broadcast import broadcaster
from rollout.delivery.stream import EventStreamResponse, OpenStream

Scope = dict[str, Any]  # the types Django's ASGIHandler.__call__ declares
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SDK_PREFIXES = ("/api/v1/sdk/", "/ofrep/v1/")


class LeanASGIHandler(ASGIHandler):
    """Django's ASGI handler with the ``SDK_MIDDLEWARE`` chain.

    Django's handler gives every request a thread of its own for the sync work done on its behalf
    (``ThreadSensitiveContext``: at least the ``request_started`` signal's receivers), made when the
    request starts and kept until it ends. For an async SDK view that is pure overhead — a thread
    started per poll — and for a stream it is an idle thread held for hours, per stream. Requests
    routed to an async view therefore run without one: what little sync work they do (the signal
    receivers, a database read when the process meets a new version) runs on the process's shared
    thread for such calls. Sync views (bulk evaluation, metrics) keep a thread per request.
    """

    _async_paths: dict[str, bool]

    def load_middleware(self, is_async: bool = False) -> None:
        # Django builds the chain from settings.MIDDLEWARE; it reads it once, here, when the handler
        # is made (at import of the ASGI module, before any request).
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = list(settings.SDK_MIDDLEWARE)
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full
        self._async_paths = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._routes_to_async_view(scope):
            await self.handle_on_loop(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def handle_on_loop(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Django's ``ASGIHandler.handle`` for a request routed to an async view, with no thread hop:
        the ``request_started`` / ``request_finished`` signals are sent and the response closed on
        the event loop. Their receivers are Django's tidying of database connections and caches, which
        has nothing to do on the loop's thread (the SDK views never touch the database there: what
        they read runs in a thread that releases its connection, ``lean.run_detached``); Django's
        own ``handle`` sends them through a thread each (``sync_to_async``)."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            assert error_response is not None  # (create_request answers one or the other)
            body_file.close()
            await self.send_response(error_response, send)
            error_response.close()
            return

        async def process_request(request: Any, send: Send) -> Any:
            response = await self.run_get_response(request)
            if isinstance(response, EventStreamResponse):
                return response  # served below, by the process's fan-out
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client went away while the answer was sent
            return response

        # As Django's: the disconnect listener first, so a client that leaves cancels the view.
        listener = asyncio.create_task(self.listen_for_disconnect(receive))
        processor = asyncio.create_task(process_request(request, send))
        del request  # (an open stream keeps nothing of it)
        tasks = [listener, processor]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if (not listener.done() and processor.done() and not processor.cancelled()
                and processor.exception() is None and isinstance(processor.result(), EventStreamResponse)):
            # An open stream keeps nothing of the request, its middleware or its response: the response
            # is closed (the request's resources released, ``request_finished`` sent) once what the
            # stream needs of it is taken, and only the server's ``send`` and the listener remain.
            response = processor.result()
            start = {"type": "http.response.start", "status": response.status_code, "headers": _headers(response)}
            opened = response.opening()
            response.close()
            body_file.close()
            del response, processor, tasks, process_request, body_file, error_response, scope
            await serve_event_stream(opened, start, send, listener)
            return
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            signals.request_finished.send(sender=self.__class__)
        else:
            response.close()
        body_file.close()

    def _routes_to_async_view(self, scope: Scope) -> bool:
        path = str(scope.get("path", ""))
        found = self._async_paths.get(path)
        if found is None:
            root = str(scope.get("root_path", ""))
            try:
                match = get_resolver().resolve(path[len(root):] if root and path.startswith(root) else path)
            except Resolver404:
                found = False
            else:
                found = iscoroutinefunction(match.func)
            if len(self._async_paths) > 10_000:
                self._async_paths.clear()
            self._async_paths[path] = found
        return found


async def serve_event_stream(opened: OpenStream, start: Mapping[str, Any], send: Send,
                             left: asyncio.Task[None]) -> None:
    """An SDK stream: its headers, then the stream is the process's fan-out's until ``left`` (the
    disconnect listener) ends: the client went away, or the stream was ended, which completes the
    response."""
    try:
        await send(start)
        await opened.serve(send, left)
    finally:
        if not left.done():
            left.cancel()
        try:
            await left
        except (asyncio.CancelledError, RequestAborted):
            pass


def _headers(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    """A response's headers as ASGI wants them (as Django's ``ASGIHandler.send_response``)."""
    headers = [(str(name).encode("ascii"), str(value).encode("latin1")) for name, value in response.items()]
    headers += [(b"Set-Cookie", cookie.output(header="").encode("ascii").strip())
                for cookie in response.cookies.values()]
    return headers


async def lifespan(receive: Receive, send: Send) -> None:
    """The ASGI lifespan of a web process: at startup, with Redis, its ruleset listener starts (one
    pub/sub subscription per process), so the process's copy of the current versions hears every
    change from the first request on (``rollout/delivery/local.py``); at shutdown it stops."""

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


def _app_path(scope: Scope) -> str:
    """The request's path within the application: an ASGI ``path`` includes the ``root_path`` a
    deployment under a prefix (``uvicorn --root-path /turnout``) adds."""
    path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
    return path[len(root):] if root and path.startswith(root) else path


def sdk_asgi_application(full: ASGIApp, lean: ASGIApp | None = None) -> ASGIApp:
    """An ASGI application sending HTTP requests for the SDK routes to the lean chain, the lifespan
    to ``lifespan``, everything else (the UI, the management API) to ``full``."""
    lean_app: ASGIApp = lean if lean is not None else LeanASGIHandler()

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _app_path(scope).startswith(SDK_PREFIXES):
            await lean_app(scope, receive, send)
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)
        else:
            await full(scope, receive, send)

    return application
