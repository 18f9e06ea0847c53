"""Receipts (issue 18): the server's evaluate answers carry the same receipt as the SDK's
``Decision`` — rule, bucket, stage, version, and a detail when the bucket_by attribute is missing.

A real ``turnout`` client, fed by a real web process, decides for generated subjects over the demo
data set; the same web process answers ``/api/v1/sdk/evaluate``, ``/evaluate/bulk`` and OFREP for
the same subjects; every field agrees.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from typing import Any

import pytest
from turnout import Turnout
from turnout.types import Decision

from common.actors import Actor
from rollout.access.keys import sdk_key_create
from rollout.demo import seed_demo
from tests.evaluation_contexts import generate_contexts


def _post(url: str, secret: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {secret}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # OFREP answers an unknown flag or a bad context with a 4xx
        return json.loads(exc.read())


def receipt(decision: Decision) -> dict[str, Any]:
    """The SDK decision as the server must write it: every field, ``error_code``/``detail`` when set."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(decision):
        value = getattr(decision, field.name)
        if value is None and field.name in ("error_code", "detail"):
            continue
        out[field.name] = str(value) if field.name in ("path", "reason", "error_code") and value else value
    return out


@pytest.mark.django_db(transaction=True)
def test_receipts__sdk_client_and_server__same_rule_bucket_stage_version(server_process: Any) -> None:
    seed_demo()
    secret = sdk_key_create(actor=Actor.system("test"), environment="staging", name="receipts")[1]
    server_process.env["TURNOUT_THROTTLE_SDK"] = "1000000/min"
    server_process.start()
    base = server_process.url
    with Turnout(base, secret, send_metrics=False, stream=False) as client:
        assert client.ready  # start_wait: the first ruleset is in use when the client is built
        assert client.ruleset is not None
        flags = sorted(client.ruleset.flag_keys)
        details = rules = 0
        for n, (key, attributes) in enumerate(generate_contexts(300, seed=18)):
            context = {"key": key, "attributes": attributes}
            local = {flag: client.decide(flag, key, attributes) for flag in flags}
            bulk = _post(f"{base}/api/v1/sdk/evaluate/bulk", secret, {"context": context})
            assert bulk["version"] == client.version
            assert bulk["flags"] == {flag: receipt(d) for flag, d in local.items()}, (key, attributes)
            flag = flags[n % len(flags)]
            single = _post(f"{base}/api/v1/sdk/evaluate", secret, {"flag": flag, "context": context})
            assert single == receipt(local[flag]), (flag, key, attributes)
            ofrep_context = {**(attributes or {}), **({"targetingKey": key} if key is not None else {})}
            item = _post(f"{base}/ofrep/v1/evaluate/flags/{flag}", secret, {"context": ofrep_context})
            meta = item.get("metadata", {})
            for name in ("rule", "bucket", "stage", "version", "detail"):
                assert meta.get(name) == getattr(local[flag], name), (name, flag, key, attributes)
            details += sum(d.detail is not None for d in local.values())
            rules += len({d.rule for d in local.values()})
        # the subjects reached the receipts worth checking: missing bucket_by attributes and splits
        assert details > 0
        assert rules > 300
