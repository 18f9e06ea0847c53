"""One validator for the counted rows and samples of a metrics batch (docs/sdk-protocol.md, "Metrics").

A batch carries two kinds of counted rows — ``flags`` (per flag × served path) and, from data-migration
flags, ``migrations`` (per flag × stage × origin × operation) — and two kinds of samples
(``mismatch_samples``, ``consistency_samples``). Both are checked here, field by field, with the same
rules: counts are integers from 0 to ``MAX_COUNT``, names are 1 to 100 printable characters, a latency
histogram has exactly one count per bucket of ``turnout.wire.LATENCY_BUCKETS_MS`` (plus the overflow
bucket), times are ISO-8601 with a zone, a sample's sides are at most ``MAX_SAMPLE_SIDE_BYTES`` of JSON.
A refusal is a ``BadRequest`` naming the bad field by its path (``flags[3].latency_ms``); fields the
protocol does not define are ignored, so an SDK newer than the server never has a batch refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from turnout.wire import LATENCY_BUCKETS_MS

from rollout.delivery.lean import BadRequest

HISTOGRAM_SIZE = len(LATENCY_BUCKETS_MS) + 1
MAX_COUNT = 10**12
MAX_SAMPLE_SIDE_BYTES = 16 * 1024
PATHS = ("legacy", "parallel")
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")
_KEY_HASH = re.compile(r"^[0-9a-f]{64}$")


def obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(where, "must be an object")
    return value


def items(value: Any, where: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise BadRequest(where, "must be a list")
    if len(value) > limit:
        raise BadRequest(where, f"has more than {limit} items")
    return value


def count(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
        raise BadRequest(where, f"must be an integer from 0 to {MAX_COUNT}")
    return value


def name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise BadRequest(where, "must be a string of 1 to 100 printable characters")
    return value


def choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise BadRequest(where, f"must be one of {', '.join(choices)}")
    return value


def optional_text(value: Any, where: str, limit: int = 100) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(where, f"must be a string of at most {limit} characters, or null")
    return value


def timestamp(value: Any, where: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise BadRequest(where, "must be an ISO-8601 timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(where, "must be an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise BadRequest(where, "must carry a time zone (e.g. Z)")
    return parsed


def version(value: Any, where: str) -> int | None:
    return None if value is None else count(value, where)


def key_hash(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _KEY_HASH.match(value):
        raise BadRequest(where, "must be the SHA-256 of the key, 64 lowercase hex digits")
    return value


def side(value: Any, where: str) -> Any:
    if len(json.dumps(value, ensure_ascii=False).encode()) > MAX_SAMPLE_SIDE_BYTES:
        raise BadRequest(where, f"is larger than {MAX_SAMPLE_SIDE_BYTES} bytes")
    return value


_INT = {int}


def _counts_ok(values: list[Any]) -> bool:
    """Every value an integer from 0 to MAX_COUNT (``bool`` is not): the fast path, in C loops, with no
    field path built unless a value is bad."""
    return set(map(type, values)) <= _INT and (not values or (min(values) >= 0 and max(values) <= MAX_COUNT))


def histogram(row: dict[str, Any], where: str) -> list[int]:
    """``row["latency_ms"]``: exactly ``HISTOGRAM_SIZE`` counts (required)."""
    if "latency_ms" not in row:
        raise BadRequest(f"{where}.latency_ms", "is required")
    raw = row["latency_ms"]
    if type(raw) is list and len(raw) == HISTOGRAM_SIZE and _counts_ok(raw):
        return raw
    raw = items(raw, f"{where}.latency_ms", HISTOGRAM_SIZE)
    if len(raw) != HISTOGRAM_SIZE:
        raise BadRequest(f"{where}.latency_ms", f"must have exactly {HISTOGRAM_SIZE} counts (one per bucket)")
    return [count(n, f"{where}.latency_ms[{i}]") for i, n in enumerate(raw)]


@dataclass(frozen=True)
class CountedRow:
    """A counted row, checked: its flag, the dimensions that key it (``path``, or ``stage``, ``origin``
    and ``operation``), the ruleset version it was decided with, its counters and latency histogram."""

    flag: str
    keys: dict[str, str]
    version: int | None
    counts: dict[str, int]
    latency: list[int]


def counted_row(raw: Any, where: str, *, dimensions: Mapping[str, tuple[str, ...]], counters: tuple[str, ...],
                required: tuple[str, ...] = ()) -> CountedRow:
    """One row of ``flags`` or ``migrations``: ``dimensions`` maps each keying field to its allowed values,
    ``counters`` are the counts (absent: 0, unless named in ``required``)."""
    row = obj(raw, where)
    flag = name(row.get("flag"), f"{where}.flag")
    keys = {field: choice(row.get(field), f"{where}.{field}", allowed) for field, allowed in dimensions.items()}
    for field in required:
        if field not in row:
            raise BadRequest(f"{where}.{field}", "is required")
    counts = {counter: row.get(counter, 0) for counter in counters}
    if not _counts_ok(list(counts.values())):
        for counter, value in counts.items():
            count(value, f"{where}.{counter}")
    latency = histogram(row, where)
    return CountedRow(flag, keys, version(row.get("version"), f"{where}.version"), counts, latency)


def sample_sides(raw: dict[str, Any], where: str) -> tuple[Any, Any, bool]:
    """A sample's ``legacy`` and ``parallel`` results (both required, size-capped) and ``truncated``."""
    truncated = raw.get("truncated", False)
    if not isinstance(truncated, bool):
        raise BadRequest(f"{where}.truncated", "must be true or false")
    for field in PATHS:
        if field not in raw:
            raise BadRequest(f"{where}.{field}", "is required")
    return side(raw["legacy"], f"{where}.legacy"), side(raw["parallel"], f"{where}.parallel"), truncated
