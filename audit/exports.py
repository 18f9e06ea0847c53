"""Streaming exports of the audit log (CSV, JSON Lines) and their signed manifests.

Events are read in keyset-paginated batches (``sequence > last ORDER BY sequence LIMIT n``) and
encoded batch by batch, so memory stays flat whatever the range. Every exported row carries the
chained fields plus ``prev_hash`` and ``hash``, so each row's hash recomputes from the file alone.

- JSON Lines: one object per line, keys sorted, no whitespace, UTF-8: the chain's canonical JSON
  of the event with ``prev_hash`` and ``hash`` added.
- CSV (RFC 4180, header row, columns ``EXPORT_FIELDS``): ``occurred_at`` in the canonical time
  form, ``before``/``after`` as compact JSON text (``null`` when absent), other fields as text.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db.models import QuerySet

from audit.chain import CHAINED_FIELDS, GENESIS_HASH, format_time
from audit.evidence import evidence_queryset, resolve_subject, summary
from audit.filters import filtered_events
from audit.models import AuditEvent, AuditExport, ExportFormat
from audit.signing import sign_manifest
from common.conf import get_setting
from config.env import VAR_DIR

MANIFEST_FORMAT = "turnout.audit-export/1"
EXPORT_FIELDS = (*CHAINED_FIELDS, "prev_hash", "hash")
JSON_FIELDS = frozenset({"before", "after"})
BATCH = 2000
# Looked up by an export's stored ``format``: a plain string, equal to its ExportFormat member.
CONTENT_TYPES: dict[str, str] = {ExportFormat.CSV: "text/csv; charset=utf-8",
                                 ExportFormat.JSONL: "application/x-ndjson", ExportFormat.ZIP: "application/zip"}


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def iter_events(queryset: QuerySet[AuditEvent], *, until_sequence: int, batch: int = BATCH) -> Iterator[dict[str, Any]]:
    """The matching events up to ``until_sequence``, in sequence order, as export rows (dicts)."""
    base = queryset.filter(sequence__lte=until_sequence).order_by("sequence").values_list(*EXPORT_FIELDS)
    last = 0
    while True:
        rows = list(base.filter(sequence__gt=last)[:batch])
        if not rows:
            return
        for row in rows:
            event = dict(zip(EXPORT_FIELDS, row, strict=True))
            event["occurred_at"] = format_time(event["occurred_at"])
            yield event
        last = rows[-1][0]
        if len(rows) < batch:
            return


def jsonl_line(event: dict[str, Any]) -> str:
    return _compact(event) + "\n"


def csv_cells(event: dict[str, Any]) -> list[Any]:
    return [_compact(event[name]) if name in JSON_FIELDS else event[name] for name in EXPORT_FIELDS]


@dataclass
class ExportStats:
    """What a manifest says about one file: filled in while its bytes are produced."""

    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0
    count: int = 0
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None

    def file_entry(self, name: str, fmt: str) -> dict[str, Any]:
        return {"name": name, "format": fmt, "sha256": self.digest.hexdigest(), "bytes": self.size,
                "events": self.count}


def encode(events: Iterable[dict[str, Any]], fmt: str, stats: ExportStats, *, batch: int = BATCH,
           progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """Bytes of the export, one chunk per batch of events; ``stats`` describes what was produced."""

    def emit(text: str) -> bytes:
        data = text.encode("utf-8")
        stats.digest.update(data)
        stats.size += len(data)
        return data

    buffer = io.StringIO()
    writer = csv.writer(buffer) if fmt == ExportFormat.CSV else None
    if writer is not None:
        writer.writerow(EXPORT_FIELDS)
    pending = 0
    for event in events:
        if stats.first is None:
            stats.first = event
        stats.last = event
        stats.count += 1
        if writer is not None:
            writer.writerow(csv_cells(event))
        else:
            buffer.write(jsonl_line(event))
        pending += 1
        if pending >= batch:
            yield emit(buffer.getvalue())
            buffer.seek(0)
            buffer.truncate()
            pending = 0
            if progress is not None:
                progress(stats.count)
    tail = buffer.getvalue()
    if tail:
        yield emit(tail)
    if progress is not None:
        progress(stats.count)


def export_dir() -> Path:
    configured = get_setting("AUDIT_EXPORT_DIR")
    path = Path(configured) if configured else VAR_DIR / "audit-exports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_name(export: AuditExport) -> str:
    stamp = export.created_at.strftime("%Y%m%dT%H%M%SZ")
    prefix = "evidence" if export.kind == "evidence" else "audit"
    return f"{prefix}-{stamp}-{str(export.id)[:8]}.{export.format}"


def export_queryset(export: AuditExport) -> QuerySet[AuditEvent]:
    if export.kind == "evidence":
        return evidence_queryset(resolve_subject(export.subject_type, export.subject_key,
                                                 until_sequence=export.until_sequence))
    return filtered_events(export.filters)


def build_manifest(export: AuditExport, files: list[dict[str, Any]], stats: ExportStats) -> dict[str, Any]:
    """The signed manifest: the range, its count, first and last hashes, and each file's SHA-256."""
    first, last = stats.first or {}, stats.last or {}
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "export_id": str(export.id),
        "kind": export.kind,
        "created_at": format_time(export.created_at),
        "created_by": export.requested_by,
        "filters": export.filters,
        "subject": {"type": export.subject_type, "key": export.subject_key} if export.subject_type else None,
        # The chain's tip when the export was requested: the range never goes past it, and a later
        # rewrite of the chain up to here is detectable against this signed anchor.
        "chain_head": {"sequence": export.until_sequence, "hash": export.until_hash},
        "audit_sequence": export.audit_sequence,
        "count": stats.count,
        "first_sequence": first.get("sequence"),
        "last_sequence": last.get("sequence"),
        "first_occurred_at": first.get("occurred_at"),
        "last_occurred_at": last.get("occurred_at"),
        "first_prev_hash": first.get("prev_hash"),
        "first_hash": first.get("hash"),
        "last_hash": last.get("hash"),
        "complete_prefix": bool(stats.count) and first.get("prev_hash") == GENESIS_HASH
        and last.get("sequence") == export.until_sequence == stats.count,
        "files": files,
    }
    return sign_manifest(manifest)


