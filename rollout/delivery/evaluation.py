"""Server-side evaluation: the cached ruleset, compiled once per version per process, and
``turnout.engine`` deciding over it — the same engine and document the SDK uses, so server and SDK
decisions are identical by construction (DESIGN: "one implementation, two callers").

An evaluate request costs one indexed read of the environment's version and a dict lookup; the
document is fetched from the shared cache and compiled only when a process first meets a version.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from turnout.engine import Ruleset, compile_ruleset
from turnout.types import Decision

from common.conf import get_setting
from common.redis import get_redis
from rollout.delivery import local
from rollout.delivery.lean import releasing, single_flight
from rollout.delivery.members import member_lists_for
from rollout.delivery.ruleset import current_version, get_ruleset

logger = logging.getLogger("turnout.ruleset")


@dataclass(frozen=True, slots=True)
class CompiledRuleset:
    environment: str
    version: int
    etag: str
    ruleset: Ruleset


_lock = threading.Lock()
# (environment id, version) -> compiled; versions only grow, so the oldest entry goes first.
_compiled: OrderedDict[tuple[int, int], CompiledRuleset] = OrderedDict()


# -- the current version, cached in Redis -----------------------------------------------------------
#
# With Redis, the environment's current ruleset version is kept under one key, read in the same
# round trip as the request's throttle count (rollout/delivery/lean.py), so a warm evaluation touches
# neither the database nor the cache twice. It is written after every commit that raises the
# version (rollout/delivery/publish.py) and whenever a process had to read the database for it, only ever
# upwards (a late writer cannot put an older version back), and it expires after
# VERSION_CACHE_SECONDS: if a write is ever lost, the database is asked again within that time.

_SET_IF_HIGHER = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
"""


version_cache_key = local.version_cache_key  # (where it has always been imported from)


def remember_version(environment: str, version: int) -> None:
    """The version is current: into this process's copy (``rollout/delivery/local.py``) and Redis."""
    local.versions.offer(environment, version, time.monotonic())
    client = get_redis()
    if client is None:
        return
    try:
        client.eval(_SET_IF_HIGHER, 1, version_cache_key(environment), version,
                    max(1, int(get_setting("VERSION_CACHE_SECONDS"))))
    except Exception as exc:  # the database stays the truth; the key expires on its own
        logger.warning("ruleset.version_cache_failed", extra={"environment": environment,
                                                              "error": type(exc).__name__})


def compiled_ruleset_local(environment_id: int, *, environment: str | None,
                           version: int | None) -> CompiledRuleset | None:
    """``compiled_ruleset``'s answer when this process has compiled ``version`` already (no I/O);
    None when only ``compiled_ruleset`` can answer."""
    if version is None:
        return None
    found = _compiled.get((environment_id, version))
    return found if found is not None and found.environment == environment else None


async def acompiled_ruleset(environment_id: int, *, environment: str | None = None,
                            version: int | None = None) -> CompiledRuleset | None:
    """``compiled_ruleset`` for an async view: the database only on a miss (in a thread)."""
    found = compiled_ruleset_local(environment_id, environment=environment, version=version)
    if found is not None:
        return found
    # In a thread that gives its database connection back: on the lean path no request has a thread
    # of its own whose connection Django would tidy (rollout/delivery/asgi.py). One read per version
    # and process at a time.
    return await single_flight(("compiled", environment_id, version), lambda: sync_to_async(
        releasing(compiled_ruleset))(environment_id, environment=environment, version=version))


def compiled_ruleset(environment_id: int, *, environment: str | None = None,
                     version: int | None = None) -> CompiledRuleset | None:
    """The environment's current ruleset, compiled (None when the environment is gone).

    ``version`` is the current version when the caller already has it from Redis (with the
    environment's key); otherwise one indexed read of the database gives it.
    """
    if version is not None:
        found = _compiled.get((environment_id, version))
        if found is not None and found.environment == environment:
            return found
    current = current_version(environment_id)
    if current is None:
        return None
    if version is None and environment is not None:
        remember_version(current[0], current[1])
    found = _compiled.get((environment_id, current[1]))
    if found is not None:
        return found
    # The form with member-list references, compiled with the lists (rollout/delivery/members.py): a
    # million-member cohort costs this process ~10 MB, not the ~115 MB of its lists inline.
    built = get_ruleset(environment_id, refs=True)
    if built is None:
        return None
    key = (environment_id, built.version)
    with _lock:
        found = _compiled.get(key)
        if found is not None:
            return found
    # The server built this document from validated rows: a RulesetError here is a bug, and
    # surfaces as a 500 rather than as decisions nobody can explain.
    doc = built.document()
    refs = {k: c["members"]["version"] for k, c in (doc.get("cohorts") or {}).items() if "members" in c}
    compiled = CompiledRuleset(built.environment, built.version, built.etag,
                               compile_ruleset(doc, member_lists_for(refs)))
    with _lock:
        _compiled[key] = compiled
        while len(_compiled) > get_setting("COMPILED_RULESETS"):
            _compiled.popitem(last=False)
    return compiled


def clear_compiled() -> None:
    with _lock:
        _compiled.clear()


def decision_body(decision: Decision) -> dict[str, Any]:
    """``{flag, path, compare, reason, error_code?, rule, bucket, stage, version, detail?}``: the SDK
    ``Decision``'s fields, its receipt included (docs/sdk-protocol.md, "Server-side evaluation")."""
    body: dict[str, Any] = {
        "flag": decision.flag,
        "path": str(decision.path),
        "compare": decision.compare,
        "reason": str(decision.reason),
        "rule": decision.rule,
        "bucket": decision.bucket,
        "stage": decision.stage,
        "version": decision.version,
    }
    if decision.error_code is not None:
        body["error_code"] = str(decision.error_code)
    if decision.detail is not None:
        body["detail"] = decision.detail
    return body
