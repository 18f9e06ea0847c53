"""The one writer of the audit log."""

from __future__ import annotations

import json
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from audit.chain import GENESIS_HASH, event_hash
from audit.models import AuditChainHead, AuditEvent
from common.actors import Actor
from common.request_context import current_request_id


def _jsonable(value: Any) -> Any:
    """What the database will give back: JSON-native values only (so the hash recomputes)."""
    if value is None:
        return None
    return json.loads(json.dumps(value, default=str, allow_nan=False))


def _locked_head() -> AuditChainHead:
    head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        # The head row is made by a migration; should it ever be missing, rebuild it from the last
        # event (never restarting the chain). ``ignore_conflicts`` settles concurrent rebuilders.
        last = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash").first()
        sequence, tip = last if last else (0, GENESIS_HASH)
        AuditChainHead.objects.bulk_create([AuditChainHead(pk=1, sequence=sequence, hash=tip)],
                                           ignore_conflicts=True)
        head = AuditChainHead.objects.select_for_update().get(pk=1)
    return head


def audit_record(
    *,
    actor: Actor,
    action: str,
    object_type: str,
    object_key: str,
    environment: str = "",
    before: Any = None,
    after: Any = None,
    reason: str = "",
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction.

    The chain head row is locked for the rest of the transaction, so concurrent writers take
    sequence numbers one after the other and a rolled-back change leaves no event and no gap.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the change it records")
    head = _locked_head()
    event = AuditEvent(
        sequence=head.sequence + 1,
        occurred_at=timezone.now(),
        actor_type=actor.type,
        actor=actor.label[:150],
        action=action,
        object_type=object_type,
        object_key=str(object_key)[:255],
        environment=environment or "",
        before=_jsonable(before),
        after=_jsonable(after),
        reason=reason or "",
        request_id=current_request_id() or "",
        prev_hash=head.hash,
    )
    event.hash = event_hash(head.hash, vars(event))
    event.save(force_insert=True)
    AuditChainHead.objects.filter(pk=1).update(sequence=event.sequence, hash=event.hash)
    return event


def audited_atomic() -> transaction.Atomic:
    """The outermost transaction of an entry-point service."""
    return transaction.atomic(durable=True)
