"""The dashboard shows a guardrail that passed but came close to its limit, before it trips."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from common.actors import Actor
from rollout.access.keys import sdk_key_create
from rollout.models import FlagState
from rollout.plans.guardrails import guardrail_check, guardrail_set
from rollout.services.flags import flag_state_update
from rollout.telemetry.batches import HISTOGRAM_SIZE
from tests.ui_support import signed_in, text

pytestmark = pytest.mark.django_db


def _row(path: str, calls: int, errors: int) -> dict[str, Any]:
    latency = [0] * HISTOGRAM_SIZE
    latency[3] = calls
    return {"flag": "invoice-engine", "path": path, "version": 2, "calls": calls, "errors": errors, "fallbacks": 0,
            "latency_ms": latency, "comparisons": 0, "mismatches": 0, "compare_skipped": 0, "compare_errors": 0,
            "compare_timeouts": 0, "error_codes": {}}


def _report(key: str, *, parallel_errors: int) -> None:
    """What an SDK sends: 1,000 calls on each path, some parallel ones failed."""
    batch = {"sdk": {"name": "turnout-python", "version": "0.1.0", "code_version": None},
             "window": {"start": "2026-12-06T10:00:00Z", "end": "2026-12-06T10:00:10Z"},
             "flags": [_row("legacy", 1000, 0), _row("parallel", 1000, parallel_errors)],
             "mismatch_samples": [], "breaker_events": [], "dropped": {}}
    response = Client().post("/api/v1/sdk/metrics", json.dumps(batch), content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code in {200, 202, 204}, response.content


@pytest.mark.parametrize(("errors", "shown"), [(12, "near limit: error rate 1.2% of 1.5%"), (3, None)])
def test_dashboard__guardrail_passed_close_to_its_limit__row_says_near_limit(flag: Any, errors: int,
                                                                             shown: str | None) -> None:
    system = Actor.system("test")
    flag_state_update(actor=system, flag="invoice-engine", environment="staging", version=None, enabled=True,
                      percentage_value=50)
    guardrail_set(actor=system, flag="invoice-engine", environment="staging", version=None, max_error_rate=1.5,
                  min_sample_size=100, window_seconds=900, action="rollback")
    _report(sdk_key_create(actor=system, environment="staging", name="svc")[1], parallel_errors=errors)
    state = FlagState.objects.get(flag__key="invoice-engine", environment__key="staging")

    guardrail_check(flag_state_id=state.pk)

    body = text(signed_in("viewer").get("/"))
    assert "guardrails healthy" in body
    if shown is None:
        assert "near limit" not in body
    else:
        assert shown in body
