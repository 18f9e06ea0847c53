"""decide(): the client answers exactly what the engine answers, on any subject."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from turnout import Turnout
from turnout.engine import evaluate

DOC: dict[str, Any] = {
    "schema": 1,
    "environment": "test",
    "version": 11,
    "cohorts": {
        "pilot": {
            "match_on": "tenant_id",
            "rules": {"all": [{"attr": "country", "op": "in", "values": ["DE", "FR"]}]},
            "include": ["t-1"],
            "exclude": ["t-9"],
        },
        "regulated": {"rules": {"any": [{"attr": "plan", "op": "eq", "values": ["gov"]}]}},
    },
    "flags": {
        "invoice-engine": {
            "enabled": True,
            "salt": "invoice-engine",
            "bucket_by": "tenant_id",
            "overrides": {"user-1": "parallel", "user-2": "legacy"},
            "exclude_cohorts": ["regulated"],
            "include_cohorts": ["pilot"],
            "percentage": 25.0,
            "compare_percentage": 10.0,
            "stage": 2,
        },
        "killed": {"enabled": False, "percentage": 100.0},
        "retired": {"enabled": True, "retired": True, "percentage": 100.0},
    },
}

CLIENT = Turnout.offline(DOC)

keys = st.one_of(st.none(), st.just(""), st.sampled_from(["user-1", "user-2"]), st.text(max_size=12))
attributes = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "tenant_id": st.sampled_from(["t-1", "t-2", "t-9", "t-42"]),
            "country": st.sampled_from(["DE", "FR", "US"]),
            "plan": st.sampled_from(["gov", "pro"]),
        },
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    flag=st.sampled_from(["invoice-engine", "killed", "retired", "missing"]),
    key=keys,
    attrs=attributes,
)
def test_decide__any_subject__same_as_engine(flag: str, key: str | None, attrs: dict[str, Any] | None) -> None:
    assert CLIENT.decide(flag, key, attrs) == evaluate(DOC, flag, key, attrs)


def test_decide__odd_inputs__never_raises() -> None:
    for key in (None, "", 42, object()):
        for attrs in (None, {}, "not a mapping", {"tenant_id": object()}):
            d = CLIENT.decide("invoice-engine", key, attrs)  # type: ignore[arg-type]
            assert d.path in ("legacy", "parallel")
