from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group

from audit.models import AuditEvent, AuditExport, AuditVerification
from common.admin import ReadOnlyAdmin


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("sequence", "occurred_at", "actor", "action", "object_type", "object_key", "environment")
    list_filter = ("action", "object_type", "environment")


@admin.register(AuditExport)
class AuditExportAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "format", "status", "total", "done", "requested_by", "created_at")


@admin.register(AuditVerification)
class AuditVerificationAdmin(ReadOnlyAdmin):
    list_display = ("id", "status", "total", "checked", "requested_by", "created_at", "finished_at")


# Users and their roles (groups) change only through the audited services: Django's own admin for
# them would be an unaudited write path (a role change with no audit event), so it is read-only too.
if TYPE_CHECKING:  # UserAdmin is generic only in django-stubs, not at run time
    _UserAdmin = UserAdmin[Any]
else:
    _UserAdmin = UserAdmin


class ReadOnlyUserAdmin(ReadOnlyAdmin, _UserAdmin):
    pass


class ReadOnlyGroupAdmin(ReadOnlyAdmin, GroupAdmin):
    pass


for _model, _admin in ((get_user_model(), ReadOnlyUserAdmin), (Group, ReadOnlyGroupAdmin)):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, _admin)
