"""The SDK metrics batch (docs/sdk-protocol.md, "Metrics"): strict parsing into typed values.

Every field the protocol defines is checked for type and bounds, and a refusal names the bad field
by its path (``flags[3].latency_ms``). Fields the protocol does not define are ignored, so an SDK
newer than the server never has a whole batch of counts refused for a field it added.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from turnout.wire import BreakerEvent, MetricsBatch

from common.conf import get_setting
from rollout.delivery.lean import BadRequest
from rollout.telemetry import rows as check
from rollout.telemetry.rows import HISTOGRAM_SIZE, MAX_COUNT, PATHS

__all__ = ["COUNTERS", "HISTOGRAM_SIZE", "MAX_COUNT", "PATHS", "Batch", "FlagCounts", "Sample", "parse_batch"]

COUNTERS = ("calls", "runs", "errors", "fallbacks", "comparisons", "mismatches", "compare_skipped",
            "compare_errors", "compare_timeouts")
MAX_ERROR_CODES = 20
MAX_BREAKER_EVENTS = 100
#: what an SDK may send as ``batch_id`` (its retries of one batch carry the same id: counted once)
_BATCH_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


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
    batch_id: str | None = None


def _row(raw: Any, where: str) -> FlagCounts:
    row = check.counted_row(raw, where, dimensions={"path": PATHS}, counters=COUNTERS, required=("calls",))
    counts = row.counts
    if "runs" not in raw:
        # An SDK from before ``runs``: its histogram counted exactly the runs of run()/arun().
        counts["runs"] = min(sum(row.latency), MAX_COUNT)
    codes_raw = check.obj(raw.get("error_codes") or {}, f"{where}.error_codes")
    if len(codes_raw) > MAX_ERROR_CODES:
        raise BadRequest(f"{where}.error_codes", f"has more than {MAX_ERROR_CODES} codes")
    codes = {check.name(code, f"{where}.error_codes"): check.count(n, f"{where}.error_codes.{code}")
             for code, n in codes_raw.items()}
    return FlagCounts(row.flag, row.keys["path"], row.version, counts, row.latency, codes)


def _sample(raw: Any, where: str) -> Sample:
    sample = check.obj(raw, where)
    key_hash = check.key_hash(sample.get("key_hash"), f"{where}.key_hash")
    served = sample.get("served", "")
    if served != "":
        served = check.choice(served, f"{where}.served", PATHS)
    legacy, parallel, truncated = check.sample_sides(sample, where)
    return Sample(
        flag=check.name(sample.get("flag"), f"{where}.flag"),
        version=check.version(sample.get("version"), f"{where}.version"),
        key_hash=key_hash, served=served, legacy=legacy, parallel=parallel, truncated=truncated,
        at=check.timestamp(sample.get("at"), f"{where}.at"),
    )


def _breaker_event(raw: Any, where: str) -> BreakerEvent:
    event = check.obj(raw, where)
    return {"flag": check.name(event.get("flag"), f"{where}.flag"),
            "state": check.name(event.get("state"), f"{where}.state"),
            "reason": check.optional_text(event.get("reason"), f"{where}.reason", 500) or "",
            "at": check.timestamp(event.get("at"), f"{where}.at").isoformat()}


def parse_batch(data: MetricsBatch | Any) -> Batch:
    """A metrics batch (``turnout.wire.MetricsBatch``, as the SDK sends it; any JSON value is
    accepted here), checked field by field; BadRequest names the first bad field."""
    batch = check.obj(data, "body")
    sdk = check.obj(batch.get("sdk"), "sdk")
    sdk_info = {"name": check.name(sdk.get("name"), "sdk.name"),
                "version": check.optional_text(sdk.get("version"), "sdk.version"),
                "code_version": check.optional_text(sdk.get("code_version"), "sdk.code_version")}
    batch_id = batch.get("batch_id")
    if batch_id is not None and (not isinstance(batch_id, str) or not _BATCH_ID.match(batch_id)):
        raise BadRequest("batch_id", "must be 8 to 64 letters, digits, '-' or '_' (or absent)")
    window = check.obj(batch.get("window"), "window")
    start, end = check.timestamp(window.get("start"), "window.start"), check.timestamp(window.get("end"), "window.end")
    if end < start:
        raise BadRequest("window.end", "is before window.start")
    rows = [_row(r, f"flags[{i}]") for i, r in
            enumerate(check.items(batch.get("flags", []), "flags", get_setting("METRICS_MAX_ROWS")))]
    samples = [_sample(s, f"mismatch_samples[{i}]") for i, s in
               enumerate(check.items(batch.get("mismatch_samples", []), "mismatch_samples",
                               get_setting("METRICS_MAX_SAMPLES")))]
    events = [_breaker_event(e, f"breaker_events[{i}]") for i, e in
              enumerate(check.items(batch.get("breaker_events", []), "breaker_events", MAX_BREAKER_EVENTS))]
    dropped_raw = check.obj(batch.get("dropped") or {}, "dropped")
    if len(dropped_raw) > MAX_ERROR_CODES:
        raise BadRequest("dropped", f"has more than {MAX_ERROR_CODES} entries")
    dropped = {check.name(k, "dropped"): check.count(v, f"dropped.{k}") for k, v in dropped_raw.items()}
    return Batch(sdk_info, start, end, rows, samples, events, dropped, batch_id)
