"""Member-list documents of large cohorts (``turnout.members``; docs/sdk-protocol.md, "Member lists").

A cohort with more listed members than ``MEMBER_LIST_INLINE_MAX`` travels in the ruleset of SDKs that
ask for references (``?members=1``) as ``"members": {"version": v, "count": n}``; its lists are a
document of their own, built here once per (cohort, ``members_version``) — never because a flag or
another cohort changed — and cached beside the rulesets: the raw bytes, the gzip bytes (compressed
once) and the ETag under keys of their own, so a conditional request reads only the ETag. A delta
from an older version (``?since=``) is computed once from the two cached versions and cached too.

``built_count()`` counts the builds of this process (tests and benchmarks check that an unrelated
change does not rebuild a list).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from django.core.cache import cache
from django.db import connection, transaction
from turnout.members import MemberDelta, MemberList, decode, diff, encode, encode_delta

from cohorts.models import Cohort, CohortMember, MemberKind, MemberListState
from common.conf import get_setting
from common.redis import degrade
from rollout.delivery.ruleset import BuildLock, compress

logger = logging.getLogger("turnout.ruleset")

# A request waits this long for another process building the same list before building it itself.
BUILD_WAIT_SECONDS = 30.0
BUILD_POLL_SECONDS = 0.05
# Lists kept decoded or as bytes per process (the newest versions of the large cohorts in use).
LOCAL_LISTS = 8

_builds = 0
_lock = threading.Lock()


def built_count() -> int:
    """How many member lists this process has built from the database."""
    return _builds


def inline_max() -> int:
    """Cohorts with more listed members than this travel as a member-list reference (SDKs that ask)."""
    return int(get_setting("MEMBER_LIST_INLINE_MAX"))


def make_etag(cohort: str, version: int, body: bytes) -> str:
    return f'"m-{cohort}-{version}-{hashlib.sha256(body).hexdigest()[:16]}"'


@dataclass(slots=True)
class BuiltMembers:
    """One version of one cohort's member-list document as this process serves it."""

    cohort: str
    version: int
    etag: str
    body: bytes | None = None
    gzipped: bytes | None = None
    decoded: MemberList | None = field(default=None, repr=False)

    def members(self) -> MemberList:
        if self.decoded is None:
            assert self.body is not None
            found = decode(self.body)
            if not isinstance(found, MemberList):  # pragma: no cover - the builder writes full lists here
                raise ValueError("a cached member list is a delta")
            self.decoded = found
        return self.decoded


def _key(cohort: str, version: int, part: str) -> str:
    return f"members-{part}:{cohort}:{version}"


_local: OrderedDict[tuple[str, int], BuiltMembers] = OrderedDict()
_deltas: OrderedDict[tuple[str, int, int], bytes | None] = OrderedDict()


def _keep(entry: BuiltMembers) -> BuiltMembers:
    with _lock:
        found = _local.get((entry.cohort, entry.version))
        if found is not None and found.etag == entry.etag:
            found.body = found.body or entry.body
            found.gzipped = found.gzipped or entry.gzipped
            found.decoded = found.decoded or entry.decoded
            return found
        _local[(entry.cohort, entry.version)] = entry
        while len(_local) > LOCAL_LISTS:
            _local.popitem(last=False)
    return entry


def clear_local() -> None:
    with _lock:
        _local.clear()
        _deltas.clear()


def current_members_version(cohort: str) -> int | None:
    """The cohort's member-list version (0: its lists never changed); None: no such cohort."""
    row = Cohort.objects.filter(key=cohort).values_list("pk", "member_list__version").first()
    return None if row is None else row[1] or 0


def _read(cohort: str) -> MemberList | None:
    """The cohort's lists as they stand, with the version they stand at: read in one transaction that
    holds the cohort's row (``FOR SHARE`` on PostgreSQL), so no member change commits in between."""
    global _builds
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT id FROM {Cohort._meta.db_table} WHERE key = %s FOR SHARE", [cohort])
                found = cursor.fetchone()
        else:
            found = Cohort.objects.filter(key=cohort).values_list("id").first()
        if found is None:
            return None
        version = MemberListState.objects.filter(cohort_id=found[0]).values_list("version", flat=True).first()
        row = (found[0], version or 0)
        include: list[str] = []
        exclude: list[str] = []
        rows = CohortMember.objects.filter(cohort_id=row[0]).values_list("kind", "subject")
        for kind, subject in rows.iterator(chunk_size=20_000):
            (include if kind == MemberKind.INCLUDE else exclude).append(subject)
    with _lock:
        _builds += 1
    return MemberList.from_values(cohort, row[1], include, exclude)


def _build(cohort: str, *, store: bool) -> BuiltMembers | None:
    started = time.perf_counter()
    members = _read(cohort)
    if members is None:
        return None
    body = encode(members)
    packed = compress(body)
    built = BuiltMembers(cohort, members.version, make_etag(cohort, members.version, body), body, packed, members)
    if store:
        timeout = get_setting("RULESET_CACHE_TIMEOUT")
        degrade(lambda: cache.set_many({_key(cohort, built.version, "body"): body,
                                        _key(cohort, built.version, "gz"): packed,
                                        _key(cohort, built.version, "etag"): built.etag}, timeout=timeout),
                [], what="ruleset")
    logger.info("members.built", extra={"cohort": cohort, "version": built.version, "bytes": len(body),
                                        "gzip_bytes": len(packed), "include": members.include.count,
                                        "exclude": members.exclude.count,
                                        "seconds": round(time.perf_counter() - started, 3)})
    return built


