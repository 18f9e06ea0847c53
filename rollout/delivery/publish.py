"""Announcing new ruleset versions to streaming SDKs (after commit only).

Announcements go through the outbox (``OutboxMessage``, written in the change's own transaction by
``rollout.delivery.rulesets.ruleset_changed``): after commit this process's streams hear at once,
then the outbox is drained to Redis — pub/sub for the other web processes, and the cached current
version the evaluate endpoints read. Redis down or hung never fails or delays a committed change:
the rows wait and are drained when it returns: by the next commit, by Celery beat, by each web
process's stream listener when it reconnects, and by any process whose circuit breaker sees Redis
answer again (``drain_after_recovery``).
"""

from __future__ import annotations

import json
import logging

from django.db import connection, transaction

from common.redis import breaker, channel, get_redis
from rollout.delivery.broadcast import RULESET_CHANNEL, broadcaster
from rollout.delivery.evaluation import remember_version
from rollout.models import OutboxMessage

logger = logging.getLogger("turnout.ruleset")

OUTBOX_BATCH = 500


def announce_locally(environment: str, version: int) -> None:
    """This process's streams of the environment hear about the new version (no I/O)."""
    logger.info("ruleset.changed", extra={"environment": environment, "version": version})
    broadcaster.deliver(environment, version)


def publish_versions(versions: dict[str, int]) -> None:
    """Hand new versions to Redis: the cached current version and a pub/sub message each.
    Raises ``redis.RedisError`` when Redis does not take them (the caller keeps them for later).
    Embedded mode (no Redis): nothing to do; other processes read versions from the database."""
    client = get_redis()
    if client is None:
        return
    for environment, version in versions.items():
        remember_version(environment, version)
        client.publish(channel(RULESET_CHANNEL), json.dumps({"environment": environment, "version": version}))


def outbox_drain(*, batch: int = OUTBOX_BATCH) -> int:
    """Publish waiting announcements (the newest version of each environment: an SDK that hears of
    it fetches the whole ruleset, so older versions need no message of their own) and delete them;
    the number of rows cleared. Raises ``redis.RedisError`` when Redis does not take them: the rows
    stay for the next drain. Concurrent drains take disjoint rows (``SKIP LOCKED``); a version
    published twice is harmless (streams ignore versions they have seen)."""
    cleared = 0
    while True:
        with transaction.atomic():
            rows = list(OutboxMessage.objects.select_for_update(skip_locked=True).order_by("pk")
                        .values_list("pk", "environment", "version")[:batch])
            if not rows:
                return cleared
            newest: dict[str, int] = {}
            for _, environment, version in rows:
                newest[environment] = max(newest.get(environment, 0), version)
            publish_versions(newest)
            OutboxMessage.objects.filter(pk__in=[pk for pk, _, _ in rows]).delete()
        cleared += len(rows)
        logger.info("ruleset.outbox_drained", extra={"rows": len(rows), "versions": newest})
        if len(rows) < batch:
            return cleared


def announce_committed(versions: dict[str, int]) -> None:
    """After a commit that raised these versions: local streams now, then the outbox to Redis."""
    for environment, version in versions.items():
        announce_locally(environment, version)
    try:
        outbox_drain()
    except Exception as exc:  # a committed change never fails because Redis is away; the rows wait
        logger.warning("ruleset.announce_deferred", extra={"versions": versions, "error": type(exc).__name__})


def drain_after_recovery() -> None:
    """Redis answers again in this process: publish what waited in the outbox (run by the breaker
    in a thread of its own — see common/redis.py)."""
    try:
        cleared = outbox_drain()
    finally:
        connection.close()  # a thread of its own: do not keep a connection there
    if cleared:
        logger.info("ruleset.outbox_drained_on_recovery", extra={"rows": cleared})


breaker.on_recovery(drain_after_recovery)
broadcaster.on_connect(outbox_drain)  # each web process's stream listener drains when it (re)connects
