"""The published OpenFeature SDK with the published OFREP provider, against a real Turnout web
process, gets the engine's answers; and the SDK evaluate endpoint over real HTTP agrees too."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from turnout.engine import compile_ruleset

from common.actors import Actor
from rollout.access.keys import sdk_key_create
from rollout.delivery.ruleset import get_ruleset
from rollout.demo import seed_demo
from rollout.models import Environment
from tests.evaluation_contexts import generate_contexts, ofrep_reason
from tests.integration.test_evaluation_agreement import expected_sdk


def _of_context(key: Any, attributes: dict[str, Any] | None) -> EvaluationContext:
    # OpenFeature contexts carry no None values and a string targeting key (or none).
    attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
    return EvaluationContext(targeting_key=key if isinstance(key, str) and key else None, attributes=attrs)


@pytest.fixture
def live(server_process: Any) -> dict[str, Any]:
    seed_demo()
    env = Environment.objects.get(key="production")
    secret = sdk_key_create(actor=Actor.system("test"), environment=env.key, name="interop")[1]
    ruleset = compile_ruleset(get_ruleset(env.pk).document())
    server_process.env["TURNOUT_THROTTLE_SDK"] = "1000000/min"
    server_process.start()
    return {"url": server_process.url, "secret": secret, "ruleset": ruleset}


def test_ofrep_interop__published_provider__same_answers_as_the_engine(live):
    provider = OFREPProvider(live["url"], headers_factory=lambda: {"Authorization": f"Bearer {live['secret']}"})
    api.set_provider(provider, "turnout-interop")
    client = api.get_client("turnout-interop")
    ruleset = live["ruleset"]
    flags = [*sorted(ruleset.flag_keys), "no-such-flag"]
    try:
        for n, (key, attributes) in enumerate(generate_contexts(150, seed=11)):
            context = _of_context(key, attributes)
            flag = flags[n % len(flags)]
            local = ruleset.decide(flag, context.targeting_key, context.attributes)
            details = client.get_boolean_details(flag, False, context)
            if local.error_code is not None:
                assert details.reason == Reason.ERROR
                assert details.error_code == ErrorCode(str(local.error_code)), (flag, key, details)
                assert details.value is False
                continue
            assert details.error_code is None, (flag, key, details)
            assert details.value is (str(local.path) == "parallel")
            assert details.variant == str(local.path)
            assert details.reason == ofrep_reason(local, ruleset)
            assert details.flag_metadata["compare"] is local.compare
            assert details.flag_metadata["version"] == local.version
    finally:
        api.clear_providers()


def test_sdk_evaluate_over_http__generated_contexts__same_as_local_decide(live):
    ruleset = live["ruleset"]
    flags = sorted(ruleset.flag_keys)
    for n, (key, attributes) in enumerate(generate_contexts(150, seed=12)):
        flag = flags[n % len(flags)]
        body = json.dumps({"flag": flag, "context": {"key": key, "attributes": attributes}}).encode()
        request = urllib.request.Request(f"{live['url']}/api/v1/sdk/evaluate", data=body, method="POST", headers={
            "Authorization": f"Bearer {live['secret']}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read()) == expected_sdk(ruleset.decide(flag, key, attributes))
