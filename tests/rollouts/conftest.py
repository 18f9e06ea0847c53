"""Fixtures for rollouts: people with roles, cohorts, a flag with a plan, metrics rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from common.actors import Actor


@pytest.fixture
def people(db: Any) -> dict[str, Actor]:
    """Actors for users with roles: editor ``ed``, approvers ``ann`` and ``bob``, admin ``root``."""
    from django.contrib.auth import get_user_model

    from rollout.access.users import user_create

    system = Actor.system("test")
    out: dict[str, Actor] = {}
    for name, roles in {"ed": ["editor"], "ann": ["approver"], "bob": ["approver"], "root": ["admin"],
                        "vic": ["viewer"]}.items():
        user_create(actor=system, username=name, password=None, roles=roles)
        out[name] = Actor.for_user(get_user_model().objects.get(username=name))
    return out


@pytest.fixture
def cohorts(db: Any, actor: Actor) -> None:
    from cohorts.services import cohort_create

    cohort_create(actor=actor, key="staff", name="Staff")
    cohort_create(actor=actor, key="pilot-eu", name="Pilot EU")


@pytest.fixture
def planned(flag: Any, cohorts: None, actor: Actor) -> Any:
    """invoice-engine with the standard plan (soaks of 600 s) in staging and production."""
    from rollout.plans.stages import plan_set, plan_template

    stages = plan_template("standard", internal_cohorts=["staff"], pilot_cohorts=["pilot-eu"], soak_seconds=600)
    for env in ("staging", "production"):
        plan_set(actor=actor, flag=flag.key, environment=env, version=None, stages=stages)
    return flag


def add_metrics(env_key: str, flag_key: str, minute: datetime, path: str, *, calls: int, errors: int = 0,
                comparisons: int = 0, mismatches: int = 0, latency: list[int] | None = None,
                runs: int | None = None) -> None:
    """One per-minute metrics row, as the roll-up of SDK reports leaves it (``runs``: by default
    every decision ran, as ``run()`` alone would leave it)."""
    from rollout.models import Environment, MetricMinute

    histogram = latency or [0, 0, 0, 0, 0, calls, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    MetricMinute.objects.create(environment=Environment.objects.get(key=env_key), flag_key=flag_key, path=path,
                                minute=minute.replace(second=0, microsecond=0), calls=calls,
                                runs=sum(histogram) if runs is None else runs, errors=errors,
                                comparisons=comparisons, mismatches=mismatches, latency_ms=histogram)


@pytest.fixture
def redis_clean(redis_url: str, settings: Any) -> Iterator[Any]:
    """Redis for the counts, without what earlier tests left in the metrics and trigger keys."""
    import redis

    settings.REDIS_URL = redis_url
    client = redis.Redis.from_url(redis_url)

    def clean() -> None:
        for pattern in ("turnout:metrics:*", "turnout:guardrail:triggered:*"):
            keys = list(client.scan_iter(pattern))
            if keys:
                client.delete(*keys)

    clean()
    yield client
    clean()
