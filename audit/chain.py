"""Pure functions of the audit hash chain (no Django imports), documented in the README.

``hash = sha256(prev_hash + canonical_json(event))`` as lowercase hex, where the canonical JSON is
the event's fields below, keys sorted, no whitespace, UTF-8, and the first event's ``prev_hash`` is
64 zeros.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64

CHAINED_FIELDS = (
    "sequence",
    "occurred_at",
    "actor_type",
    "actor",
    "action",
    "object_type",
    "object_key",
    "environment",
    "before",
    "after",
    "reason",
    "request_id",
)


def format_time(value: datetime) -> str:
    """UTC, microseconds, ``Z`` suffix: ``2026-11-26T10:00:00.000000Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(event: Mapping[str, Any]) -> str:
    payload = {name: event[name] for name in CHAINED_FIELDS}
    if isinstance(payload["occurred_at"], datetime):
        payload["occurred_at"] = format_time(payload["occurred_at"])
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def event_hash(prev_hash: str, event: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(event)).encode("utf-8")).hexdigest()
