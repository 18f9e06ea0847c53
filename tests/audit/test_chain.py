from __future__ import annotations

import threading

import pytest
from django.db import DatabaseError, connection, transaction

from audit.chain import GENESIS_HASH, canonical_json, event_hash
from audit.models import AppendOnlyError, AuditChainHead, AuditEvent
from audit.services import audit_record
from common.actors import Actor


def _record(n: int = 1) -> list[AuditEvent]:
    events = []
    for i in range(n):
        with transaction.atomic():
            events.append(audit_record(actor=Actor.system("test"), action="thing.done", object_type="thing",
                                       object_key=f"t{i}", before={"n": i}, after={"n": i + 1, "ü": "é"}))
    return events


@pytest.mark.django_db
def test_audit_record__chain__each_hash_recomputes_from_stored_row():
    _record(5)
    prev = GENESIS_HASH
    for event in AuditEvent.objects.in_order():
        row = AuditEvent.objects.get(pk=event.pk)  # as the database gives it back
        assert row.prev_hash == prev
        assert row.hash == event_hash(prev, vars(row))
        prev = row.hash
    head = AuditChainHead.objects.get()
    assert (head.sequence, head.hash) == (5, prev)


def test_canonical_json__documented_form__sorted_compact_utc():
    from datetime import UTC, datetime

    event = {"sequence": 1, "occurred_at": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "actor_type": "user",
             "actor": "alice", "action": "a.b", "object_type": "o", "object_key": "k", "environment": "",
             "before": None, "after": {"b": 1, "a": [1, 2]}, "reason": "", "request_id": "r1", "extra": "ignored"}
    assert canonical_json(event) == (
        '{"action":"a.b","actor":"alice","actor_type":"user","after":{"a":[1,2],"b":1},"before":null,'
        '"environment":"","object_key":"k","object_type":"o","occurred_at":"2026-01-02T03:04:05.000006Z",'
        '"reason":"","request_id":"r1","sequence":1}'
    )


@pytest.mark.django_db(transaction=True)
def test_audit_record__outside_transaction__refused():
    with pytest.raises(RuntimeError):
        audit_record(actor=Actor.system("test"), action="x", object_type="x", object_key="x")


@pytest.mark.django_db
def test_audit_event__orm_update_or_delete__refused_on_every_database():
    [event] = _record(1)
    event.reason = "edited"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(reason="edited")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(pk=event.pk).reason == ""


@pytest.mark.parametrize("sql", [
    "UPDATE audit_auditevent SET reason = 'edited'",
    "DELETE FROM audit_auditevent",
    "TRUNCATE audit_auditevent",
])
def test_audit_event__raw_sql_change__refused_by_postgres_trigger(postgres, sql):
    _record(1)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    assert AuditEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_audit_record__concurrent_writers_on_postgres__sequences_without_gaps(postgres):
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(10):
                with transaction.atomic():
                    audit_record(actor=Actor.system(f"w{n}"), action="thing.done", object_type="thing",
                                 object_key=f"{n}-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    sequences = list(AuditEvent.objects.in_order().values_list("sequence", flat=True))
    assert sequences == list(range(1, 81))
    prev = GENESIS_HASH
    for row in AuditEvent.objects.in_order():
        assert row.prev_hash == prev and row.hash == event_hash(prev, vars(row))
        prev = row.hash
