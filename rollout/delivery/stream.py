"""``GET /api/v1/sdk/stream``: server-sent events announcing new ruleset versions.

An async view under ASGI: an idle stream is a suspended coroutine waiting on an asyncio event, so
one web process holds hundreds of them without tying up a worker or a thread. Format and
reconnection rules are in docs/sdk-protocol.md.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator

from django.http import HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from common import metrics
from common.auth import bearer
from common.conf import get_setting
from common.schema import ERROR_RESPONSES
from rollout.delivery import local
from rollout.delivery.broadcast import Subscription, broadcaster
from rollout.delivery.lean import (
    aauthenticate_for_evaluation,
    asdk_principal,
    described,
    run_detached,
    throttled,
    unauthorized,
)
from rollout.delivery.patches import patches
from rollout.delivery.ruleset import current_version

KEEP_ALIVE = b": keep-alive\n\n"


@functools.lru_cache(maxsize=256)
def ruleset_event(environment: str, version: int) -> bytes:
    """The event announcing ``version`` (made once per version, not once per stream)."""
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
            # Heartbeats keep their own schedule from the stream's connection: an event does not move
            # it, so thousands of streams told of one change do not all fall quiet and beat at once.
            loop = asyncio.get_running_loop()
            next_beat = loop.time() + heartbeat
            while True:
                newer = await sub.wait(max(0.0, next_beat - loop.time()))
                if newer is None:
                    next_beat = loop.time() + heartbeat
                    # Quiet: keep proxies from closing the connection, and end streams of revoked keys.
                    # (the key from the process's copy; when that has expired, one lookup per key
                    # and process that every stream of the key awaits: not one thread call each)
                    if await asdk_principal(secret) is None:
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
    """Connecting costs no thread and, with Redis, usually no round trip: the key, the throttle and
    the current version come from the process's copies (``aauthenticate_for_evaluation``)."""
    result = await aauthenticate_for_evaluation(request)
    if result is None:
        return unauthorized()
    if isinstance(result, float):
        return throttled(result)
    principal, version = result
    # Subscribe first, then read the version: a change committed in between is still delivered.
    sub = broadcaster.subscribe(principal.environment)
    environment = principal.environment
    if version is None:  # no copy in the process (embedded mode, or Redis does not have it): the database
        current = await run_detached(current_version, principal.environment_id)
        if current is None:
            broadcaster.unsubscribe(sub)
            return unauthorized()
        environment, version = current
    # The highest version this process has heard of since (versions only grow).
    version = max(version, local.versions.peek(environment) or 0)
    wants_patches = request.GET.get("patches") == "1"
    refs = request.GET.get("members") == "1"  # patches between documents with member-list references
    response = StreamingHttpResponse(_events(sub, environment, version, bearer(request),
                                             environment_id=principal.environment_id if wants_patches else None,
                                             refs=refs),
                                     content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass events through at once
    return response
