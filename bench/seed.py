"""Bench data: one environment with N flags and a pilot cohort of M listed members, inserted in bulk.

Benchmarks are not the product: they bulk-insert rows (COPY for members) instead of going through
the services, so seeding a million members takes seconds. Runs on PostgreSQL only, in a database
of its own (``turnout_bench*``); ``reset()`` empties the domain tables (never the audit log).

Shape of the data (what a large real installation looks like):
- flags ``flag-0000``…: enabled, a percentage split, 5% shadow comparison, 3 overrides, half of them
  bucketed by ``tenant_id``; each includes cohort ``pilot`` and excludes ``regulated``;
- cohort ``pilot``: a country rule plus M listed subjects ``user-0000001``…;
- cohort ``regulated``: a sector rule plus 50 listed tenants (``match_on: tenant_id``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def setup_django(database: str) -> None:
    """Django on ``DATABASE_URL`` (default: a local ``database`` on PostgreSQL), created afresh and migrated."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/{database}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    _create_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _create_database(url: str) -> None:
    """A fresh bench database on every run (benches never reuse state; the name must say bench)."""
    import psycopg
    from psycopg import sql

    name = url.rsplit("/", 1)[1].split("?")[0]
    if "bench" not in name:
        raise SystemExit(f"refusing to recreate database {name!r}: bench databases are named turnout_bench*")
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


DOMAIN_TABLES = [
    "rollout_flagstate_include_cohorts", "rollout_flagstate_exclude_cohorts", "rollout_flagstate", "rollout_flag",
    "rollout_workload", "cohorts_cohortmember", "cohorts_memberliststate", "cohorts_cohort", "rollout_sdkkey",
    "rollout_environment",
]


def reset() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(DOMAIN_TABLES)} RESTART IDENTITY CASCADE")


@dataclass(frozen=True)
class Seeded:
    environment_id: int
    flags: list[str]
    members: int


def seed(*, flags: int, members: int, environment: str = "production") -> Seeded:
    from decimal import Decimal

    from django.db import connection, transaction
    from django.utils import timezone

    from cohorts.models import Cohort, MemberKind, MemberListState
    from rollout.models import Environment, Flag, FlagState, Workload

    with transaction.atomic():
        env = Environment.objects.create(key=environment, name=environment.title(), order=0)
        workload = Workload.objects.create(key="bench", name="Bench workload", risk="medium")
        pilot = Cohort.objects.create(
            key="pilot", name="Pilot", match_on="",
            rules={"any": [{"attr": "country", "op": "in", "values": ["DE", "FR"]}]},
        )
        regulated = Cohort.objects.create(
            key="regulated", name="Regulated", match_on="tenant_id",
            rules={"all": [{"attr": "sector", "op": "eq", "values": ["banking"]}]},
        )
        keys = [f"flag-{i:04d}" for i in range(flags)]
        flag_rows = Flag.objects.bulk_create([
            Flag(key=key, workload=workload, salt=key, bucket_by="tenant_id" if i % 2 else "")
            for i, key in enumerate(keys)
        ], batch_size=2000)
        states = FlagState.objects.bulk_create([
            FlagState(flag=flag, environment=env, enabled=True, percentage=Decimal((i * 7) % 100),
                      compare_percentage=Decimal(5), stage=1,
                      overrides={f"user-override-{i}-{j}": ("parallel" if j % 2 else "legacy") for j in range(3)})
            for i, flag in enumerate(flag_rows)
        ], batch_size=2000)
        include = FlagState.include_cohorts.through
        exclude = FlagState.exclude_cohorts.through
        include.objects.bulk_create([include(flagstate_id=s.pk, cohort_id=pilot.pk) for s in states], batch_size=5000)
        exclude.objects.bulk_create([exclude(flagstate_id=s.pk, cohort_id=regulated.pk) for s in states],
                                    batch_size=5000)
        now = timezone.now()
        with connection.cursor() as cursor, cursor.cursor.copy(
            "COPY cohorts_cohortmember (cohort_id, subject, kind, added_at) FROM STDIN"
        ) as copy:
            for i in range(members):
                copy.write_row((pilot.pk, f"user-{i:07d}", MemberKind.INCLUDE.value, now))
            for i in range(50):
                copy.write_row((regulated.pk, f"tenant-{i:04d}", MemberKind.INCLUDE.value, now))
    # The member services keep each cohort's list version and count; the seed writes rows directly.
    MemberListState.objects.create(cohort=pilot, version=1, count=members)
    MemberListState.objects.create(cohort=regulated, version=1, count=50)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE cohorts_cohortmember")
    return Seeded(environment_id=env.pk, flags=keys, members=members)


def bump_version(environment_id: int) -> int:
    """A new ruleset version of the same content (what a change does to the version)."""
    from django.db.models import F

    from rollout.models import Environment

    Environment.objects.filter(pk=environment_id).update(ruleset_version=F("ruleset_version") + 1)
    return Environment.objects.values_list("ruleset_version", flat=True).get(pk=environment_id)


def sdk_key(environment: str = "production") -> str:
    from common.actors import Actor
    from rollout.access.keys import sdk_key_create

    return sdk_key_create(actor=Actor.system("bench"), environment=environment, name="bench")[1]


def describe(seeded: Seeded) -> dict[str, Any]:
    return {"flags": len(seeded.flags), "members": seeded.members}
