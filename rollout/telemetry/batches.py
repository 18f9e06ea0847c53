"""The SDK metrics batch (docs/sdk-protocol.md, "Metrics"): strict parsing into typed values.

Every field the protocol defines is checked for type and bounds, and a refusal names the bad field
by its path (``flags[3].latency_ms``). Fields the protocol does not define are ignored, so an SDK
newer than the server never has a whole batch of counts refused for a field it added.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from turnout.wire import LATENCY_BUCKETS_MS, BreakerEvent, MetricsBatch

from common.conf import get_setting
from rollout.delivery.lean import BadRequest

HISTOGRAM_SIZE = len(LATENCY_BUCKETS_MS) + 1
COUNTERS = ("calls", "runs", "errors", "fallbacks", "comparisons", "mismatches", "compare_skipped",
            "compare_errors", "compare_timeouts")
PATHS = ("legacy", "parallel")
MAX_COUNT = 10**12
MAX_ERROR_CODES = 20
MAX_SAMPLE_SIDE_BYTES = 16 * 1024
MAX_BREAKER_EVENTS = 100
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")
_KEY_HASH = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FlagCounts:
    flag: str
    path: str
    version: int | None
    counts: dict[str, int]
    latency: list[int]
    error_codes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    flag: str
    version: int | None
    key_hash: str
    served: str
    legacy: Any
    parallel: Any
    truncated: bool
    at: datetime


@dataclass(frozen=True)
class Batch:
    sdk: dict[str, str | None]
    window_start: datetime
    window_end: datetime
    rows: list[FlagCounts]
    samples: list[Sample]
    breaker_events: list[BreakerEvent]
    dropped: dict[str, int]


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(where, "must be an object")
    return value


def _list(value: Any, where: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise BadRequest(where, "must be a list")
    if len(value) > limit:
        raise BadRequest(where, f"has more than {limit} items")
    return value


def _count(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
        raise BadRequest(where, f"must be an integer from 0 to {MAX_COUNT}")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise BadRequest(where, "must be a string of 1 to 100 printable characters")
    return value


def _optional_str(value: Any, where: str, limit: int = 100) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(where, f"must be a string of at most {limit} characters, or null")
    return value


def _time(value: Any, where: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise BadRequest(where, "must be an ISO-8601 timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(where, "must be an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise BadRequest(where, "must carry a time zone (e.g. Z)")
    return parsed


def _version(value: Any, where: str) -> int | None:
    if value is None:
        return None
    return _count(value, where)


def _row(raw: Any, where: str) -> FlagCounts:
    row = _obj(raw, where)
    flag = _name(row.get("flag"), f"{where}.flag")
    path = row.get("path")
    if path not in PATHS:
        raise BadRequest(f"{where}.path", "must be 'legacy' or 'parallel'")
    if "calls" not in row:
        raise BadRequest(f"{where}.calls", "is required")
    counts = {name: _count(row.get(name, 0), f"{where}.{name}") for name in COUNTERS}
    if "latency_ms" not in row:
        raise BadRequest(f"{where}.latency_ms", "is required")
    latency = _list(row["latency_ms"], f"{where}.latency_ms", HISTOGRAM_SIZE)
    if len(latency) != HISTOGRAM_SIZE:
        raise BadRequest(f"{where}.latency_ms", f"must have exactly {HISTOGRAM_SIZE} counts (one per bucket)")
    latency = [_count(n, f"{where}.latency_ms[{i}]") for i, n in enumerate(latency)]
    if "runs" not in row:
        # An SDK from before ``runs``: its histogram counted exactly the runs of run()/arun().
        counts["runs"] = min(sum(latency), MAX_COUNT)
    codes_raw = _obj(row.get("error_codes") or {}, f"{where}.error_codes")
    if len(codes_raw) > MAX_ERROR_CODES:
        raise BadRequest(f"{where}.error_codes", f"has more than {MAX_ERROR_CODES} codes")
    codes = {_name(code, f"{where}.error_codes"): _count(n, f"{where}.error_codes.{code}")
             for code, n in codes_raw.items()}
    return FlagCounts(flag, path, _version(row.get("version"), f"{where}.version"), counts, latency, codes)


def _side(value: Any, where: str) -> Any:
    if len(json.dumps(value, ensure_ascii=False).encode()) > MAX_SAMPLE_SIDE_BYTES:
        raise BadRequest(where, f"is larger than {MAX_SAMPLE_SIDE_BYTES} bytes")
    return value


def _sample(raw: Any, where: str) -> Sample:
    sample = _obj(raw, where)
    key_hash = sample.get("key_hash")
    if not isinstance(key_hash, str) or not _KEY_HASH.match(key_hash):
        raise BadRequest(f"{where}.key_hash", "must be the SHA-256 of the key, 64 lowercase hex digits")
    served = sample.get("served", "")
    if served not in ("", *PATHS):
        raise BadRequest(f"{where}.served", "must be 'legacy' or 'parallel'")
    truncated = sample.get("truncated", False)
    if not isinstance(truncated, bool):
        raise BadRequest(f"{where}.truncated", "must be true or false")
    for side in ("legacy", "parallel"):
        if side not in sample:
            raise BadRequest(f"{where}.{side}", "is required")
    return Sample(
        flag=_name(sample.get("flag"), f"{where}.flag"),
        version=_version(sample.get("version"), f"{where}.version"),
        key_hash=key_hash,
        served=served,
        legacy=_side(sample["legacy"], f"{where}.legacy"),
        parallel=_side(sample["parallel"], f"{where}.parallel"),
        truncated=truncated,
        at=_time(sample.get("at"), f"{where}.at"),
    )


def _breaker_event(raw: Any, where: str) -> BreakerEvent:
    event = _obj(raw, where)
    return {"flag": _name(event.get("flag"), f"{where}.flag"), "state": _name(event.get("state"), f"{where}.state"),
            "reason": _optional_str(event.get("reason"), f"{where}.reason", 500) or "",
            "at": _time(event.get("at"), f"{where}.at").isoformat()}


def parse_batch(data: MetricsBatch | Any) -> Batch:
    """A metrics batch (``turnout.wire.MetricsBatch``, as the SDK sends it; any JSON value is
    accepted here), checked field by field; BadRequest names the first bad field."""
    batch = _obj(data, "body")
    sdk = _obj(batch.get("sdk"), "sdk")
    sdk_info = {"name": _name(sdk.get("name"), "sdk.name"),
                "version": _optional_str(sdk.get("version"), "sdk.version"),
                "code_version": _optional_str(sdk.get("code_version"), "sdk.code_version")}
    window = _obj(batch.get("window"), "window")
    start, end = _time(window.get("start"), "window.start"), _time(window.get("end"), "window.end")
    if end < start:
        raise BadRequest("window.end", "is before window.start")
    rows = [_row(r, f"flags[{i}]") for i, r in
            enumerate(_list(batch.get("flags", []), "flags", get_setting("METRICS_MAX_ROWS")))]
    samples = [_sample(s, f"mismatch_samples[{i}]") for i, s in
               enumerate(_list(batch.get("mismatch_samples", []), "mismatch_samples",
                               get_setting("METRICS_MAX_SAMPLES")))]
    events = [_breaker_event(e, f"breaker_events[{i}]") for i, e in
              enumerate(_list(batch.get("breaker_events", []), "breaker_events", MAX_BREAKER_EVENTS))]
    dropped_raw = _obj(batch.get("dropped") or {}, "dropped")
    if len(dropped_raw) > MAX_ERROR_CODES:
        raise BadRequest("dropped", f"has more than {MAX_ERROR_CODES} entries")
    dropped = {_name(k, "dropped"): _count(v, f"dropped.{k}") for k, v in dropped_raw.items()}
    return Batch(sdk_info, start, end, rows, samples, events, dropped)
