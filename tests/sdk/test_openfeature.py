"""The OpenFeature provider, exercised through the published openfeature-sdk."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

openfeature = pytest.importorskip("openfeature")

from openfeature import api  # noqa: E402
from openfeature.evaluation_context import EvaluationContext  # noqa: E402
from openfeature.exception import ErrorCode as OFErrorCode  # noqa: E402
from openfeature.flag_evaluation import Reason as OFReason  # noqa: E402
from turnout import Breaker, Turnout  # noqa: E402
from turnout.openfeature import TurnoutProvider  # noqa: E402
from turnout.testing import ruleset  # noqa: E402

DOC = ruleset(
    {
        "invoice-engine": {"percentage": 0.0, "overrides": {"vip": "parallel"}, "stage": 2},
        "killed": {"enabled": False, "percentage": 100.0},
        "half": 50.0,
    },
    version=12,
)


@pytest.fixture
def client() -> Iterator[Turnout]:
    c = Turnout.offline(DOC, breaker=Breaker(min_calls=2, window=5, cooldown=60))
    api.set_provider(TurnoutProvider(c, close_client=True))
    yield c
    api.clear_providers()


def test_provider__boolean__true_is_parallel_with_variant_reason_metadata(client: Turnout) -> None:
    of = api.get_client()
    details = of.get_boolean_details("invoice-engine", False, EvaluationContext("vip"))
    assert details.value is True
    assert details.variant == "parallel"
    assert details.reason == OFReason.TARGETING_MATCH
    assert details.error_code is None
    assert details.flag_metadata["version"] == 12
    assert details.flag_metadata["rule"] == "override"
    assert details.flag_metadata["stage"] == 2
    other = of.get_boolean_details("invoice-engine", False, EvaluationContext("someone"))
    # 0 %: nothing was drawn, the flag's fixed default (the engine's DEFAULT, as OFREP says it)
    assert (other.value, other.variant, other.reason) == (False, "legacy", OFReason.STATIC)
    assert other.flag_metadata["turnoutReason"] == "DEFAULT"
    assert of.get_boolean_details("killed", False, EvaluationContext("x")).reason == OFReason.DISABLED


def test_provider__matches_client_decisions(client: Turnout) -> None:
    of = api.get_client()
    for i in range(100):
        ctx = EvaluationContext(f"user-{i}", {"country": "DE"})
        d = client.decide("half", f"user-{i}", {"country": "DE"})
        assert of.get_boolean_value("half", False, ctx) is d.parallel
        assert of.get_string_value("half", "legacy", ctx) == str(d.path)


def test_provider__errors_mapped_and_default_returned(client: Turnout) -> None:
    of = api.get_client()
    missing = of.get_boolean_details("nope", False, EvaluationContext("u"))
    assert missing.error_code == OFErrorCode.FLAG_NOT_FOUND and missing.value is False
    assert missing.reason == OFReason.ERROR
    keyless = of.get_boolean_details("half", False, EvaluationContext())
    assert keyless.error_code == OFErrorCode.TARGETING_KEY_MISSING
    wrong_type = of.get_integer_details("half", 7, EvaluationContext("u"))
    assert wrong_type.error_code == OFErrorCode.TYPE_MISMATCH and wrong_type.value == 7


def test_provider__circuit_open__general_error_with_message(client: Turnout) -> None:
    def fail() -> str:
        raise RuntimeError

    for _ in range(3):
        client.run("invoice-engine", "vip", legacy=lambda: "old", parallel=fail)
    details = api.get_client().get_boolean_details("invoice-engine", False, EvaluationContext("vip"))
    assert details.value is False
    assert details.error_code == OFErrorCode.GENERAL
    assert "CIRCUIT_OPEN" in (details.error_message or "")


def test_provider__not_ready__provider_not_ready_code() -> None:
    c = Turnout(None, None)
    api.set_provider(TurnoutProvider(c, ready_timeout=0.01))
    try:
        details = api.get_client().get_boolean_details("any", False, EvaluationContext("u"))
        assert details.error_code == OFErrorCode.PROVIDER_NOT_READY
        assert api.get_provider_metadata().name == "turnout"
    finally:
        api.clear_providers()
        c.close()


def test_provider__shutdown_closes_owned_client(client: Turnout) -> None:
    api.shutdown()
    assert client._closed
