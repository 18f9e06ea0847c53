"""``GET /api/v1/sdk/stream``: server-sent events announcing new ruleset versions.

An async view under ASGI: an idle stream is a suspended coroutine waiting on an asyncio event, so
one web process holds hundreds of them without tying up a worker or a thread. Format and
reconnection rules are in docs/sdk-protocol.md.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import connections
from django.http import HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from common import metrics
from common.auth import bearer
from common.conf import get_setting
from common.schema import ERROR_RESPONSES
from rollout.access.auth import sdk_principal
from rollout.delivery.broadcast import Subscription, broadcaster
from rollout.delivery.lean import authenticate, described, throttled, unauthorized
from rollout.delivery.patches import patches
from rollout.delivery.ruleset import current_version

T = TypeVar("T")

KEEP_ALIVE = b": keep-alive\n\n"


def _releasing(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` for ``sync_to_async``, giving its database connection back as soon as it returns: a
    stream lives for hours and must not hold a connection (a pool slot) while it waits, or a few
    hundred idle streams exhaust the pool or PostgreSQL itself."""

    def run(*args: Any) -> T:
        try:
            return fn(*args)
        finally:
            for connection in connections.all(initialized_only=True):
                if not connection.in_atomic_block:  # (a test's transaction is left alone)
                    connection.close()

    return run


def ruleset_event(environment: str, version: int) -> bytes:
    data = json.dumps({"environment": environment, "version": version}, separators=(", ", ": "))
    return f"event: ruleset\nid: {version}\ndata: {data}\n\n".encode()


async def _events(sub: Subscription, environment: str, version: int, secret: str | None, *,
                  environment_id: int | None = None, refs: bool = False) -> AsyncIterator[bytes]:
    """The stream's events; with ``environment_id`` (the SDK asked for patches) a change the process
    can express as a patch from the version last sent is sent as one (``rollout/delivery/patches.py``)."""
    heartbeat = float(get_setting("STREAM_HEARTBEAT_SECONDS"))
    try:
        with metrics.stream_connection(environment):
            # The reconnection delay a client should use, then the version it must hold now.
            yield b"retry: 1000\n\n" + ruleset_event(environment, version)
            last = version
            while True:
                newer = await sub.wait(heartbeat)
                if newer is None:
                    # Quiet: keep proxies from closing the connection, and end streams of revoked keys.
                    if await sync_to_async(_releasing(sdk_principal))(secret) is None:
                        return
                    yield KEEP_ALIVE
                elif newer > last:
                    patched = None if environment_id is None else await patches.get(environment_id, last, refs)
                    metrics.record_stream_event(environment=environment)
                    if patched is not None and patched[0] >= newer:
                        last = patched[0]
                        yield patched[1]
                    else:
                        last = newer
                        yield ruleset_event(environment, newer)
    finally:  # the client went away (the ASGI handler cancels us) or the key was revoked
        broadcaster.unsubscribe(sub)


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
    result = await sync_to_async(_releasing(authenticate))(request)
    if result is None:
        return unauthorized()
    if isinstance(result, float):
        return throttled(result)
    # Subscribe first, then read the version: a change committed in between is still delivered.
    sub = broadcaster.subscribe(result.environment)
    current = await sync_to_async(_releasing(current_version))(result.environment_id)
    if current is None:
        broadcaster.unsubscribe(sub)
        return unauthorized()
    wants_patches = request.GET.get("patches") == "1"
    refs = request.GET.get("members") == "1"  # patches between documents with member-list references
    response = StreamingHttpResponse(_events(sub, current[0], current[1], bearer(request),
                                             environment_id=result.environment_id if wants_patches else None,
                                             refs=refs),
                                     content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass events through at once
    return response
