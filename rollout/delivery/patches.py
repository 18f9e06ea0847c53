"""Small updates: what changed between two ruleset versions, as one stream ``patch`` event.

A change to one flag used to make every streaming SDK download the whole document again. A stream
that asks for patches (``?patches=1``, docs/sdk-protocol.md) gets instead an ``event: patch`` carrying
the flags and cohorts that differ between the version the SDK holds (``base``) and the new one, each
replaced whole (``null``: removed), with the new version and its ETag. The SDK applies it on top of
exactly ``base`` and installs the result in one swap; anything else (a gap, a patch it cannot apply)
and it fetches the whole document.

A patch is computed once per (environment, base) in each web process, from the two documents'
cached bytes, and shared by every stream that needs it. No patch is sent (the stream sends the
usual ``ruleset`` event, and the SDK fetches) when the base document is no longer cached, when
anything besides flags and cohorts differs (a field a newer server adds travels in the document),
or when the patch would not be much smaller than the document.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import cache
from turnout.wire import RulesetDocument, RulesetPatch

from common.redis import degrade
from rollout.delivery.ruleset import _cache_key, get_ruleset

logger = logging.getLogger("turnout.stream")

# A patch is sent only when it is at most this share of the document (else the gzip fetch is as good).
MAX_SHARE = 0.25
# ... or at most this many bytes, whatever the document's size.
ALWAYS_BYTES = 4096
_PATCHED = ("flags", "cohorts")


def diff(old: RulesetDocument, new: RulesetDocument) -> RulesetPatch | None:
    """The patch turning ``old`` into ``new`` (``turnout.wire.apply_patch(old, patch) == new``), or
    None when the documents differ in anything but their version, flags and cohorts."""
    rest_old = {k: v for k, v in old.items() if k not in ("version", *_PATCHED)}
    rest_new = {k: v for k, v in new.items() if k not in ("version", *_PATCHED)}
    if rest_old != rest_new:
        return None
    changes: dict[str, dict[str, Any]] = {}
    for name in _PATCHED:
        before: dict[str, Any] = dict(old.get(name) or {})  # type: ignore[call-overload]  # flags or cohorts
        after: dict[str, Any] = dict(new.get(name) or {})  # type: ignore[call-overload]  # flags or cohorts
        changed = {key: after.get(key) for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
        changes[name] = dict(sorted(changed.items()))
    return {"environment": new["environment"], "base": old["version"], "version": new["version"], "etag": "",
            "flags": changes["flags"], "cohorts": changes["cohorts"]}


def patch_event(patch: RulesetPatch) -> bytes:
    data = json.dumps(patch, separators=(",", ":"))  # ASCII, one line: a valid SSE data field
    return f"event: patch\nid: {patch['version']}\ndata: {data}\n\n".encode()


def ruleset_patch(environment_id: int, base: int, refs: bool = False) -> tuple[int, bytes] | None:
    """The ``patch`` event from version ``base`` to the environment's current version, and that
    version; None when there is no worthwhile patch (the stream announces the version instead).
    ``refs``: between documents of the form with member-list references (``members=1``)."""
    built = get_ruleset(environment_id, refs)
    if built is None or built.version <= base:
        return None
    old_body = degrade(lambda: cache.get(_cache_key(built.environment, base, refs)), None, what="ruleset")
    if not isinstance(old_body, bytes):
        return None
    patch = diff(json.loads(old_body), built.document())
    if patch is None:
        return None
    patch["etag"] = built.etag
    event = patch_event(patch)
    if len(event) > max(ALWAYS_BYTES, MAX_SHARE * len(built.body)):
        return None
    return built.version, event


class PatchCache:
    """Patches computed in this process, by (environment id, base version): one computation per
    patch, however many streams wait for it."""

    LIMIT = 256

    def __init__(self) -> None:
        self._pending: dict[tuple[int, int, bool], asyncio.Future[tuple[int, bytes] | None]] = {}

    async def get(self, environment_id: int, base: int, refs: bool = False) -> tuple[int, bytes] | None:
        key = (environment_id, base, refs)
        found = self._pending.get(key)
        if found is None or found.get_loop() is not asyncio.get_running_loop():
            if len(self._pending) >= self.LIMIT:
                self._pending.clear()
            found = asyncio.get_running_loop().create_future()
            self._pending[key] = found
            result: tuple[int, bytes] | None
            try:
                result = await sync_to_async(_released_patch)(environment_id, base, refs)
            except Exception as exc:  # a patch is an optimisation: the stream announces the version instead
                logger.warning("stream.patch_failed", extra={"error": type(exc).__name__}, exc_info=True)
                result = None
            found.set_result(result)
            return result
        return await asyncio.shield(found)

    def clear(self) -> None:
        self._pending.clear()


def _released_patch(environment_id: int, base: int, refs: bool = False) -> tuple[int, bytes] | None:
    from django.db import connections

    try:
        return ruleset_patch(environment_id, base, refs)
    finally:
        for connection in connections.all(initialized_only=True):
            if not connection.in_atomic_block:  # (a test's transaction is left alone)
                connection.close()


patches = PatchCache()
