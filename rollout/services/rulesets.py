"""Bumping an environment's ruleset version (every change that alters what SDKs decide calls
``ruleset_changed``), and the outbox that carries the announcement to Redis."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction
from django.db.models import F

from rollout import publish  # noqa: F401 - registers the outbox drain on Redis recovery
from rollout.models import Environment, OutboxMessage

logger = logging.getLogger("turnout.ruleset")

OUTBOX_BATCH = 500


def ruleset_changed(*, environment_ids: Iterable[int] | None = None) -> dict[str, int]:
    """Raise the ruleset version of the given environments (all when None) inside the caller's
    transaction, with an outbox row per environment in the same transaction, and announce the new
    versions once it commits. Returns {env_key: new_version}."""
    qs = Environment.objects.all() if environment_ids is None else Environment.objects.filter(pk__in=environment_ids)
    qs.update(ruleset_version=F("ruleset_version") + 1)
    versions = dict(qs.values_list("key", "ruleset_version"))
    OutboxMessage.objects.bulk_create(
        [OutboxMessage(environment=env_key, version=version) for env_key, version in versions.items()]
    )

    def announce() -> None:
        from rollout.publish import announce_committed

        announce_committed(versions)

    transaction.on_commit(announce)
    return versions


def outbox_drain(*, batch: int = OUTBOX_BATCH) -> int:
    """Publish waiting announcements (the newest version of each environment: an SDK that hears of
    it fetches the whole ruleset, so older versions need no message of their own) and delete them;
    the number of rows cleared. Raises ``redis.RedisError`` when Redis does not take them: the rows
    stay for the next drain. Concurrent drains take disjoint rows (``SKIP LOCKED``); a version
    published twice is harmless (streams ignore versions they have seen)."""
    from rollout.publish import publish_versions

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
