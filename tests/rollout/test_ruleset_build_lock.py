"""The ruleset build lock (rollout/delivery/ruleset.py): a request that finds another process building waits
briefly for ANY version at least as new as its own, then builds from the database itself; a lock is
released only by its holder.

Issue 13's reproduction: back-to-back production changes plus concurrent ruleset fetches stalled
fetches for 30 s — a waiter waited for the version it had read while the builder, seeing the
version move under it, built and cached the newer one; then the waiter timed out and deleted a lock
it never held. Deadlines below are the joins' timeouts (deadlock guards), not timing assertions.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.db.models import F

from rollout.delivery.ruleset import BuildLock, get_ruleset
from rollout.models import Environment
from tests.conftest import service_missing

pytestmark = pytest.mark.services

# Far below the old 30 s stall, far above a build on a busy machine.
JOIN_DEADLINE = 15.0


class Fetch(threading.Thread):
    """``get_ruleset`` in a thread of its own (its own database connection, as another request)."""

    def __init__(self, environment_id: int) -> None:
        super().__init__(daemon=True)
        self.environment_id = environment_id
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = get_ruleset(self.environment_id)
        except BaseException as exc:
            self.error = exc
        finally:
            connections.close_all()


def _redis_gets(client: Any) -> int:
    return int(client.info("commandstats").get("cmdstat_get", {}).get("calls", 0))


def _lock_waiters() -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return int(cursor.fetchone()[0])


def _wait_until(predicate: Any, what: str) -> None:
    done = threading.Event()
    for _ in range(int(JOIN_DEADLINE / 0.01)):
        if predicate():
            done.set()
            break
        done.wait(0.01)
    assert done.is_set(), f"never happened: {what}"


def test_ruleset_fetch__builder_builds_a_newer_version_meanwhile__waiter_takes_it_without_stalling(
        transactional_db: Any, flag: Any, redis_url: str) -> None:
    import redis

    if connection.vendor != "postgresql":
        service_missing("needs PostgreSQL's table locks to hold a build mid-way")
    env = Environment.objects.get(key="staging")
    wanted = env.ruleset_version
    client = redis.Redis.from_url(redis_url)
    builder = waiter = None
    with transaction.atomic():
        # A change commits while a build is under way: the builder reads version `wanted`, then
        # finds the flag states locked until the change (version `wanted + 1`) commits.
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE rollout_flagstate IN ACCESS EXCLUSIVE MODE")
        Environment.objects.filter(pk=env.pk).update(ruleset_version=F("ruleset_version") + 1)
        builder = Fetch(env.pk)
        builder.start()
        _wait_until(lambda: _lock_waiters() >= 1, "the builder waits on the flag states")
        gets = _redis_gets(client)
        waiter = Fetch(env.pk)
        waiter.start()
        # The waiter has read version `wanted` and found it uncached (its cache GET) — then the change commits.
        _wait_until(lambda: _redis_gets(client) > gets, "the waiter looked the version up in the cache")
    builder.join(JOIN_DEADLINE)
    waiter.join(JOIN_DEADLINE)
    assert not builder.is_alive() and not waiter.is_alive(), "a ruleset fetch stalled"
    assert builder.error is None and waiter.error is None
    # The builder saw the version move and built the newer one; the waiter took that (>= its own).
    assert builder.result.version == wanted + 1
    assert waiter.result.version >= wanted


def test_ruleset_fetch__build_lock_held_elsewhere__builds_from_database_and_leaves_the_lock(
        transactional_db: Any, flag: Any, redis_url: str) -> None:
    env = Environment.objects.get(key="staging")
    elsewhere = BuildLock("staging", env.ruleset_version)
    assert elsewhere.acquire()  # another process, mid-build (or dead: the lock expires on its own)
    fetch = Fetch(env.pk)
    fetch.start()
    fetch.join(JOIN_DEADLINE)
    assert not fetch.is_alive(), "the fetch waited on another process's lock without bound"
    assert fetch.error is None
    assert fetch.result.version == env.ruleset_version and b'"invoice-engine"' in fetch.result.body
    # Still held by its holder: the waiter neither deleted nor took it.
    assert not BuildLock("staging", env.ruleset_version).acquire()
    elsewhere.release()
    again = BuildLock("staging", env.ruleset_version)
    assert again.acquire()
    again.release()


def test_build_lock__released_by_a_non_holder__stays_held(db: Any, redis_url: str) -> None:
    holder = BuildLock("staging", 7)
    assert holder.acquire()
    intruder = BuildLock("staging", 7)
    assert not intruder.acquire()
    intruder.release()  # never held: must not free the holder's lock
    assert not BuildLock("staging", 7).acquire()
    holder.release()
    assert BuildLock("staging", 7).acquire()
