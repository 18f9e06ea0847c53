"""The SDK never raises into its host (issue 13): named regressions, then a fuzz over every
public call. Only exceptions raised by the host's own callables (``legacy=``/``parallel=``) may
escape ``run()``/``arun()``."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import operator
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from fakeserver import FakeServer, MakeClient, make_client, make_doc, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openfeature.evaluation_context import EvaluationContext
from turnout import Decision, ErrorCode, Options, Path, Reason, Turnout, testing
from turnout.openfeature import TurnoutProvider
from turnout.testing import TestClient

__all__ = ["make_client"]  # fixture, imported for pytest

DOC = make_doc(3, **{"to-parallel": {"percentage": 100.0}, "cmp": {"percentage": 0.0, "compare_percentage": 100.0}})


# -- named regressions -----------------------------------------------------------------------


@pytest.mark.parametrize("flag", [["to-parallel"], {"flag": "to-parallel"}, {1, 2}])
def test_decide__unhashable_flag_key__legacy_error_not_type_error(flag: Any) -> None:
    client = Turnout.offline(DOC)
    d = client.decide(flag, "user-1")
    assert (d.path, d.reason) == (Path.LEGACY, Reason.ERROR)
    client.close()


@pytest.mark.parametrize("flag", [["to-parallel"], {"flag": "to-parallel"}])
def test_run__unhashable_flag_key__runs_legacy_not_type_error(flag: Any) -> None:
    client = Turnout.offline(DOC)
    assert client.run(flag, "user-1", legacy=lambda: "old", parallel=lambda: "new") == "old"
    client.close()


@pytest.mark.parametrize("flag", [["to-parallel"], {"flag": "to-parallel"}])
def test_arun__unhashable_flag_key__runs_legacy_not_type_error(flag: Any) -> None:
    client = Turnout.offline(DOC)

    async def old() -> str:
        return "old"

    async def new() -> str:
        return "new"

    assert asyncio.run(client.arun(flag, "user-1", legacy=old, parallel=new)) == "old"
    client.close()


# -- odd values ------------------------------------------------------------------------------


class Boom(Exception):
    """Raised by the odd objects below: it must never come out of a Turnout call."""


class HostError(Exception):
    """Raised by the host's own callables: the one exception that may come out of run()."""


class Evil:
    """Every dunder a library might call raises."""

    def __hash__(self) -> int:
        raise Boom("hash")

    def __eq__(self, other: object) -> bool:
        raise Boom("eq")

    def __ne__(self, other: object) -> bool:
        raise Boom("ne")

    def __lt__(self, other: object) -> bool:
        raise Boom("lt")

    def __gt__(self, other: object) -> bool:
        raise Boom("gt")

    def __str__(self) -> str:
        raise Boom("str")

    def __repr__(self) -> str:
        raise Boom("repr")

    def __format__(self, spec: str) -> str:
        raise Boom("format")

    def __bool__(self) -> bool:
        raise Boom("bool")

    def __len__(self) -> int:
        raise Boom("len")

    def __iter__(self) -> Any:
        raise Boom("iter")

    def __float__(self) -> float:
        raise Boom("float")

    def __index__(self) -> int:
        raise Boom("index")

    def __getattr__(self, name: str) -> Any:
        raise Boom(name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise Boom("call")


class EvilStr(str):
    """A string whose own methods raise (a str subclass is still a string)."""

    def __hash__(self) -> int:
        raise Boom("hash")

    def __eq__(self, other: object) -> bool:
        raise Boom("eq")

    def __str__(self) -> str:
        raise Boom("str")

    def __repr__(self) -> str:
        raise Boom("repr")

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        raise Boom("encode")


class EvilMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise Boom("getitem")

    def __iter__(self) -> Iterator[str]:
        raise Boom("iter")

    def __len__(self) -> int:
        raise Boom("len")

    def get(self, key: str, default: Any = None) -> Any:
        raise Boom("get")


HUGE = "x" * 1_000_000
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.binary(max_size=10),
    st.complex_numbers(allow_nan=True),
    st.just(HUGE),
    st.just(HUGE.encode()),
    st.builds(Evil),
    st.builds(lambda: EvilStr("to-parallel")),
    st.builds(EvilMapping),
    st.builds(object),
)
odd = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=5), inner, max_size=3),
        st.tuples(inner, inner),
    ),
    max_leaves=6,
)
FLAGS = ["to-parallel", "cmp", "cmp-parallel", "missing"]
flags = st.one_of(st.sampled_from(FLAGS), odd)
keys = st.one_of(st.sampled_from(["user-1", "user-2", ""]), odd)
ODD_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

