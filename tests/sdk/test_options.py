"""Options: every constructor option in one checked object; keyword arguments still work."""

from __future__ import annotations

import dataclasses

import pytest
from turnout import Breaker, Options, Turnout
from turnout._options import OptionsKwargs


def test_options__passed_as_object__used_by_the_client() -> None:
    options = Options(poll_interval=5.0, compare_timeout=0.5, breaker=None, code_version="abc")
    client = Turnout(None, None, options=options)
    assert client.options is options
    assert (client.options.poll_interval, client.options.breaker) == (5.0, None)
    client.close()


def test_options__keywords_next_to_an_object__override_its_fields() -> None:
    client = Turnout(None, None, options=Options(poll_interval=5.0, max_samples=3), max_samples=7)
    assert (client.options.poll_interval, client.options.max_samples) == (5.0, 7)
    client.close()


def test_options__keywords_alone__same_as_before() -> None:
    client = Turnout.offline(None, poll_interval=2.0, breaker=Breaker(min_calls=3))
    assert client.options == Options(poll_interval=2.0, breaker=Breaker(min_calls=3))
    client.close()


def test_options__keyword_names__exactly_the_options_fields() -> None:
    assert set(OptionsKwargs.__annotations__) == {f.name for f in dataclasses.fields(Options)}


@pytest.mark.parametrize(("name", "value"), [
    ("poll_interval", 0), ("timeout", float("nan")), ("compare_timeout", "2"), ("flush_interval", -1),
    ("shadow_workers", 0), ("max_samples", -1), ("flush_retries", 1.5), ("stream", "yes"),
    ("on_error", 42), ("redact", "x"), ("breaker", {"error_rate": 0.5}), ("ssl_context", object()),
    ("code_version", 7), ("max_ruleset_bytes", True),
])
def test_options__bad_value__value_error_naming_the_option(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        Options(**{name: value})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=name):
        Turnout(None, None, **{name: value})  # type: ignore[arg-type]


def test_options__backoff_max_below_base__value_error() -> None:
    with pytest.raises(ValueError, match="backoff_max"):
        Options(backoff_base=5.0, backoff_max=1.0)


def test_options__unknown_keyword__type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="pol_interval"):
        Turnout(None, None, pol_interval=5)  # type: ignore[call-arg]


def test_options__frozen__replace_checks_again() -> None:
    options = Options()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.timeout = 1.0  # type: ignore[misc]
    assert options.replace(timeout=1.0).timeout == 1.0
    with pytest.raises(ValueError, match="timeout"):
        options.replace(timeout=0)
