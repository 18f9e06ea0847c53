"""Mismatch evidence: samples grouped by the shape of their difference.

The shape of a difference lists, for every place where legacy and parallel results differ, its
path (``total``, ``lines[].amount``), what happened (``changed``, ``type``, ``only_legacy``,
``only_parallel``) and the value types — never the values. Samples with the same shape are one
group: a count, first / last seen, the ruleset version and the SDK's code version last seen, and
one example sample (redacted again on the server: keys that look like secrets or personal data
are masked, and the example is capped at ``EXAMPLE_MAX_BYTES``).

Counting samples into groups is telemetry (like the metrics themselves) and writes no audit
event; marking a group as a known difference is a change: audited, and through a change request
in environments that require approval. Mismatches in known groups do not count against the
mismatch-rate guardrail.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any, TypedDict

from django.db import transaction
from django.db.models import Sum

from audit.models import AuditEvent
from audit.names import Action
from audit.services import audit_record, audited_atomic
from common import clock
from common.actors import Actor
from common.errors import NotFound, ValidationFailed
from common.services import check_version
from rollout.models import FlagState, MismatchCursor, MismatchGroup, MismatchSample
from rollout.policy import Approval, require_approval_if_needed
from rollout.services.flags import get_state_for_update
from rollout.snapshots import mismatch_group_snapshot

EXAMPLE_MAX_BYTES = 2048
MAX_SHAPE_ENTRIES = 50
MAX_DEPTH = 8
SENSITIVE = re.compile(r"pass(word)?|secret|token|api[_-]?key|auth|email|phone|ssn|iban|card|address|name$", re.I)
REFRESH_BATCH = 5000
KNOWN_SHARE_SAMPLE_LIMIT = 2000


# --- pure pieces ---------------------------------------------------------------------------------

def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _diff(legacy: Any, parallel: Any, path: str, out: list[tuple[str, str, str, str]], depth: int) -> None:
    if len(out) >= MAX_SHAPE_ENTRIES:
        return
    lt, pt = _type(legacy), _type(parallel)
    if lt != pt:
        out.append((path or "$", "type", lt, pt))
        return
    if depth < MAX_DEPTH and isinstance(legacy, dict):
        for key in sorted(set(legacy) | set(parallel), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in parallel:
                out.append((sub, "only_legacy", _type(legacy[key]), ""))
            elif key not in legacy:
                out.append((sub, "only_parallel", "", _type(parallel[key])))
            else:
                _diff(legacy[key], parallel[key], sub, out, depth + 1)
        return
    if depth < MAX_DEPTH and isinstance(legacy, list):
        if len(legacy) != len(parallel):
            out.append((f"{path}[]" if path else "$[]", "length", lt, pt))
        for index in range(min(len(legacy), len(parallel))):
            _diff(legacy[index], parallel[index], f"{path}[]", out, depth + 1)
        return
    if legacy != parallel:
        out.append((path or "$", "changed", lt, pt))


def difference_shape(legacy: Any, parallel: Any) -> list[list[str]]:
    """Where and how two results differ, without their values (deduplicated, sorted)."""
    out: list[tuple[str, str, str, str]] = []
    _diff(legacy, parallel, "", out, 0)
    return [list(entry) for entry in sorted(set(out))]


def fingerprint(shape: list[list[str]]) -> str:
    return hashlib.sha256(json.dumps(shape, separators=(",", ":")).encode()).hexdigest()


def sample_fingerprint(legacy: Any, parallel: Any) -> str:
    return fingerprint(difference_shape(legacy, parallel))


def redact(value: Any, depth: int = 0) -> Any:
    """Mask values under keys that look like secrets or personal data."""
    if depth > MAX_DEPTH:
        return "…"
    if isinstance(value, dict):
        return {k: "[redacted]" if SENSITIVE.search(str(k)) else redact(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, depth + 1) for v in value]
    return value


def capped_example(legacy: Any, parallel: Any) -> dict[str, Any]:
    example = {"legacy": redact(legacy), "parallel": redact(parallel)}
    text = json.dumps(example, ensure_ascii=False, default=str)
    if len(text.encode()) <= EXAMPLE_MAX_BYTES:
        return example
    return {"truncated": True, "preview": text.encode()[:EXAMPLE_MAX_BYTES].decode(errors="ignore")}


# --- grouping (telemetry: no audit event) -----------------------------------------------------------

def mismatch_groups_refresh(*, limit: int = REFRESH_BATCH) -> int:
    """Count mismatch samples stored since the last run into their groups; returns how many."""
    with transaction.atomic():
        cursor, _ = MismatchCursor.objects.select_for_update().get_or_create(pk=1)
        samples = list(MismatchSample.objects.filter(pk__gt=cursor.last_sample_id).order_by("pk")[:limit])
        if not samples:
            return 0
        states: dict[tuple[int, str], FlagState | None] = {}
        for sample in samples:
            key = (sample.environment_id, sample.flag_key)
            if key not in states:
                states[key] = FlagState.objects.filter(environment_id=key[0], flag__key=key[1]).first()
            state = states[key]
            if state is None:
                continue
            shape = difference_shape(sample.legacy, sample.parallel)
            group, _ = MismatchGroup.objects.select_for_update().get_or_create(
                flag_state=state, fingerprint=fingerprint(shape),
                defaults={"shape": shape, "example": capped_example(sample.legacy, sample.parallel), "count": 0,
                          "first_seen": sample.at, "last_seen": sample.at})
            group.count += 1
            group.first_seen = min(group.first_seen, sample.at)
            if sample.at >= group.last_seen:
                group.last_seen = sample.at
                group.flag_version = sample.version
                group.code_version = (getattr(sample, "code_version", "") or "")[:100]
            group.save()
        cursor.last_sample_id = samples[-1].pk
        cursor.save()
        return len(samples)


def known_share(state: FlagState, *, start: datetime, end: datetime) -> float:
    """The share of the window's mismatch samples that belong to known-difference groups."""
    known = set(MismatchGroup.objects.filter(flag_state=state, known=True).values_list("fingerprint", flat=True))
    if not known:
        return 0.0
    rows = list(MismatchSample.objects.filter(environment_id=state.environment_id, flag_key=state.flag.key,
                                              minute__gte=start, minute__lt=end)
                .order_by("-pk").values_list("legacy", "parallel")[:KNOWN_SHARE_SAMPLE_LIMIT])
    if not rows:
        return 0.0
    return sum(1 for legacy, parallel in rows if sample_fingerprint(legacy, parallel) in known) / len(rows)


