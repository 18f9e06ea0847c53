"""``GET /api/v1/sdk/stream``: server-sent events announcing new ruleset versions.

An async view under ASGI: the view authenticates and answers an ``EventStreamResponse``; the open
stream is then the process's to write to (``rollout/delivery/fanout.py``: one pass per change, one
heartbeat schedule), and its coroutine only waits for the client to leave, so one web process holds
10,000 of them without a thread each (``bench/README.md``). Format and reconnection rules are in
docs/sdk-protocol.md.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any

from django.http import HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from common.auth import bearer
from common.schema import ERROR_RESPONSES
from rollout.delivery.fanout import EventStream, Send, close_stream, open_stream
from rollout.delivery.lean import (
    aauthenticate_for_evaluation,
    described,
    run_detached,
    single_flight,
    throttled,
    unauthorized,
)
from rollout.delivery.ruleset import current_version


class OpenStream:
    """What an open stream needs of its request: its environment, what it asked for, its key (for the
    heartbeats' checks) and the version it was told on connecting."""

    __slots__ = ("environment", "environment_id", "refs", "secret", "version")

    def __init__(self, *, environment: str, version: int, secret: str | None, environment_id: int | None,
                 refs: bool) -> None:
        self.environment = environment
        self.version = version
        self.secret = secret
        self.environment_id = environment_id
        self.refs = refs

    def stream(self, send: Send) -> EventStream:
        return EventStream(environment=self.environment, send=send, secret=self.secret,
                           environment_id=self.environment_id, refs=self.refs)

    async def serve(self, send: Send, left: asyncio.Future[Any]) -> None:
        """Run the stream on the server's ``send`` until ``left`` (the client went away, or the stream
        was ended and so completed the response) is done."""
        stream = self.stream(send)
        open_stream(stream, self.version)
        try:
            await left
        except Exception:  # (RequestAborted: the client left; the handler deals with ``left``)
            pass
        finally:
            close_stream(stream)


class EventStreamResponse(StreamingHttpResponse):
    """The stream's response. Served by Django's handler it is a streaming response like any other
    (its events pass through an in-process queue); the SDK routes' own handler
    (``rollout/delivery/asgi.py``) instead sends its headers and then hands the server's ``send`` to
    the process's fan-out (``OpenStream.serve``), keeping nothing of the request or the response."""

    def __init__(self, opened: OpenStream) -> None:
        self._opened = opened
        super().__init__(_queued(opened), content_type="text/event-stream")
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"  # nginx: pass events through at once

    def opening(self) -> OpenStream:
        return self._opened



class _Handoff:
    """A stream's events on their way to Django's streaming response, one at a time: a write made
    while the previous one is not yet taken waits, as a server's ``send`` waits while its flow control
    holds writing back, so the fan-out brings a slow client to the newest version once it reads
    again (``fanout._written``) instead of queuing every version meanwhile without bound."""

    __slots__ = ("gone", "items", "ready", "room")

    def __init__(self) -> None:
        self.items: deque[bytes | None] = deque()
        self.room = asyncio.Event()
        self.room.set()
        self.ready = asyncio.Event()
        self.gone = False

    async def send(self, message: Mapping[str, Any]) -> None:
        while self.items and not self.gone:
            self.room.clear()
            await self.room.wait()
        if not self.gone:
            self.items.append(message["body"] if message.get("more_body") else None)
            self.ready.set()

    async def get(self) -> bytes | None:
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        item = self.items.popleft()
        self.room.set()
        return item

    def close(self) -> None:
        """The response is done with: a write still waiting returns (as a server's does once its client left)."""
        self.gone = True
        self.room.set()


async def _queued(opened: OpenStream) -> AsyncIterator[bytes]:
    """The stream as a streaming response's content: its events are handed over one at a time
    (``_Handoff``). (A function of its own, not a method: the response and its content do not hold
    each other, so a response the SDK routes' handler serves directly is freed the moment it is done
    with, without a collection.)"""
    handoff = _Handoff()
    stream = opened.stream(handoff.send)
    open_stream(stream, opened.version)
    try:
        while (body := await handoff.get()) is not None:
            yield body
    finally:  # the client went away (the ASGI handler cancels us) or the stream was ended
        close_stream(stream)
        handoff.close()


@described({"GET": {
    "operation_id": "sdk_stream",
    "summary": "Server-sent events: the current ruleset version on connect, then each new one",
    "description": "`text/event-stream`. Events are `event: ruleset`, `id: <version>`, "
                   "`data: {\"environment\", \"version\"}`; a `: keep-alive` comment every 15 s when idle.",
    "parameters": [OpenApiParameter("Last-Event-ID", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False),
                   OpenApiParameter("patches", OpenApiTypes.STR, OpenApiParameter.QUERY, required=False,
                                    description="`1`: send a change as an `event: patch` (the changed flags "
                                                "and cohorts) when it can be; docs/sdk-protocol.md")],
    "responses": {(200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description="The event stream"),
                  **ERROR_RESPONSES},
    "tags": ["sdk"],
}})
async def stream(request: HttpRequest) -> HttpResponseBase:
    """Connecting costs no thread and, with Redis, usually no round trip: the key, the throttle and
    the current version come from the process's copies (``aauthenticate_for_evaluation``)."""
    result = await aauthenticate_for_evaluation(request)
    if result is None:
        return unauthorized()
    if isinstance(result, float):
        return throttled(result)
    principal, version = result
    environment = principal.environment
    if version is None:  # no copy in the process (embedded mode, or Redis does not have it): the database
        # (one read per environment and process at a time: a web process restarting under thousands of
        # streams has them all reconnect at once, and they would otherwise queue for the one thread)
        environment_id = principal.environment_id
        current = await single_flight(("current_version", environment_id),
                                      lambda: run_detached(current_version, environment_id))
        if current is None:
            return unauthorized()
        environment, version = current
    # (the stream, once open, is sent the newer of this and the newest version the process has heard of)
    return EventStreamResponse(OpenStream(
        environment=environment, version=version, secret=bearer(request),
        environment_id=principal.environment_id if request.GET.get("patches") == "1" else None,
        refs=request.GET.get("members") == "1"))  # patches between documents with member-list references