FUZZ_DOC = make_doc(
    5,
    **{
        "to-parallel": {"percentage": 100.0},
        "cmp": {"percentage": 0.0, "compare_percentage": 100.0},
        "cmp-parallel": {"percentage": 100.0, "compare_percentage": 100.0},
    },
)


def _clients() -> list[Turnout]:
    inline = TestClient(FUZZ_DOC)  # shadows on the caller's thread: an escape would show here
    return [inline, Turnout.offline(FUZZ_DOC), Turnout(None, None)]


CLIENTS = _clients()


def _is_decision(d: object) -> bool:
    return isinstance(d, Decision) and d.path in (Path.LEGACY, Path.PARALLEL) and isinstance(d.reason, Reason)


# -- call-time APIs never raise ----------------------------------------------------------------


@ODD_SETTINGS
@given(flag=flags, key=keys, attributes=odd)
def test_decide__any_argument_types__never_raises(flag: Any, key: Any, attributes: Any) -> None:
    for client in CLIENTS:
        assert _is_decision(client.decide(flag, key, attributes))


@ODD_SETTINGS
@given(flag=flags, key=keys, attributes=odd, compare=st.one_of(st.just(operator.eq), odd),
       compare_timeout=odd, fallback=odd, redact=odd)
def test_run__any_argument_types__returns_a_path_result(
    flag: Any, key: Any, attributes: Any, compare: Any, compare_timeout: Any, fallback: Any, redact: Any
) -> None:
    for client in CLIENTS:
        result = client.run(flag, key, attributes, legacy=lambda: "old", parallel=lambda: "new", compare=compare,
                            compare_timeout=compare_timeout, fallback=fallback, redact=redact)
        assert result in ("old", "new")


@ODD_SETTINGS
@given(flag=flags, key=keys, attributes=odd, fallback=odd, compare_timeout=odd)
def test_run__host_callables_raise__only_host_exceptions_escape(
    flag: Any, key: Any, attributes: Any, fallback: Any, compare_timeout: Any
) -> None:
    def broken() -> str:
        raise HostError

    for client in CLIENTS:
        for legacy, parallel in ((broken, lambda: "new"), (lambda: "old", broken), (broken, broken)):
            try:
                result = client.run(flag, key, attributes, legacy=legacy, parallel=parallel, fallback=fallback,
                                    compare_timeout=compare_timeout)
            except HostError:
                continue
            assert result in ("old", "new")


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(flag=flags, key=keys, attributes=odd, compare=st.one_of(st.just(operator.eq), odd),
       compare_timeout=odd, fallback=odd, redact=odd)
def test_arun__any_argument_types__returns_a_path_result(
    flag: Any, key: Any, attributes: Any, compare: Any, compare_timeout: Any, fallback: Any, redact: Any
) -> None:
    async def old() -> str:
        return "old"

    async def new() -> str:
        return "new"

    async def broken() -> str:
        raise HostError

    async def main() -> None:
        for client in CLIENTS:
            result = await client.arun(flag, key, attributes, legacy=old, parallel=new, compare=compare,
                                       compare_timeout=compare_timeout, fallback=fallback, redact=redact)
            assert result in ("old", "new")
            try:
                result = await client.arun(flag, key, attributes, legacy=old, parallel=broken, fallback=fallback)
            except HostError:
                continue
            assert result in ("old", "new")
        await asyncio.sleep(0)

    asyncio.run(main())


