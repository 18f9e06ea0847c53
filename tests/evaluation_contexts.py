"""Generated evaluation contexts over the demo data set (rollout/demo.py): keys in and out of the
override and cohort lists, every attribute the demo's cohorts and flags read, missing attributes,
odd types. Deterministic for a seed."""

from __future__ import annotations

import random
from typing import Any

_MISSING = object()

_ATTRIBUTES: dict[str, list[Any]] = {
    "country": ["DE", "FR", "US", "GB", "de", 49, _MISSING],
    "plan": ["free", "pro", "enterprise", "Pro", _MISSING],
    "tenant_id": ["tenant-42", "tenant-77", "tenant-13", "tenant-5", "tenant-{n}", 42, _MISSING, _MISSING],
    "email": ["ana@example.com", "bo@example.org", "user-{n}@example.com", "", _MISSING],
    "regulated": [True, False, "true", 1, _MISSING, _MISSING],
    "industry": ["banking", "insurance", "retail", "Banking", _MISSING],
    "merchant_id": ["m-{n}", "m-7", 12345, 3.5, _MISSING],
    "app_version": ["1.2.3", "2.0.0", "bad", _MISSING],
}


def _key(rng: random.Random, n: int) -> Any:
    roll = rng.random()
    if roll < 0.02:
        return None
    if roll < 0.03:
        return ""
    if roll < 0.10:
        return rng.choice(["user-1", "user-2", "user-3", "user-9"])  # staff include list, an override
    if roll < 0.25:
        return f"user-{rng.randrange(90, 1110)}"  # around the beta-testers list (user-100..user-1099)
    if roll < 0.30:
        return rng.choice(["tenant-42", "tenant-13"])
    return f"user-{n}-{rng.randrange(10**6)}"


def generate_contexts(count: int, seed: int = 4) -> list[tuple[Any, dict[str, Any] | None]]:
    """``count`` (key, attributes) pairs; a key may be None or empty, attributes may be None."""
    rng = random.Random(seed)
    out: list[tuple[Any, dict[str, Any] | None]] = []
    for n in range(count):
        key = _key(rng, n)
        if rng.random() < 0.03:
            out.append((key, None))
            continue
        attributes: dict[str, Any] = {}
        for name, values in _ATTRIBUTES.items():
            value = rng.choice(values)
            if value is _MISSING:
                continue
            attributes[name] = value.format(n=rng.randrange(500)) if isinstance(value, str) else value
        out.append((key, attributes))
    return out


def ofrep_reason(decision: Any, ruleset: Any) -> str:
    """The OpenFeature reason for an engine decision, written out independently of the mapping under test:
    OFREP has no DEFAULT, so a subject left on legacy by the split is SPLIT when it was drawn in a live split
    (0 % < percentage < 100 %) and STATIC when nothing was drawn (0 %, or no ``bucket_by`` attribute)."""
    if str(decision.reason) != "DEFAULT":
        return str(decision.reason)
    if decision.bucket is None:
        return "STATIC"
    threshold = round(ruleset.doc["flags"][decision.flag]["percentage"] * 10_000)
    return "SPLIT" if 0 < threshold < 1_000_000 else "STATIC"
