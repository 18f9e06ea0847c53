"""Verification of the whole chain stored in the database."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from django.db.models import Subquery

from audit.chain import CHAINED_FIELDS, GENESIS_HASH, event_hash
from audit.models import AuditChainHead, AuditEvent

BATCH = 5000
_FIELDS = (*CHAINED_FIELDS, "prev_hash", "hash")

# ``progress(checked, total)``: events checked so far, of the events the walk will reach at most.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    last_sequence: int
    last_hash: str
    head_sequence: int
    head_hash: str
    first_bad_sequence: int | None = None
    problem: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_rows(rows: Iterable[dict[str, Any]], *, head: tuple[int, str] | None,
               max_sequence: int | None = None) -> ChainReport:
    """Walk rows in sequence order from the start: numbering, linkage, hashes, then the head row.

    Catches an edited field (hash), a deleted row (gap), a reordered or swapped row (linkage) and a
    row appended behind the writer's back (it is past the head).
    """
    expected, prev, checked = 1, GENESIS_HASH, 0
    head_sequence, head_hash = head if head is not None else (None, None)

    def report(bad: int | None, problem: str) -> ChainReport:
        return ChainReport(ok=bad is None, checked=checked, last_sequence=expected - 1, last_hash=prev,
                           head_sequence=head_sequence if head_sequence is not None else expected - 1,
                           head_hash=head_hash if head_hash is not None else prev,
                           first_bad_sequence=bad, problem=problem)

    for row in rows:
        sequence = row["sequence"]
        if sequence != expected:
            if sequence > expected:
                return report(expected, f"events {expected}..{sequence - 1} are missing")
            return report(sequence, f"sequence {sequence} appears out of order after {expected - 1}")
        if row["prev_hash"] != prev:
            return report(sequence, "prev_hash does not match the previous event's hash (reordered or removed)")
        if event_hash(prev, row) != row["hash"]:
            return report(sequence, "hash does not match the event's content (altered)")
        prev = row["hash"]
        expected += 1
        checked += 1
    if head is not None:
        if max_sequence is not None and head_sequence is not None and max_sequence > head_sequence:
            return report(head_sequence + 1, f"events after {head_sequence} were not written by the audit writer")
        if head_sequence is not None and head_sequence > expected - 1:
            return report(expected, f"events {expected}..{head_sequence} are missing at the end of the chain")
        if head_sequence is not None and head_sequence < expected - 1:
            return report(head_sequence + 1, f"events after {head_sequence} were not written by the audit writer")
        if head_hash != prev:
            return report(expected - 1, "the last event's hash differs from the chain head's")
    return report(None, "")


def _stored_rows(batch: int, until: int, progress: Callable[[int], None] | None = None) -> Iterable[dict[str, Any]]:
    base = AuditEvent.objects.filter(sequence__lte=until).order_by("sequence").values_list(*_FIELDS)
    last: int | None = None
    seen = 0
    while True:
        page = base if last is None else base.filter(sequence__gt=last)
        rows = list(page[:batch])
        for row in rows:
            yield dict(zip(_FIELDS, row, strict=True))
        # The walk asks for the next row only once it has checked this one: the whole page is checked.
        seen += len(rows)
        if progress is not None:
            progress(seen)
        if len(rows) < batch:
            return
        last = rows[-1][0]


def verify_chain(*, batch: int = BATCH, progress: Progress | None = None) -> ChainReport:
    """Check every stored event in constant memory; report the first bad sequence number.

    ``progress(checked, total)`` is called once before the walk and after every batch (it does not
    change the report). ``total`` is the head's sequence captured at the start: the walk stops there,
    so events written while it runs (a caller's own record of the result, say) are not part of it.
    """
    # Head and the highest stored sequence in one statement (one snapshot): a writer inserts its event
    # and moves the head in the same transaction, so in any snapshot they agree.
    top = AuditEvent.objects.order_by("-sequence").values("sequence")[:1]
    snapshot = AuditChainHead.objects.filter(pk=1).annotate(top=Subquery(top)).values_list(
        "sequence", "hash", "top").first()
    if snapshot is None:  # no head row (it is rebuilt by the next write): check the rows alone
        reporter = None
        if progress is not None:
            total = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0
            reporter = _reporter(progress, total)
        return check_rows(_stored_rows(batch, 2**62, reporter), head=None)
    head_sequence, head_hash, max_sequence = snapshot
    reporter = _reporter(progress, head_sequence) if progress is not None else None
    return check_rows(_stored_rows(batch, head_sequence, reporter), head=(head_sequence, head_hash),
                      max_sequence=max_sequence)


def _reporter(progress: Progress, total: int) -> Callable[[int], None]:
    progress(0, total)
    # Without a head row the walk takes every row, some perhaps written after ``total`` was read.
    return lambda checked: progress(checked, max(total, checked))