@ODD_SETTINGS
@given(a=odd, b=odd, key_value=odd, attrs_value=odd, flag=flags)
def test_switch__wrapped_calls_with_any_arguments__never_raise(
    a: Any, b: Any, key_value: Any, attrs_value: Any, flag: Any
) -> None:
    client = CLIENTS[0]

    def old(a: Any, b: Any) -> str:
        return "old"

    def raising_key(a: Any, b: Any) -> Any:
        raise Boom("key")

    by_name = client.switch(flag, key="a", legacy=old)(lambda a, b: "new")
    by_function = client.switch(flag, key=lambda a, b: key_value, legacy=old,
                                attributes=lambda a, b: attrs_value)(lambda a, b: "new")
    failing = client.switch(flag, key=raising_key, parallel=old, attributes=raising_key)(lambda a, b: "legacy")
    assert by_name(a, b) in ("old", "new")
    assert by_name(a=a, b=b) in ("old", "new")
    assert by_function(a, b) in ("old", "new")
    assert failing(a, b) in ("old", "legacy")

    async def aold(a: Any, b: Any) -> str:
        return "old"

    async def anew(a: Any, b: Any) -> str:
        return "new"

    wrapped = client.switch(flag, key=lambda a, b: key_value, legacy=aold, attributes=lambda a, b: attrs_value)(anew)
    assert asyncio.run(wrapped(a, b)) in ("old", "new")


@ODD_SETTINGS
@given(flag=flags, key=keys, decision=odd, ok=odd, elapsed=odd)
def test_report__any_argument_types__never_raises(flag: Any, key: Any, decision: Any, ok: Any, elapsed: Any) -> None:
    for client in CLIENTS:
        assert client.report(client.decide(flag, key), ok=ok, elapsed=elapsed) is None
        assert client.report(decision, ok=ok, elapsed=elapsed) is None


@ODD_SETTINGS
@given(timeout=odd)
def test_lifecycle__any_arguments__never_raises(timeout: Any) -> None:
    client = Turnout.offline(FUZZ_DOC)
    assert client.wait_until_ready(timeout) is True
    long_wait = timeout is None or (isinstance(timeout, int | float) and not timeout <= 0.01)
    if not long_wait:  # (a client that can never become ready would wait out a long timeout)
        assert Turnout(None, None).wait_until_ready(timeout) is False
    assert client.flush() is True
    repr(client)
    client.close()
    client.close()
    assert client.decide("to-parallel", "u").parallel  # decisions keep working after close()
    assert client.flush() is True


# -- construction: configuration errors are ValueError naming the option, data never raises -----

OPTION_NAMES = [f.name for f in dataclasses.fields(Options) if f.name != "bootstrap"]


@ODD_SETTINGS
@given(name=st.sampled_from(OPTION_NAMES), value=odd)
def test_constructor__odd_option_value__value_error_naming_it_or_built(name: str, value: Any) -> None:
    for build in (lambda: Turnout.offline(FUZZ_DOC, **{name: value}), lambda: Options(**{name: value}),
                  lambda: Turnout(None, None, options=Options(), **{name: value})):
        try:
            built = build()
        except ValueError as exc:
            assert name in str(exc) or (name == "backoff_base" and "backoff_max" in str(exc))
            continue
        if isinstance(built, Turnout):
            assert _is_decision(built.decide("to-parallel", "u"))
            built.close()


@ODD_SETTINGS
@given(url=st.one_of(odd, st.sampled_from(["", "ftp://x", "http://", "http://[::1", "http://h:99999"])), sdk_key=odd)
def test_constructor__odd_url_or_key__value_error_or_offline(url: Any, sdk_key: Any) -> None:
    try:
        client = Turnout(url, sdk_key, stream=False, send_metrics=False)
    except ValueError:
        return
    assert client._transport is None  # anything that built without raising is offline here
    client.close()


