"""Rows → the ruleset document SDKs evaluate (DESIGN.md, ``schema: 1``), cached per version.

A document is built once per environment version and cached as serialized bytes (Redis when
configured, so one build serves every web process), together with its ETag and its gzip-compressed
bytes, each under a key of its own: a conditional request whose ETag matches reads the ETag only
(never the body), and a client that accepts gzip gets the bytes compressed once per version;
nothing is rebuilt, hashed or compressed per request. Concurrent
requests for an uncached version wait (briefly, ``BUILD_WAIT_SECONDS``) for one builder, accepting
whatever version >= theirs it produced; the cache unreachable, every request builds from the
database (slower, never stalled or failed).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis
from django.core.cache import cache
from redis.exceptions import LockError
from turnout.wire import SCHEMA, CohortRule, FlagRule, RulesetDocument

from cohorts.models import Cohort, CohortMember, MemberKind, MemberListState
from common import metrics
from common.conf import get_setting
from common.redis import degrade, get_redis
from rollout.datamigration.rules import migration_rule
from rollout.models import Environment, FlagState

logger = logging.getLogger("turnout.ruleset")

# A build lock left by a builder that died expires after this many seconds.
BUILD_LOCK_SECONDS = 30
# How long a request waits for another process's build before building from the database itself.
BUILD_WAIT_SECONDS = 2.0
BUILD_POLL_SECONDS = 0.02


def make_etag(environment: str, version: int, body: bytes) -> str:
    """The document's strong ETag: environment, version and a digest of the bytes (computed once per
    version, when it is built)."""
    return f'"{environment}-{version}-{hashlib.sha256(body).hexdigest()[:16]}"'


def gzip_etag(etag: str) -> str:
    """The ETag of the gzip-compressed representation of the document whose ETag is ``etag`` (a
    different representation has a different strong ETag)."""
    return etag[:-1] + '-gz"'


def compress(body: bytes) -> bytes:
    """gzip, deterministic (no timestamp in the header): the same document compresses to the same bytes."""
    return gzip.compress(body, compresslevel=6, mtime=0)


@dataclass(frozen=True)
class BuiltRuleset:
    environment: str
    version: int
    body: bytes  # the serialized document
    etag: str = ""  # make_etag(...); computed when not given
    refs: bool = False  # the form with member-list references (``?members=1``)

    def __post_init__(self) -> None:
        if not self.etag:
            object.__setattr__(self, "etag", make_etag(self.environment, self.version, self.body))

    def document(self) -> RulesetDocument:
        document: RulesetDocument = json.loads(self.body)
        return document


def _cohort_doc(cohort: Cohort, *, listed: tuple[int, int] | None = None) -> CohortRule:
    if listed is not None and listed[1] > int(get_setting("MEMBER_LIST_INLINE_MAX")):
        # A large cohort: its lists are a document of their own (rollout/delivery/members.py), not read here.
        return {"match_on": cohort.match_on or None, "rules": cohort.rules,
                "members": {"version": listed[0], "count": listed[1]}}
    include: list[str] = []
    exclude: list[str] = []
    members = (
        CohortMember.objects.filter(cohort=cohort).order_by("kind", "subject").values_list("kind", "subject")
    )
    for kind, subject in members.iterator(chunk_size=10_000):
        (include if kind == MemberKind.INCLUDE else exclude).append(subject)
    return {"match_on": cohort.match_on or None, "rules": cohort.rules, "include": include, "exclude": exclude}


def build_document(env: Environment, *, refs: bool = False) -> RulesetDocument:
    """The ruleset for one environment as it stands in the database now (``turnout.wire``). With
    ``refs``, large cohorts carry a member-list reference instead of their lists (``schema`` 2 when
    one does; docs/sdk-protocol.md, "Member lists")."""
    flags: dict[str, FlagRule] = {}
    used: dict[int, Cohort] = {}
    staged: set[str] = set()
    states = FlagState.objects.filter(environment=env, flag__archived_at__isnull=True)  # archived: gone
    for state in states.for_ruleset().order_by("flag__key"):
        include = sorted(state.include_cohorts.all(), key=lambda c: c.key)
        exclude = sorted(state.exclude_cohorts.all(), key=lambda c: c.key)
        for cohort in (*include, *exclude):
            used[cohort.pk] = cohort
        flags[state.flag.key] = {
            "enabled": state.enabled,
            "retired": state.retired,
            "salt": state.flag.salt,
            "bucket_by": state.flag.bucket_by or None,
            "overrides": dict(sorted(state.overrides.items())),
            "exclude_cohorts": [c.key for c in exclude],
            "include_cohorts": [c.key for c in include],
            "percentage": float(state.percentage),
            "compare_percentage": float(state.compare_percentage),
            "stage": state.stage,
        }
        migration = migration_rule(state)  # a migration flag's stages (docs/migrations.md), its own field
        if migration is not None:
            flags[state.flag.key]["migration"] = migration
            staged.update(c["cohort"] for c in migration.get("cohorts", ()))
    if staged:
        for cohort in Cohort.objects.filter(key__in=staged):
            used.setdefault(cohort.pk, cohort)
    # cohort id -> (member-list version, listed members), for the form with references
    lists: dict[int, tuple[int, int]] = {}
    if refs and used:
        lists = {pk: (version, count) for pk, version, count in
                 MemberListState.objects.filter(cohort_id__in=used).values_list("cohort_id", "version", "count")}
    cohorts = {c.key: _cohort_doc(c, listed=lists.get(c.pk)) for c in sorted(used.values(), key=lambda c: c.key)}
    referenced = any("members" in c for c in cohorts.values())
    return {"schema": 2 if referenced else SCHEMA, "environment": env.key, "version": env.ruleset_version,
            "cohorts": cohorts, "flags": flags}


def _form(refs: bool) -> str:
    """The cache keys' mark of the form with member-list references (``?members=1``)."""
    return "-r" if refs else ""


