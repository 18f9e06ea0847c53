"""Rows → the ruleset document SDKs evaluate (DESIGN.md, ``schema: 1``), cached per version.

A document is built once per environment version and cached as serialized bytes (Redis when
configured, so one build serves every web process); nothing is rebuilt per request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass

from django.core.cache import cache
from turnout.wire import SCHEMA, CohortRule, FlagRule, RulesetDocument

from cohorts.models import Cohort, CohortMember, MemberKind
from common import metrics
from common.conf import get_setting
from rollout.models import Environment, FlagState

logger = logging.getLogger("turnout.ruleset")

BUILD_LOCK_SECONDS = 30


@dataclass(frozen=True)
class BuiltRuleset:
    environment: str
    version: int
    body: bytes  # the serialized document

    @property
    def etag(self) -> str:
        return f'"{self.environment}-{self.version}-{hashlib.sha256(self.body).hexdigest()[:16]}"'

    def document(self) -> RulesetDocument:
        document: RulesetDocument = json.loads(self.body)
        return document


def _cohort_doc(cohort: Cohort) -> CohortRule:
    include: list[str] = []
    exclude: list[str] = []
    members = (
        CohortMember.objects.filter(cohort=cohort).order_by("kind", "subject").values_list("kind", "subject")
    )
    for kind, subject in members.iterator(chunk_size=10_000):
        (include if kind == MemberKind.INCLUDE else exclude).append(subject)
    return {"match_on": cohort.match_on or None, "rules": cohort.rules, "include": include, "exclude": exclude}


def build_document(env: Environment) -> RulesetDocument:
    """The ruleset for one environment as it stands in the database now (``turnout.wire``)."""
    flags: dict[str, FlagRule] = {}
    used: dict[int, Cohort] = {}
    for state in FlagState.objects.filter(environment=env).for_ruleset().order_by("flag__key"):
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
    cohorts = {c.key: _cohort_doc(c) for c in sorted(used.values(), key=lambda c: c.key)}
    return {"schema": SCHEMA, "environment": env.key, "version": env.ruleset_version, "cohorts": cohorts,
            "flags": flags}


def _cache_key(env_key: str, version: int) -> str:
    return f"ruleset:{env_key}:{version}"


def current_version(environment_id: int) -> tuple[str, int] | None:
    row = Environment.objects.filter(pk=environment_id).values_list("key", "ruleset_version").first()
    return (row[0], row[1]) if row else None


def get_ruleset(environment_id: int) -> BuiltRuleset | None:
    """The current ruleset of an environment: one indexed read for the version, then the cache."""
    current = current_version(environment_id)
    if current is None:
        return None
    env_key, version = current
    body = cache.get(_cache_key(env_key, version))
    if body is not None:
        return BuiltRuleset(env_key, version, body)
    return _build_and_cache(environment_id, env_key, version)


def _build_and_cache(environment_id: int, env_key: str, version: int) -> BuiltRuleset:
    lock = f"ruleset-build:{env_key}:{version}"
    if not cache.add(lock, 1, timeout=BUILD_LOCK_SECONDS):
        # Another process is building this version: wait briefly for it rather than build it again.
        deadline = time.monotonic() + BUILD_LOCK_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.02)
            body = cache.get(_cache_key(env_key, version))
            if body is not None:
                return BuiltRuleset(env_key, version, body)
    try:
        # Checked again under the lock: another process may have built and cached this version (and
        # released its lock) between our cache miss and taking the lock.
        body = cache.get(_cache_key(env_key, version))
        if body is not None:
            return BuiltRuleset(env_key, version, body)
        started = time.perf_counter()
        for _ in range(5):
            env = Environment.objects.get(pk=environment_id)
            doc = build_document(env)
            # Every change bumps the version in its own transaction: if it did not move while we
            # read, the document is a consistent picture of that version.
            if Environment.objects.filter(pk=environment_id, ruleset_version=env.ruleset_version).exists():
                break
        body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        built = BuiltRuleset(env.key, env.ruleset_version, body)
        cache.set(_cache_key(env.key, env.ruleset_version), body, timeout=get_setting("RULESET_CACHE_TIMEOUT"))
        metrics.record_ruleset_build(environment=env.key, seconds=time.perf_counter() - started)
        logger.info("ruleset.built", extra={"environment": env.key, "version": env.ruleset_version,
                                            "bytes": len(body), "flags": len(doc["flags"])})
        return built
    finally:
        cache.delete(lock)