def _plant(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    if not path:
        return value
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return doc


PLANT_PATHS = [
    (), ("schema",), ("version",), ("environment",), ("cohorts",), ("flags",),
    ("flags", "to-parallel"), ("flags", "to-parallel", "enabled"), ("flags", "to-parallel", "percentage"),
    ("flags", "to-parallel", "salt"), ("flags", "to-parallel", "overrides"), ("flags", "cmp", "compare_percentage"),
    ("flags", "cmp", "include_cohorts"), ("flags", "cmp", "stage"), ("flags", "cmp", "bucket_by"),
]


@ODD_SETTINGS
@given(path=st.sampled_from(PLANT_PATHS), value=odd)
def test_bootstrap__malformed_or_partial_document__never_raises(path: tuple[Any, ...], value: Any) -> None:
    doc = _plant(FUZZ_DOC, path, value)
    for client in (Turnout.offline(doc), TestClient(doc), Turnout(None, None, bootstrap=doc)):
        d = client.decide("to-parallel", "user-1")
        assert _is_decision(d)
        assert client.run("cmp", "user-1", legacy=lambda: 1, parallel=lambda: 2) in (1, 2)
        client.close()


@pytest.mark.parametrize("content", [b"", b"\xff\xfe", b"[" * 100_000, b'{"schema": 1', b"null",
                                     b'{"schema": 1, "flags": {"f": ' * 5000, HUGE.encode()])
def test_bootstrap__unreadable_file__legacy_and_never_raises(tmp_path: Any, content: bytes) -> None:
    path = tmp_path / "ruleset.json"
    path.write_bytes(content)
    for source in (path, str(path), tmp_path / "missing.json", str(tmp_path)):
        client = Turnout.offline(source)
        assert not client.ready and client.decide("to-parallel", "u").error_code is ErrorCode.PROVIDER_NOT_READY
        client.close()


# -- turnout.testing ---------------------------------------------------------------------------


@ODD_SETTINGS
@given(spec=odd, doc=odd, forced_value=odd)
def test_testing_helpers__odd_arguments__value_error_or_working(spec: Any, doc: Any, forced_value: Any) -> None:
    for build in (lambda: testing.ruleset(spec), lambda: testing.ruleset({"f": spec}),
                  lambda: TestClient(flags=spec), lambda: TestClient(flags={"f": spec}), lambda: testing.client(doc)):
        try:
            built = build()
        except ValueError:
            continue
        if isinstance(built, TestClient):
            assert _is_decision(built.decide("f", "u"))
            built.metrics()
            list(built.mismatches)
    client = TestClient(FUZZ_DOC)
    for flags_arg in (forced_value, {"to-parallel": forced_value}):
        try:
            pin = testing.forced(client, flags_arg)
        except ValueError:
            continue
        with pin:
            assert _is_decision(client.decide("to-parallel", "u"))
    assert client.decide("to-parallel", "u").parallel  # nothing stayed pinned


# -- the OpenFeature provider --------------------------------------------------------------------


@ODD_SETTINGS
@given(flag=flags, default=odd, targeting_key=odd, attributes=odd, raw_context=odd)
def test_openfeature_provider__any_arguments__never_raises(
    flag: Any, default: Any, targeting_key: Any, attributes: Any, raw_context: Any
) -> None:
    ctx = EvaluationContext(targeting_key, attributes)
    for client in CLIENTS[1:]:
        provider = TurnoutProvider(client)
        for context in (ctx, raw_context, None):
            for resolve_details in (provider.resolve_boolean_details, provider.resolve_string_details,
                                    provider.resolve_integer_details, provider.resolve_float_details,
                                    provider.resolve_object_details):
                details = resolve_details(flag, default, context)
                assert details.reason is not None


# -- malformed rulesets from the server ---------------------------------------------------------

BAD_BODIES = [
    b"", b"\xff\xfe\x00", b"[" * 100_000, b'{"schema": 1', b"null", b"[]", b'"ruleset"', b"1e999",
    b'{"schema": 1, "environment": "test", "version": 9, "flags": {"f": {"enabled": true, "percentage": NaN}}}',
    b'{"schema": 1, "environment": "test", "version": 9, "flags": {"f": {"enabled": "yes", "percentage": 5}}}',
    json.dumps(_plant(FUZZ_DOC, ("flags", "cmp", "include_cohorts"), ["nope"])).encode(),
    json.dumps(_plant(FUZZ_DOC, ("version",), -1)).encode(),
    json.dumps({**FUZZ_DOC, "version": 9, "flags": {HUGE: {"enabled": True, "percentage": 500}}}).encode(),
]


def test_sync__malformed_rulesets_served__last_good_kept_and_sync_survives(make_client: MakeClient) -> None:
    server = FakeServer(FUZZ_DOC).start()
    try:
        client = make_client(server.url, stream=False)
        assert client.wait_until_ready(3) and client.version == 5
        for body in BAD_BODIES:
            served = server.counts["ruleset_200"]
            server.body = body
            assert wait_for(lambda served=served: server.counts["ruleset_200"] >= served + 2)
            assert client.version == 5
            assert client.decide("to-parallel", "user-1").parallel
            assert client.run("cmp", "user-1", legacy=lambda: 1, parallel=lambda: 2) == 1
        server.body = None
        server.set_ruleset(make_doc(6, **{"to-parallel": {"percentage": 0.0}}))
        assert wait_for(lambda: client.version == 6)  # the sync thread lived through all of it
        assert not client.decide("to-parallel", "user-1").parallel
    finally:
        server.stop()
