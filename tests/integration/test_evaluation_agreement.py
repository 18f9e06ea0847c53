"""Server evaluation (POST /api/v1/sdk/evaluate and /bulk, OFREP single and bulk) and the SDK's local
``decide`` over the same ruleset agree on every decision."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from turnout.engine import Ruleset, compile_ruleset
from turnout.types import Decision

from common.actors import Actor
from rollout.access.keys import sdk_key_create
from rollout.delivery.ruleset import get_ruleset
from rollout.models import Environment
from tests.evaluation_contexts import generate_contexts, ofrep_reason


def expected_sdk(decision: Decision) -> dict[str, Any]:
    """The SDK's Decision, field for field, receipt included (``error_code`` and ``detail`` only when set)."""
    body = {f.name: getattr(decision, f.name) for f in dataclasses.fields(decision)}
    return {name: (str(v) if name in ("path", "reason", "error_code") and v is not None else v)
            for name, v in body.items() if v is not None or name not in ("error_code", "detail")}


def assert_ofrep_matches(item: dict[str, Any], decision: Decision, ruleset: Ruleset) -> None:
    assert item["key"] == decision.flag
    if decision.error_code is not None:
        assert item["errorCode"] == decision.error_code and "value" not in item
        return
    assert item["value"] is (str(decision.path) == "parallel")
    assert item["variant"] == str(decision.path)
    assert item["reason"] == ofrep_reason(decision, ruleset)
    assert item["metadata"]["compare"] is decision.compare
    assert item["metadata"]["turnoutReason"] == str(decision.reason)


def ofrep_context(key: Any, attributes: dict[str, Any] | None) -> dict[str, Any]:
    context = dict(attributes or {})
    if key is not None:
        context["targetingKey"] = key
    return context


def _post(client: Any, url: str, body: Any, secret: str, **headers: str) -> Any:
    return client.post(url, json.dumps(body), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {secret}", **headers)


SINGLE_EVERY = 5


@pytest.fixture
def demo_keys(demo: None, settings: Any) -> dict[str, tuple[str, Ruleset]]:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"sdk": "1000000/min"}}
    out = {}
    for env in Environment.objects.all():
        secret = sdk_key_create(actor=Actor.system("test"), environment=env.key, name="agreement")[1]
        out[env.key] = (secret, compile_ruleset(get_ruleset(env.pk).document()))
    return out


@pytest.mark.django_db
def test_evaluation__10000_contexts__server_ofrep_and_local_decide_agree(client, demo_keys):
    envs = sorted(demo_keys)
    flags = [*sorted(demo_keys[envs[0]][1].flag_keys), "no-such-flag"]
    decisions = 0
    for n, (key, attributes) in enumerate(generate_contexts(10_000)):
        secret, ruleset = demo_keys[envs[n % len(envs)]]
        local = {flag: ruleset.decide(flag, key, attributes) for flag in flags}
        decisions += len(local)

        # SDK API and OFREP, bulk: every flag of the environment, for every context.
        bulk = _post(client, "/api/v1/sdk/evaluate/bulk", {"context": {"key": key, "attributes": attributes}},
                     secret).json()
        assert bulk["flags"] == {f: expected_sdk(d) for f, d in local.items() if f in ruleset.flag_keys}, (key,
                                                                                                           attributes)
        context = ofrep_context(key, attributes)
        items = _post(client, "/ofrep/v1/evaluate/flags", {"context": context}, secret).json()["flags"]
        assert [i["key"] for i in items] == sorted(ruleset.flag_keys)
        for item in items:
            assert_ofrep_matches(item, local[item["key"]], ruleset)
        if n % SINGLE_EVERY:
            continue
        # The single-flag endpoints answer from the same evaluation as the bulk ones: every fifth
        # context asks them, one flag in turn (the unknown one too).
        turn = n // SINGLE_EVERY
        flag = flags[turn % len(flags)]
        single = _post(client, "/api/v1/sdk/evaluate", {"flag": flag, "context": {"key": key,
                                                                                 "attributes": attributes}}, secret)
        assert single.json() == expected_sdk(local[flag]), (flag, key, attributes)

        flag = flags[(turn + 2) % len(flags)]
        response = _post(client, f"/ofrep/v1/evaluate/flags/{flag}", {"context": context}, secret)
        assert_ofrep_matches(response.json(), local[flag], ruleset)
        expected_status = 200 if local[flag].error_code is None else (
            404 if local[flag].error_code == "FLAG_NOT_FOUND" else 400)
        assert response.status_code == expected_status
    assert decisions == 10_000 * len(flags)
