"""Server-side evaluation: the cached ruleset, compiled once per version per process, and
``turnout.engine`` deciding over it — the same engine and document the SDK uses, so server and SDK
decisions are identical by construction (DESIGN: "one implementation, two callers").

An evaluate request costs one indexed read of the environment's version and a dict lookup; the
document is fetched from the shared cache and compiled only when a process first meets a version.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from turnout.engine import Ruleset, compile_ruleset
from turnout.types import Decision

from common.conf import get_setting
from rollout.ruleset import current_version, get_ruleset


@dataclass(frozen=True, slots=True)
class CompiledRuleset:
    environment: str
    version: int
    etag: str
    ruleset: Ruleset


_lock = threading.Lock()
# (environment id, version) -> compiled; versions only grow, so the oldest entry goes first.
_compiled: OrderedDict[tuple[int, int], CompiledRuleset] = OrderedDict()


def compiled_ruleset(environment_id: int) -> CompiledRuleset | None:
    """The environment's current ruleset, compiled (None when the environment is gone)."""
    current = current_version(environment_id)
    if current is None:
        return None
    found = _compiled.get((environment_id, current[1]))
    if found is not None:
        return found
    built = get_ruleset(environment_id)
    if built is None:
        return None
    key = (environment_id, built.version)
    with _lock:
        found = _compiled.get(key)
        if found is not None:
            return found
    # The server built this document from validated rows: a RulesetError here is a bug, and
    # surfaces as a 500 rather than as decisions nobody can explain.
    compiled = CompiledRuleset(built.environment, built.version, built.etag, compile_ruleset(built.document()))
    with _lock:
        _compiled[key] = compiled
        while len(_compiled) > get_setting("COMPILED_RULESETS"):
            _compiled.popitem(last=False)
    return compiled


def clear_compiled() -> None:
    with _lock:
        _compiled.clear()


def decision_body(decision: Decision) -> dict[str, Any]:
    """``{flag, path, compare, reason, error_code?, stage, version}`` (docs/sdk-protocol.md)."""
    body: dict[str, Any] = {
        "flag": decision.flag,
        "path": str(decision.path),
        "compare": decision.compare,
        "reason": str(decision.reason),
        "stage": decision.stage,
        "version": decision.version,
    }
    if decision.error_code is not None:
        body["error_code"] = str(decision.error_code)
    return body