def _cached(cohort: str, version: int, *parts: str) -> dict[str, Any]:
    try:
        found = cache.get_many([_key(cohort, version, p) for p in parts])
    except redis.RedisError:
        return {}
    return {p: found[_key(cohort, version, p)] for p in parts if _key(cohort, version, p) in found}


def member_list(cohort: str, version: int | None = None, *, need: str = "body") -> BuiltMembers | None:
    """The cohort's member-list document at ``version`` (None: the current one) with at least ``need``
    (``etag``, ``body``, ``gz`` or ``decoded``): this process's copy, else the cache, else one build.
    A build gives the current version, which may be newer than the one asked for. None: no such cohort."""
    if version is None:
        version = current_members_version(cohort)
        if version is None:
            return None
    entry = _local.get((cohort, version))
    if entry is not None and _has(entry, need):
        return entry
    parts = ("etag",) if need == "etag" else ("etag", "gz" if need == "gz" else "body")
    found = _cached(cohort, version, *parts)
    if "etag" in found and all(p in found for p in parts):
        entry = BuiltMembers(cohort, version, found["etag"], found.get("body"), found.get("gz"))
        if need == "decoded" and entry.body is not None:
            entry.members()
        return _keep(entry)
    built = _build_once(cohort, version)
    return None if built is None else _keep(built)


def _has(entry: BuiltMembers, need: str) -> bool:
    if need == "etag":
        return True
    if need == "gz":
        return entry.gzipped is not None
    if need == "decoded":
        return entry.decoded is not None
    return entry.body is not None


def _build_once(cohort: str, version: int) -> BuiltMembers | None:
    """One builder per (cohort, version) across processes; the others wait for its cached result."""
    lock = BuildLock(cohort, version)
    lock.name = f"members-build:{cohort}:{version}"
    try:
        held = lock.acquire()
    except redis.RedisError:
        return _build(cohort, store=False)
    if not held:
        deadline = time.monotonic() + BUILD_WAIT_SECONDS
        while time.monotonic() < deadline:
            time.sleep(BUILD_POLL_SECONDS)
            found = _cached(cohort, version, "etag", "body", "gz")
            if len(found) == 3:
                return BuiltMembers(cohort, version, found["etag"], found["body"], found["gz"])
        return _build(cohort, store=True)
    try:
        found = _cached(cohort, version, "etag", "body", "gz")
        if len(found) == 3:
            return BuiltMembers(cohort, version, found["etag"], found["body"], found["gz"])
        return _build(cohort, store=True)
    finally:
        lock.release()


def member_delta(cohort: str, base: int, current: BuiltMembers) -> bytes | None:
    """The delta document from version ``base`` to ``current`` (uncompressed), or None when there is none
    to give (``base`` is no longer cached, the salt changed, or the delta is not much smaller)."""
    if base >= current.version:
        return None
    key = (cohort, base, current.version)
    if key in _deltas:
        return _deltas[key]
    cache_key = f"members-delta:{cohort}:{base}:{current.version}"
    stored = degrade(lambda: cache.get(cache_key), None, what="ruleset")
    if isinstance(stored, bytes):
        result: bytes | None = stored or None
    else:
        result = _compute_delta(cohort, base, current)
        degrade(lambda: cache.set(cache_key, result or b"", timeout=get_setting("RULESET_CACHE_TIMEOUT")), None,
                what="ruleset")
    with _lock:
        _deltas[key] = result
        while len(_deltas) > 64:
            _deltas.popitem(last=False)
    return result


def _compute_delta(cohort: str, base: int, current: BuiltMembers) -> bytes | None:
    old = _local.get((cohort, base))
    old_members: MemberList | None = old.decoded if old is not None else None
    if old_members is None:
        body = degrade(lambda: cache.get(_key(cohort, base, "body")), None, what="ruleset")
        if not isinstance(body, bytes):
            return None
        decoded = decode(body)
        old_members = decoded if isinstance(decoded, MemberList) else None
    if current.body is None:
        current = member_list(cohort, current.version) or current
    if old_members is None or current.body is None:
        return None
    delta: MemberDelta | None = diff(old_members, current.members())
    if delta is None:
        return None
    body = encode_delta(delta)
    # A delta larger than half the list: the whole list is as good.
    return body if len(body) * 2 < len(current.body) else None


def member_lists_for(refs: Mapping[str, int]) -> dict[str, MemberList]:
    """The decoded lists a ruleset references (cohort -> version), for server-side evaluation."""
    lists: dict[str, MemberList] = {}
    for cohort, version in refs.items():
        entry = member_list(cohort, version, need="decoded")
        if entry is not None:
            lists[cohort] = entry.members()
    return lists
