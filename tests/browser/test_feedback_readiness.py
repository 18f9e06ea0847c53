"""End to end: a real Turnout server process, the SDK sending user feedback over HTTP, and the readiness
report showing it — through the API and in Chromium (docs/screenshots/feedback-readiness.png)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from turnout import Turnout
from turnout.engine import bucket

from tests.browser.conftest import Site, screenshot
from tests.conftest import ServerProcess

pytestmark = pytest.mark.django_db(transaction=True)

FLAG = "checkout-flow"


def _rollout() -> str:
    """checkout-flow half on parallel in staging (a started plan with guardrails and a feedback rule),
    some minutes of traffic; returns an SDK key of staging."""
    from actions.submit import submit_state
    from common import clock
    from common.actors import Actor
    from rollout.access.keys import sdk_key_create
    from rollout.plans.guardrails import guardrail_set
    from rollout.plans.stages import plan_set, rollout_advance
    from rollout.services.flags import flag_create
    from rollout.services.workloads import workload_create
    from tests.rollouts.conftest import add_metrics

    seed = Actor.system("test")
    workload_create(actor=seed, key="checkout", name="Checkout", risk="medium")
    flag_create(actor=seed, key=FLAG, workload="checkout")
    plan_set(actor=seed, flag=FLAG, environment="staging", version=None,
             stages=[{"name": "pilot", "percentage": 50, "compare_percentage": 10}, {"name": "all", "percentage": 100}])
    rollout_advance(actor=seed, flag=FLAG, environment="staging")
    guardrail_set(actor=seed, flag=FLAG, environment="staging", version=None, max_error_rate=5, min_sample_size=50)
    submit_state(actor=seed, flag=FLAG, environment="staging", action="flag_state.feedback_rule_set",
                 params={"max_score_drop": 0.5, "min_responses": 5, "window_days": 14},
                 reason="pilot users judge the new checkout")
    now = clock.now()
    for minute in range(1, 11):
        at = now - timedelta(minutes=minute)
        add_metrics("staging", FLAG, at, "legacy", calls=220 + 7 * minute, errors=1,
                    latency=[0, 0, 0, 0, 0, 0, 150, 70, 7 * minute, 0, 0, 0, 0, 0, 0, 0])
        add_metrics("staging", FLAG, at, "parallel", calls=210 + 5 * minute, errors=minute % 2, comparisons=20,
                    latency=[0, 0, 0, 0, 0, 160, 50, 5 * minute, 0, 0, 0, 0, 0, 0, 0, 0])
    return sdk_key_create(actor=seed, environment="staging", name="checkout-web")[1]


def _subjects(parallel: bool, n: int) -> list[str]:
    """Users the split puts on one path (50%, bucketed by the key)."""
    found = [f"user-{i}" for i in range(400) if (bucket(FLAG, f"user-{i}") < 500_000) == parallel]
    return found[:n]


def test_feedback__sdk_to_real_server__readiness_api_and_page_show_it(browser: Any, people: dict[str, Any]) -> None:
    sdk_key = _rollout()
    server = ServerProcess().start()
    try:
        client = Turnout(server.url, sdk_key, start_wait=10, flush_interval=0.2, stream=False)
        try:
            assert client.ready
            legacy_scores = [5, 4, 4, 5, 4, 3]
            parallel_scores = [5, 4, 5, 4, 3, 5, 4]
            comments = {0: "The new checkout remembered my address, nice. Receipt went to ann@example.com",
                        3: "Pay button was slow once, call me on +44 20 7946 0958"}
            for i, key in enumerate(_subjects(True, len(parallel_scores))):
                assert client.feedback(FLAG, key, score=parallel_scores[i], comment=comments.get(i),
                                       attributes={"country": "DE", "email": f"{key}@example.com"})
            for i, key in enumerate(_subjects(False, len(legacy_scores))):
                assert client.feedback(FLAG, key, score=legacy_scores[i],
                                       comment="Same as always." if i == 1 else None)
            client.feedback(FLAG, "support-desk", comment="Two customers asked where the coupon field went",
                            path="parallel")
            assert client.flush() is True
        finally:
            client.close()

        from rest_framework.test import APIClient

        from rollout.feedback.models import Feedback

        stored = list(Feedback.objects.order_by("pk"))
        assert len(stored) == 14
        assert {f.path_source for f in stored} == {"decided", "given"}
        assert all("@" not in f.comment and "7946" not in f.comment for f in stored)
        assert all(f.attributes.get("email") in (None, "[redacted]") for f in stored)

        api = APIClient()
        api.force_authenticate(people["vic"])
        report = api.get(f"/api/v1/flags/{FLAG}/states/staging/readiness/").json()
        feedback = report["feedback"]
        assert (feedback["parallel"]["scores"], feedback["parallel"]["responses"]) == (7, 8)
        assert feedback["legacy"]["scores"] == 6
        assert feedback["parallel"]["average_score"] == 4.29 and feedback["legacy"]["average_score"] == 4.17
        assert feedback["rule"]["status"] == "pass"
        assert "[email]" in " ".join(c["comment"] for c in feedback["latest_comments"])

        page = Site(url=server.url, browser=browser).session_for("vic")
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.goto(f"{server.url}/flags/{FLAG}/staging/readiness/")
        section = page.locator("section.feedback")
        section.get_by_text("rule passes").wait_for()
        text = section.inner_text()
        assert "4.29 / 5" in text and "4.17 / 5" in text
        assert "Receipt went to [email]" in text and "call me on [number]" in text
        assert "ann@example.com" not in page.content()
        page.locator("canvas").first.wait_for()
        screenshot(page, "feedback-readiness")
        assert problems == []
    finally:
        server.stop()
