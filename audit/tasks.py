"""Background audit work: exports too large to stream in one request (thin: id in, write, record)."""

from __future__ import annotations

from celery import shared_task

from audit.exports import export_dir, file_name, write_export_file, write_manifest
from audit.models import AuditExport, ExportStatus
from audit.services import audit_export_fail, audit_export_finish, audit_export_progress


@shared_task(bind=True, acks_late=True)
def run_audit_export(self, export_id: str) -> str | None:  # type: ignore[no-untyped-def]
    """Write the export's file and signed manifest into the export directory; returns the file name."""
    export = AuditExport.objects.filter(pk=export_id).first()
    if export is None or export.status == ExportStatus.READY:
        return export.file_name if export else None
    path = export_dir() / file_name(export)
    try:
        manifest = write_export_file(export, path, progress=lambda done: audit_export_progress(
            export_id=export.pk, done=min(done, export.total)))
        write_manifest(path.with_name(path.name + ".manifest.json"), manifest)
    except Exception as exc:
        audit_export_fail(export_id=export.pk, error=f"{type(exc).__name__}: {exc}")
        raise
    audit_export_finish(export_id=export.pk, manifest=manifest, file_name=path.name)
    return path.name
