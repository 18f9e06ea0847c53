"""The feedback batch (``turnout.feedback.FeedbackBatch``): strict parsing, then storing.

Every field is checked for type and bounds and a refusal names the bad field by its path
(``feedback[2].score``); fields the protocol does not define are ignored. An entry for a flag the key's
environment does not have is skipped and counted (the rest of the batch is stored). Storing is telemetry:
no audit event, like metrics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from turnout.feedback import (
    MAX_ATTRIBUTE_CHARS,
    MAX_ATTRIBUTES,
    MAX_BATCH,
    SCORE_MAX,
    SCORE_MIN,
    SENSITIVE_NAME,
    scrub_text,
)
from turnout.wire import key_hash as hash_key

from common import clock
from rollout.delivery.lean import BadRequest
from rollout.feedback.models import COMMENT_MAX, Feedback, PathSource
from rollout.models import FlagState
from rollout.telemetry import rows

_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")
_KEY_HASH = re.compile(r"^[0-9a-f]{64}$")
PATHS = ("legacy", "parallel")
MAX_KEY = 1000


@dataclass(frozen=True)
class Entry:
    flag: str
    key_hash: str
    key: str | None  # only to decide the path on arrival; never stored
    path: str | None
    path_source: str
    version: int | None
    score: int | None
    comment: str
    attributes: dict[str, Any]
    truncated: bool
    at: datetime | None


@dataclass(frozen=True)
class Stored:
    accepted: int
    unknown_flags: list[str]


def _time(value: Any, where: str) -> datetime | None:
    return None if value is None else rows.timestamp(value, where)


def _attributes(value: Any, where: str) -> tuple[dict[str, Any], bool]:
    if value is None:
        return {}, False
    attrs = rows.obj(value, where)
    if len(attrs) > MAX_ATTRIBUTES:
        raise BadRequest(where, f"has more than {MAX_ATTRIBUTES} attributes")
    out: dict[str, Any] = {}
    cut = False
    for name, item in attrs.items():
        if not _NAME.match(name):
            raise BadRequest(where, "attribute names must be 1 to 100 printable characters")
        if item is not None and not isinstance(item, str | int | float | bool):
            raise BadRequest(f"{where}.{name}", "must be a string, number, boolean or null")
        if isinstance(item, str) and len(item) > MAX_ATTRIBUTE_CHARS:
            raise BadRequest(f"{where}.{name}", f"is longer than {MAX_ATTRIBUTE_CHARS} characters")
        if SENSITIVE_NAME.search(name):
            out[name], cut = "[redacted]", cut or item != "[redacted]"
        else:
            out[name] = scrub_text(item) if isinstance(item, str) else item
    return out, cut


def _entry(raw: Any, where: str) -> Entry:
    entry = rows.obj(raw, where)
    flag = entry.get("flag")
    if not isinstance(flag, str) or not _NAME.match(flag):
        raise BadRequest(f"{where}.flag", "must be a string of 1 to 100 printable characters")
    key, digest = entry.get("key"), entry.get("key_hash")
    if (key is None) == (digest is None):
        raise BadRequest(f"{where}.key", "give the subject's key or its key_hash (SHA-256), not both")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= MAX_KEY):
        raise BadRequest(f"{where}.key", f"must be a string of 1 to {MAX_KEY} characters")
    if digest is not None and (not isinstance(digest, str) or not _KEY_HASH.match(digest)):
        raise BadRequest(f"{where}.key_hash", "must be the SHA-256 of the key, 64 lowercase hex digits")
    path = entry.get("path")
    if path is not None and path not in PATHS:
        raise BadRequest(f"{where}.path", "must be 'legacy' or 'parallel'")
    if path is None and key is None:
        raise BadRequest(f"{where}.path", "is required with a key_hash (the server can decide only from a key)")
    source = entry.get("path_source", PathSource.GIVEN if path is not None else PathSource.SERVER)
    if path is None:
        source = PathSource.SERVER
    elif source not in (PathSource.DECIDED, PathSource.GIVEN):
        raise BadRequest(f"{where}.path_source", "must be 'decided' or 'given'")
    version = entry.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 0):
        raise BadRequest(f"{where}.version", "must be a whole number >= 0, or null")
    score = entry.get("score")
    if score is not None and (not isinstance(score, int) or isinstance(score, bool)
                              or not SCORE_MIN <= score <= SCORE_MAX):
        raise BadRequest(f"{where}.score", f"must be a whole number from {SCORE_MIN} to {SCORE_MAX}, or null")
    comment = entry.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise BadRequest(f"{where}.comment", "must be a string or null")
    comment = (comment or "").strip()
    if len(comment) > COMMENT_MAX:
        raise BadRequest(f"{where}.comment", f"is longer than {COMMENT_MAX} characters")
    if score is None and not comment:
        raise BadRequest(f"{where}.score", "give a score, a comment or both")
    truncated = entry.get("truncated", False)
    if not isinstance(truncated, bool):
        raise BadRequest(f"{where}.truncated", "must be true or false")
    attributes, cut = _attributes(entry.get("attributes"), f"{where}.attributes")
    return Entry(flag=flag, key_hash=digest if digest is not None else hash_key(key), key=key, path=path,
                 path_source=str(source), version=version, score=score, comment=scrub_text(comment),
                 attributes=attributes, truncated=truncated or cut, at=_time(entry.get("at"), f"{where}.at"))


def parse_feedback(data: Any) -> list[Entry]:
    """The entries of a batch ``{"feedback": [...]}`` (``sdk`` optional), checked field by field."""
    body = rows.obj(data, "body")
    entries = body.get("feedback")
    if not isinstance(entries, list):
        raise BadRequest("feedback", "must be a list of feedback entries")
    if not entries:
        raise BadRequest("feedback", "is empty")
    if len(entries) > MAX_BATCH:
        raise BadRequest("feedback", f"has more than {MAX_BATCH} entries")
    return [_entry(raw, f"feedback[{i}]") for i, raw in enumerate(entries)]


def feedback_record(*, environment_id: int, entries: list[Entry], decide: Any = None) -> Stored:
    """Store the entries of flags the environment has (one query to find them, one insert).

    ``decide(flag, key) -> "legacy" | "parallel"`` decides the path of an entry that came with a key and no
    path (the server's engine over the environment's ruleset)."""
    flags = sorted({e.flag for e in entries})
    states = dict(FlagState.objects.filter(environment_id=environment_id, flag__key__in=flags)
                  .values_list("flag__key", "pk"))
    now = clock.now()
    rows: list[Feedback] = []
    unknown: set[str] = set()
    for e in entries:
        state_id = states.get(e.flag)
        if state_id is None:
            unknown.add(e.flag)
            continue
        path = e.path
        if path is None:
            path = decide(e.flag, e.key) if decide is not None else "legacy"
        rows.append(Feedback(flag_state_id=state_id, path=path, path_source=e.path_source, version=e.version,
                             key_hash=e.key_hash, score=e.score, comment=e.comment, attributes=e.attributes,
                             truncated=e.truncated, at=e.at or now, received_at=now))
    with transaction.atomic():
        Feedback.objects.bulk_create(rows)
    return Stored(accepted=len(rows), unknown_flags=sorted(unknown))
