from django.contrib import admin

from cohorts.models import Cohort
from common.admin import ReadOnlyAdmin


@admin.register(Cohort)
class CohortAdmin(ReadOnlyAdmin):
    list_display = ("key", "name", "match_on", "version")
