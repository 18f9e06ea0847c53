"""Management API fixtures: one user (and API token) per role, and clients acting as them."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

ROLES = ("viewer", "editor", "approver", "admin", "compliance")


def make_user(username: str, roles: list[str]) -> tuple[Any, str]:
    from common.actors import Actor
    from rollout.access.keys import api_token_create
    from rollout.access.users import user_create

    actor = Actor.system("test")
    user = user_create(actor=actor, username=username, password=None, roles=roles)
    _, secret = api_token_create(actor=actor, username=username, name=f"{username}-token")
    return user, secret


def bearer_client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def tokens(db: Any) -> dict[str, str]:
    """role -> API token secret of a user holding just that role (username = role)."""
    return {role: make_user(role, [role])[1] for role in ROLES}


@pytest.fixture
def as_role(tokens: dict[str, str]):  # type: ignore[no-untyped-def]
    def client(role: str) -> APIClient:
        if role == "anonymous":
            return APIClient()
        return bearer_client(tokens[role])

    return client


@pytest.fixture
def admin_api(as_role) -> APIClient:  # type: ignore[no-untyped-def]
    return as_role("admin")


@pytest.fixture
def world(envs: dict[str, Any], flag: Any, actor: Any) -> dict[str, Any]:
    """Environments (production requires approval), a workload with a flag, a cohort with members."""
    from cohorts.services import cohort_create, cohort_members_add

    cohort_create(actor=actor, key="pilot", name="Pilot")
    cohort_members_add(actor=actor, key="pilot", subjects=["t1", "t2"])
    return {"envs": envs, "flag": flag}