def _differs(doc: RulesetDocument, refs: bool) -> bool:
    """Whether the other form of this document would differ from it (a cohort large enough for a reference)."""
    if refs:
        return doc["schema"] != SCHEMA
    limit = int(get_setting("MEMBER_LIST_INLINE_MAX"))
    return any(len(c.get("include") or ()) + len(c.get("exclude") or ()) > limit
               for c in (doc.get("cohorts") or {}).values())


def _cache_key(env_key: str, version: int, refs: bool = False) -> str:
    return f"ruleset{_form(refs)}:{env_key}:{version}"


def _etag_key(env_key: str, version: int, refs: bool = False) -> str:
    return f"ruleset-etag{_form(refs)}:{env_key}:{version}"


def _gzip_key(env_key: str, version: int, refs: bool = False) -> str:
    return f"ruleset-gz{_form(refs)}:{env_key}:{version}"


def cached_etag(env_key: str, version: int, refs: bool = False) -> str | None:
    """The ETag of a version already built into the cache, without reading its body (None: not
    cached, or the cache is away)."""
    found = degrade(lambda: cache.get(_etag_key(env_key, version, refs)), None, what="ruleset")
    return found if isinstance(found, str) else None


def cached_gzip(built: BuiltRuleset) -> bytes:
    """The version's gzip-compressed bytes: from the cache, else compressed here and cached."""
    key = _gzip_key(built.environment, built.version, built.refs)
    found = degrade(lambda: cache.get(key), None, what="ruleset")
    if isinstance(found, bytes):
        return found
    packed = compress(built.body)
    degrade(lambda: cache.set(key, packed, timeout=get_setting("RULESET_CACHE_TIMEOUT")), None, what="ruleset")
    return packed


def _latest_key(env_key: str, refs: bool = False) -> str:
    """The newest version built into the cache: what a waiter takes when the builder it waited for
    built a newer version than the one it asked for."""
    return f"ruleset-latest{_form(refs)}:{env_key}"


def current_version(environment_id: int) -> tuple[str, int] | None:
    row = Environment.objects.filter(pk=environment_id).values_list("key", "ruleset_version").first()
    return (row[0], row[1]) if row else None


def get_ruleset(environment_id: int, refs: bool = False) -> BuiltRuleset | None:
    """The current ruleset of an environment: one indexed read for the version, then the cache.
    ``refs``: the form with member-list references.

    The cache unreachable (Redis down or hung): built from the database, so SDKs that poll keep
    getting changes — a kill switch pulled during an outage among them."""
    current = current_version(environment_id)
    if current is None:
        return None
    env_key, version = current
    try:
        body = cache.get(_cache_key(env_key, version, refs))
    except redis.RedisError:
        return _build(environment_id, store=False, refs=refs)
    if body is not None:
        # The ETag was stored beside the body when it was built (so nothing is hashed here).
        return BuiltRuleset(env_key, version, body, cached_etag(env_key, version, refs) or "", refs)
    return _build_and_cache(environment_id, env_key, version, refs)


