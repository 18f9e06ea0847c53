"""Bumping an environment's ruleset version (every change that alters what SDKs decide calls
``ruleset_changed``), and the outbox that carries the announcement to Redis."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction
from django.db.models import F

from rollout.delivery.publish import announce_committed
from rollout.models import Environment, OutboxMessage

logger = logging.getLogger("turnout.ruleset")



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
        announce_committed(versions)

    transaction.on_commit(announce)
    return versions
