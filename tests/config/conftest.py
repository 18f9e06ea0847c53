"""Configuration-as-code fixtures: an admin (and other roles) acting through the action layer, an empty
installation made from a populated one, the rulesets of an installation."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import admin_api, as_role, tokens  # noqa: F401  # the API's role fixtures, shared


def people() -> dict[str, Any]:
    from common.actors import Actor
    from rollout.access.users import user_create

    system = Actor.system("test")
    out: dict[str, Any] = {}
    for role in ("admin", "editor", "approver", "viewer"):
        user = user_create(actor=system, username=f"cfg-{role}", password=None, roles=[role])
        out[role] = Actor.for_user(user)
    return out


@pytest.fixture
def actors(db: Any) -> dict[str, Any]:
    return people()


def rulesets() -> dict[str, Any]:
    """Every environment's ruleset document without its version (which only grows)."""
    from rollout.delivery.ruleset import build_document
    from rollout.models import Environment

    out: dict[str, Any] = {}
    for env in Environment.objects.order_by("key"):
        doc = dict(build_document(env))
        doc.pop("version")
        out[env.key] = doc
    return out


def canonical(value: Any) -> bytes:
    import json

    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def wipe() -> None:
    """An empty installation (users and the audit log stay): rows removed directly, as a new database would be."""
    from cohorts.models import Cohort
    from rollout.models import ChangeRequest, Environment, Flag, FlagState, ReviewItem, Workload

    ReviewItem.objects.all().delete()
    ChangeRequest.objects.all().delete()
    FlagState.objects.all().delete()
    Flag.objects.all().delete()
    Workload.objects.all().delete()
    Cohort.objects.all().delete()
    Environment.objects.all().delete()