class MismatchGroupFigures(TypedDict):
    id: int
    fingerprint: str
    count: int
    share: float
    shape: Any
    example: Any
    first_seen: str
    last_seen: str
    flag_version: int | None
    code_version: str
    known: bool
    known_reason: str
    known_by: str
    known_at: str | None


class MismatchSummary(TypedDict):
    kinds: int
    samples: int
    known_samples: int
    groups: list[MismatchGroupFigures]


def mismatch_summary(state: FlagState) -> MismatchSummary:
    """"3 kinds of difference, 97% of them this one": the groups with their shares."""
    groups = list(MismatchGroup.objects.filter(flag_state=state).order_by("-count", "id"))
    total = sum(g.count for g in groups) or 0
    return {
        "kinds": len(groups),
        "samples": total,
        "known_samples": MismatchGroup.objects.filter(flag_state=state, known=True).aggregate(n=Sum("count"))["n"]
        or 0,
        "groups": [
            {"id": g.pk, "fingerprint": g.fingerprint, "count": g.count,
             "share": round(100.0 * g.count / total, 1) if total else 0.0, "shape": g.shape, "example": g.example,
             "first_seen": g.first_seen.isoformat(), "last_seen": g.last_seen.isoformat(),
             "flag_version": g.flag_version, "code_version": g.code_version, "known": g.known,
             "known_reason": g.known_reason, "known_by": g.known_by,
             "known_at": g.known_at.isoformat() if g.known_at else None}
            for g in groups
        ],
    }


# --- known differences (audited) ---------------------------------------------------------------------

def mark_known_state(state: FlagState, *, actor: Actor, version: int | None = None, reason: str = "",
                     approval: Approval | None = None, group: int = 0, known: bool = True) -> AuditEvent:
    check_version(state, version, what=f"flag state '{state.flag.key}@{state.environment.key}'")
    require_approval_if_needed(state, Action.MISMATCH_GROUP_KNOWN, actor=actor, approval=approval)
    if not isinstance(known, bool):
        raise ValidationFailed.field("known", "must be true or false")
    row = MismatchGroup.objects.select_for_update().filter(pk=group, flag_state=state).first() if isinstance(
        group, int) and not isinstance(group, bool) else None
    if row is None:
        raise NotFound(f"mismatch group {group} does not exist for '{state.flag.key}' in {state.environment.key}")
    if known and not reason.strip():
        raise ValidationFailed.field("reason", "say why this difference is expected")
    before = mismatch_group_snapshot(row)
    row.known = known
    row.known_reason = reason.strip() if known else ""
    row.known_by = (approval.requested_by if approval else actor.label)[:150] if known else ""
    row.known_at = clock.now() if known else None
    row.save()
    after: dict[str, Any] = {**mismatch_group_snapshot(row), "flag": state.flag.key}
    if approval:
        after["approval"] = approval.as_audit()
    return audit_record(actor=actor, action=Action.MISMATCH_GROUP_KNOWN if known else Action.MISMATCH_GROUP_UNKNOWN,
                        object_type="mismatch_group", object_key=f"{state.flag.key}@{state.environment.key}#{row.pk}",
                        environment=state.environment.key, before=before, after=after, reason=reason)


def mismatch_group_mark_known(*, actor: Actor, flag: str, environment: str, group: int, known: bool = True,
                              reason: str = "", approval: Approval | None = None) -> MismatchGroup:
    """Mark a group as a known (expected) difference, or take the mark back."""
    with audited_atomic():
        state = get_state_for_update(flag, environment)
        mark_known_state(state, actor=actor, reason=reason, approval=approval, group=group, known=known)
        return MismatchGroup.objects.get(pk=group)
