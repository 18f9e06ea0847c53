from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from common.actors import Actor

SETUP = Actor.system("setup")


@pytest.fixture
def api_as(db: Any) -> Callable[[str], Any]:
    """``api_as("compliance")``: an APIClient authenticated by an API token of a user with that role
    (``None``: no role at all); its actor label is on ``client.actor``."""
    from rest_framework.test import APIClient

    from rollout.access.keys import api_token_create
    from rollout.access.users import user_create

    def make(role: str | None) -> Any:
        username = f"{role or 'norole'}-user"
        user_create(actor=SETUP, username=username, password=None, roles=[role] if role else [])
        token, secret = api_token_create(actor=SETUP, username=username, name="tests")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        client.actor = f"{username} via {token.prefix}"
        return client

    return make


@pytest.fixture
def verifier() -> Any:
    """The standalone offline verifier (tools/verify_export.py), loaded as the CLI loads it."""
    from audit.management.commands.audit_verify_export import offline_verifier

    return offline_verifier()


@pytest.fixture
def history(db: Any) -> None:
    """A small realistic history: environments, a workload with a flag rolled out and killed, a cohort."""
    from cohorts.services import cohort_create, cohort_members_add
    from rollout.access.keys import sdk_key_create
    from rollout.services.environments import environment_create
    from rollout.services.flags import flag_create, flag_state_kill, flag_state_update
    from rollout.services.workloads import workload_create

    environment_create(actor=SETUP, key="staging", name="Staging")
    environment_create(actor=SETUP, key="production", name="Production", order=1)
    workload_create(actor=SETUP, key="billing", name="Billing", risk="high")
    workload_create(actor=SETUP, key="search", name="Search")
    cohort_create(actor=SETUP, key="pilot", name="Pilot")
    cohort_members_add(actor=SETUP, key="pilot", subjects=["t1", "t2"])
    flag_create(actor=SETUP, key="invoice-engine", workload="billing", bucket_by="tenant_id")
    flag_create(actor=SETUP, key="search-v2", workload="search")
    flag_state_update(actor=Actor.system("alice"), flag="invoice-engine", environment="staging", version=None,
                      enabled=True, percentage_value=10, include_cohorts=["pilot"], reason="pilot")
    flag_state_update(actor=Actor.system("alice"), flag="invoice-engine", environment="staging", version=None,
                      percentage_value=50, reason="widen")
    flag_state_kill(actor=Actor.system("guardrail"), flag="invoice-engine", environment="staging",
                    reason="error rate 7.2% > 5%")
    flag_state_update(actor=SETUP, flag="search-v2", environment="production", version=None, enabled=True,
                      percentage_value=5)
    sdk_key_create(actor=SETUP, environment="staging", name="billing-svc")
