"""A cohort's member lists get a version of their own and a stored count (rollout/delivery/members.py)."""

import django.db.models.deletion
from django.apps.registry import Apps
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.models import Count


def count_members(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Cohort = apps.get_model("cohorts", "Cohort")
    MemberListState = apps.get_model("cohorts", "MemberListState")
    MemberListState.objects.bulk_create([
        MemberListState(cohort_id=pk, version=1, count=count)
        for pk, count in Cohort.objects.annotate(n=Count("members")).values_list("pk", "n") if count
    ])


class Migration(migrations.Migration):
    dependencies = [("cohorts", "0002_neutralise_unsafe_regex_rules")]

    operations = [
        migrations.CreateModel(
            name="MemberListState",
            fields=[
                ("cohort", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True,
                                                related_name="member_list", serialize=False, to="cohorts.cohort")),
                ("version", models.PositiveIntegerField(default=0)),
                ("count", models.PositiveIntegerField(default=0)),
            ],
        ),
        migrations.RunPython(count_members, migrations.RunPython.noop),
    ]
