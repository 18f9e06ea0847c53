"""Background audit work: exports too large to stream in one request, and verification of the whole
chain (thin: id in, do the work, record)."""

from __future__ import annotations

from celery import Task, shared_task

from audit.exports import export_dir, file_name, write_export_file, write_manifest
from audit.models import AuditExport, AuditVerification, ExportStatus
from audit.services import (
    audit_export_fail,
    audit_export_finish,
    audit_export_progress,
    audit_verification_error,
    audit_verification_finish,
    audit_verification_progress,
    auth_login_failed_burst_recorded,
)
from audit.verify import verify_chain
from common.actors import Actor

VERIFIER = Actor.system("audit-verify")


@shared_task(acks_late=True)
def close_login_failure_bursts() -> int:
    """Failed sign-ins counted in windows that have ended become their ``auth.login_failed_burst``
    events even when no further sign-in comes to close them; returns how many were written."""
    return len(auth_login_failed_burst_recorded(actor=Actor.anonymous()))


@shared_task(bind=True, acks_late=True)
def run_audit_export(self: Task[[str], str | None], export_id: str) -> str | None:
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


@shared_task(bind=True, acks_late=True)
def run_audit_verification(self: Task[[str], str | None], verification_id: str) -> str | None:
    """Walk the whole chain with progress, then record the report and its outcome event; returns the status.

    Re-delivered (acks_late: the worker died mid-walk), it walks again from the start; a finished job is
    left as it is.
    """
    verification = AuditVerification.objects.filter(pk=verification_id).first()
    if verification is None or verification.finished:
        return verification.status if verification else None
    pk = verification.pk
    try:
        report = verify_chain(progress=lambda checked, total: audit_verification_progress(
            verification_id=pk, checked=checked, total=total))
    except Exception as exc:
        audit_verification_error(verification_id=pk, error=f"{type(exc).__name__}: {exc}")
        raise
    try:
        finished = audit_verification_finish(actor=VERIFIER, verification_id=pk, report=report)
    except Exception as exc:
        audit_verification_error(verification_id=pk, report=report, error="the outcome could not be recorded in the "
                                 f"audit log: {type(exc).__name__}: {exc}")
        raise
    return str(finished.status)