class BuildLock:
    """The right to build one version of one environment's ruleset, held by one process at a time.

    Only its holder releases it: with Redis, redis-py's ``Lock`` (a random token, released by an
    atomic compare-and-delete); in embedded mode the local-memory cache with the same token check
    (one process, so no other process can hold it). It expires after ``BUILD_LOCK_SECONDS`` when
    a builder dies holding it."""

    def __init__(self, env_key: str, version: int, refs: bool = False) -> None:
        self.name = f"ruleset-build{_form(refs)}:{env_key}:{version}"
        self.token = secrets.token_hex(8)
        self._lock: Any = None

    def acquire(self) -> bool:
        """True when taken; False when another holds it. Raises ``redis.RedisError`` when Redis fails."""
        client = get_redis()
        if client is None:
            return bool(cache.add(self.name, self.token, timeout=BUILD_LOCK_SECONDS))
        self._lock = client.lock(f"turnout:{self.name}", timeout=BUILD_LOCK_SECONDS, blocking=False)
        return bool(self._lock.acquire(token=self.token))

    def release(self) -> None:
        try:
            if self._lock is None:
                if cache.get(self.name) == self.token:
                    cache.delete(self.name)
            else:
                self._lock.release()
        except (LockError, redis.RedisError) as exc:  # expired (and maybe taken since), or Redis away
            logger.info("ruleset.build_lock_lost", extra={"lock": self.name, "error": type(exc).__name__})


def _build_and_cache(environment_id: int, env_key: str, version: int, refs: bool = False) -> BuiltRuleset:
    lock = BuildLock(env_key, version, refs)
    try:
        held = lock.acquire()
    except redis.RedisError:
        return _build(environment_id, store=False, refs=refs)
    if not held:
        # Another process is building: wait a little for it (any version >= ours will do), then
        # build from the database ourselves — never long, and never touching its lock.
        found = _wait_for_build(env_key, version, refs)
        if found is not None:
            return found
        logger.info("ruleset.build_wait_expired", extra={"environment": env_key, "version": version})
        return _build(environment_id, store=True, refs=refs)
    try:
        # Checked again under the lock: another process may have built and cached this version (and
        # released its lock) between our cache miss and taking the lock.
        body = degrade(lambda: cache.get(_cache_key(env_key, version, refs)), None, what="ruleset")
        if body is not None:
            return BuiltRuleset(env_key, version, body, refs=refs)
        return _build(environment_id, store=True, refs=refs)
    finally:
        lock.release()


def _wait_for_build(env_key: str, version: int, refs: bool = False) -> BuiltRuleset | None:
    """The cached document of ``version`` or of any newer version, polled for at most
    ``BUILD_WAIT_SECONDS``; None when none appeared (or the cache failed)."""
    key, latest_key = _cache_key(env_key, version, refs), _latest_key(env_key, refs)
    deadline = time.monotonic() + BUILD_WAIT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(BUILD_POLL_SECONDS)
        try:
            found = cache.get_many([key, latest_key])
            if key in found:
                return BuiltRuleset(env_key, version, found[key], refs=refs)
            latest = found.get(latest_key)
            if isinstance(latest, int) and latest > version:
                body = cache.get(_cache_key(env_key, latest, refs))
                if body is not None:
                    return BuiltRuleset(env_key, latest, body, refs=refs)
        except redis.RedisError:
            return None
    return None


def _build(environment_id: int, *, store: bool, refs: bool = False) -> BuiltRuleset:
    """Build the environment's current ruleset from the database; with ``store``, cache it (a
    cache that fails only means the next request builds again)."""
    started = time.perf_counter()
    for _ in range(5):
        env = Environment.objects.get(pk=environment_id)
        doc = build_document(env, refs=refs)
        # Every change bumps the version in its own transaction: if it did not move while we
        # read, the document is a consistent picture of that version.
        if Environment.objects.filter(pk=environment_id, ruleset_version=env.ruleset_version).exists():
            break
    body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    built = BuiltRuleset(env.key, env.ruleset_version, body, refs=refs)
    if store:
        # The ETag and the compressed bytes go in with the body: the first 304 or gzip request of
        # any process finds them without hashing or compressing anything.
        version = env.ruleset_version
        packed = compress(body)
        # Without a large cohort both forms are the same bytes: one build serves old and new SDKs.
        forms = (False, True) if not _differs(doc, refs) else (refs,)
        entries: dict[str, Any] = {}
        for form in forms:
            entries.update({_cache_key(env.key, version, form): body, _etag_key(env.key, version, form): built.etag,
                            _gzip_key(env.key, version, form): packed, _latest_key(env.key, form): version})
        degrade(lambda: cache.set_many(entries, timeout=get_setting("RULESET_CACHE_TIMEOUT")), [], what="ruleset")
    metrics.record_ruleset_build(environment=env.key, seconds=time.perf_counter() - started)
    logger.info("ruleset.built", extra={"environment": env.key, "version": env.ruleset_version,
                                        "bytes": len(body), "flags": len(doc["flags"]), "cached": store,
                                        "refs": refs})
    return built