def stream_export(export: AuditExport, *, stats: ExportStats,
                  progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
    events = iter_events(export_queryset(export), until_sequence=export.until_sequence)
    return encode(events, export.format, stats, progress=progress)


class _Spool(io.RawIOBase):
    """A write-only, unseekable sink whose bytes are taken out as they come (zipfile streams into it)."""

    def __init__(self) -> None:
        super().__init__()
        self.pending = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.pending += bytes(data)
        return len(data)

    def take(self) -> bytes:
        data = bytes(self.pending)
        self.pending.clear()
        return data


def zip_name(export: AuditExport) -> str:
    """The download's name when the export and its manifest travel together."""
    return file_name(export) + ".zip"


def stream_export_zip(export: AuditExport, *, on_manifest: Callable[[dict[str, Any]], None]) -> Iterator[bytes]:
    """The export file and its signed ``manifest.json`` in one zip, streamed in constant memory (the
    offline verifier, ``tools/verify_export.py PACK.zip``, checks it as it stands). ``on_manifest`` gets
    the manifest once the last event is written."""
    name = file_name(export)
    sink = _Spool()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        stats = ExportStats()
        with zf.open(name, "w", force_zip64=True) as fh:
            for chunk in stream_export(export, stats=stats):
                fh.write(chunk)
                data = sink.take()
                if data:
                    yield data
        manifest = build_manifest(export, [stats.file_entry(name, export.format)], stats)
        zf.writestr("manifest.json", json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    on_manifest(manifest)
    yield sink.take()


def manifest_for_stream(export: AuditExport) -> dict[str, Any]:
    """Recompute a streamed export's manifest (its bytes are deterministic: a fixed, immutable range)."""
    stats = ExportStats()
    for _ in stream_export(export, stats=stats):
        pass
    return build_manifest(export, [stats.file_entry(file_name(export), export.format)], stats)


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def write_export_file(export: AuditExport, path: Path,
                      progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write the export (events or evidence pack) to ``path`` atomically; returns its signed manifest."""
    if export.kind == "evidence":
        return write_evidence_pack(export, path, progress=progress)
    stats = ExportStats()
    tmp = path.with_name(path.name + ".part")
    with tmp.open("wb") as fh:
        for chunk in stream_export(export, stats=stats, progress=progress):
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    return build_manifest(export, [stats.file_entry(path.name, export.format)], stats)


def write_evidence_pack(export: AuditExport, path: Path,
                        progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write the zip atomically; returns its signed manifest (also stored inside as manifest.json)."""
    subject = resolve_subject(export.subject_type, export.subject_key, until_sequence=export.until_sequence)
    queryset = evidence_queryset(subject)
    files: list[dict[str, Any]] = []
    stats_by_format: dict[str, ExportStats] = {}
    actions: Counter[str] = Counter()
    tmp = path.with_name(path.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for fmt, name in (("jsonl", "events.jsonl"), ("csv", "events.csv")):
            stats = ExportStats()
            events = iter_events(queryset, until_sequence=export.until_sequence)
            if fmt == "jsonl":
                events = _counting(events, actions)
            with zf.open(name, "w", force_zip64=True) as fh:
                for chunk in encode(events, fmt, stats, progress=progress if fmt == "jsonl" else None):
                    fh.write(chunk)
            files.append(stats.file_entry(name, fmt))
            stats_by_format[fmt] = stats
        body = (json.dumps(summary(subject, export, actions), indent=2, sort_keys=True, ensure_ascii=False,
                           default=str) + "\n").encode()
        summary_stats = ExportStats()
        summary_stats.digest.update(body)
        summary_stats.size = len(body)
        zf.writestr("summary.json", body)
        files.append({"name": "summary.json", "format": "json", "sha256": summary_stats.digest.hexdigest(),
                      "bytes": len(body)})
        manifest = build_manifest(export, files, stats_by_format["jsonl"])
        zf.writestr("manifest.json", json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return manifest


def _counting(events: Any, actions: Counter[str]) -> Any:
    for event in events:
        actions[event["action"]] += 1
        yield event
