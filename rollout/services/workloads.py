from __future__ import annotations

from typing import Any

from django.db import IntegrityError

from audit.names import Action
from audit.services import audit_record, audited_atomic
from common.actors import Actor
from common.errors import Conflict, NotFound, ValidationFailed
from common.services import UNSET, check_version, full_clean
from rollout.models import Workload
from rollout.policy import Approval, enforce, workload_effect
from rollout.snapshots import workload_snapshot

EDITABLE = ("name", "description", "owner", "risk", "phase", "reversibility", "legacy_system", "parallel_system")


def _get_for_update(key: str) -> Workload:
    workload = Workload.objects.select_for_update().filter(key=key).first()
    if workload is None:
        raise NotFound(f"workload '{key}' does not exist")
    return workload


def workload_create(*, actor: Actor, key: str, name: str, reason: str = "", **fields: Any) -> Workload:
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise ValidationFailed.field(sorted(unknown)[0], "is not a workload field")
    enforce(actor, Action.WORKLOAD_CREATED)
    with audited_atomic():
        workload = Workload(key=key, name=name, **fields)
        full_clean(workload)
        try:
            workload.save(force_insert=True)
        except IntegrityError:
            raise ValidationFailed.field("key", f"a workload '{key}' already exists") from None
        audit_record(actor=actor, action=Action.WORKLOAD_CREATED, object_type="workload", object_key=workload.key,
                     after=workload_snapshot(workload), reason=reason)
    return workload


def workload_update(*, actor: Actor, key: str, version: int | None = None, reason: str = "",
                    approval: Approval | None = None, **fields: Any) -> Workload:
    """Risk and reversibility are what policy is made of: changing them needs the approval that the
    current and the new value require (``rollout.policy.workload_effect``)."""
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise ValidationFailed.field(sorted(unknown)[0], "is not an editable workload field")
    with audited_atomic():
        workload = _get_for_update(key)
        changes = {f: v for f, v in fields.items() if v is not UNSET}
        enforce(actor, Action.WORKLOAD_UPDATED, workload_effect(workload, changes), approval=approval,
                what=f"changing workload '{key}'")
        check_version(workload, version, what=f"workload '{key}'")
        before = workload_snapshot(workload)
        for field, value in fields.items():
            if value is not UNSET:
                setattr(workload, field, value)
        full_clean(workload, validate_unique=False)
        after = workload_snapshot(workload)
        if {k: v for k, v in after.items() if k != "version"} == {k: v for k, v in before.items() if k != "version"}:
            return workload
        workload.version += 1
        workload.save()
        after = workload_snapshot(workload)
        if approval:
            after["approval"] = approval.as_audit()
        audit_record(actor=actor, action=Action.WORKLOAD_UPDATED, object_type="workload", object_key=workload.key,
                     before=before, after=after, reason=reason)
    return workload


def workload_delete(*, actor: Actor, key: str, version: int | None = None, reason: str = "") -> None:
    with audited_atomic():
        workload = _get_for_update(key)
        enforce(actor, Action.WORKLOAD_DELETED)
        check_version(workload, version, what=f"workload '{key}'")
        if workload.flags.exists():
            raise Conflict(f"workload '{key}' still has flags; delete them first")
        before = workload_snapshot(workload)
        workload.delete()
        audit_record(actor=actor, action=Action.WORKLOAD_DELETED, object_type="workload", object_key=key,
                     before=before, reason=reason)
