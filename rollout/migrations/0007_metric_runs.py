"""``runs`` on the metric rows: the runs of a path whose outcome is known, the denominator of its
error rate (``calls`` also counts bare ``decide()`` decisions, which run nothing). Rows stored
before it get the runs their latency histogram counted: until now the SDK timed exactly its runs."""

from django.apps.registry import Apps
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor


def fill_runs(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    for name in ("MetricMinute", "MetricHour"):
        model = apps.get_model("rollout", name)
        changed = []
        for row in model.objects.only("pk", "latency_ms").iterator(chunk_size=2000):
            runs = sum(n for n in (row.latency_ms or []) if isinstance(n, int))
            if runs:
                row.runs = runs
                changed.append(row)
            if len(changed) >= 2000:
                model.objects.bulk_update(changed, ["runs"])
                changed = []
        if changed:
            model.objects.bulk_update(changed, ["runs"])


class Migration(migrations.Migration):

    dependencies = [
        ('rollout', '0006_guardrail_last_check'),
    ]

    operations = [
        migrations.AddField(
            model_name='metrichour',
            name='runs',
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='metricminute',
            name='runs',
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.RunPython(fill_runs, migrations.RunPython.noop),
        migrations.AlterField(
            model_name='guardrail',
            name='min_sample_size',
            field=models.PositiveIntegerField(default=100, help_text='parallel runs (or comparisons) needed to judge'),
        ),
    ]
