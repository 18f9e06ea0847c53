from django.contrib import admin

from common.admin import ReadOnlyAdmin
from rollout.models import ApiToken, Environment, Flag, FlagState, SdkKey, Workload


@admin.register(Environment)
class EnvironmentAdmin(ReadOnlyAdmin):
    list_display = ("key", "name", "order", "requires_approval", "ruleset_version")


@admin.register(Workload)
class WorkloadAdmin(ReadOnlyAdmin):
    list_display = ("key", "name", "risk", "phase", "owner")


@admin.register(Flag)
class FlagAdmin(ReadOnlyAdmin):
    list_display = ("key", "workload", "bucket_by")


@admin.register(FlagState)
class FlagStateAdmin(ReadOnlyAdmin):
    list_display = ("flag", "environment", "enabled", "retired", "percentage", "stage", "version")


@admin.register(SdkKey)
class SdkKeyAdmin(ReadOnlyAdmin):
    list_display = ("prefix", "name", "environment", "last_used_at", "revoked_at")
    exclude = ("secret_hash",)


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ("prefix", "name", "user", "last_used_at", "revoked_at")
    exclude = ("secret_hash",)
