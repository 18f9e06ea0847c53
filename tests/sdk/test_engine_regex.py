"""``matches`` cannot hang a host: RE2 when installed, otherwise ``re`` only for patterns proven safe.

The "never hangs" tests run the decision in a child process whose ``subprocess.run`` timeout is the
test's deadline: Python's ``re`` holds the GIL, so a thread in this process could not be given up
on (its join would only return once the search ended). One child has ``re2`` importable, one has
it blocked, as on an SDK host installed without the ``re2`` extra.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from turnout import Turnout, _regex
from turnout.engine import RuleError, compile_ruleset, evaluate, explain_cohort, validate_rules

SDK = Path(__file__).resolve().parents[2] / "sdk"
EVIL = [r"(a+)+$", r"(a|aa)+$", r"(.*a){20}"]
# Values none of them matches, that take a backtracking engine years: 2**64 ways to split the a's,
# or 2**19 ways to place 19 a's in 20 iterations, tried from each of 500 start positions.
HOSTILE = {r"(a+)+$": "a" * 64 + "!", r"(a|aa)+$": "a" * 64 + "!", r"(.*a){20}": "b" * 500 + "a" * 19 + "b" * 100}
HOSTILE_VALUE = HOSTILE[EVIL[0]]
DEADLINE = 60.0  # the child must have answered by then (it answers in well under a second)


def cond(pattern: str, attr: str = "ua") -> dict[str, Any]:
    return {"attr": attr, "op": "matches", "values": [pattern]}


def doc(pattern: str) -> dict[str, Any]:
    """A ruleset as a hostile or outdated server could send it (the SDK does not trust the server)."""
    return {
        "schema": 1,
        "environment": "e",
        "version": 1,
        "cohorts": {"evil": {"match_on": None, "rules": {"all": [cond(pattern)]}, "include": [], "exclude": []}},
        "flags": {"f": {"enabled": True, "percentage": 0, "include_cohorts": ["evil"]}},
    }


@pytest.fixture(params=["re2", "re"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test twice: with google-re2 (as installed here) and as a host without it."""
    if request.param == "re":
        monkeypatch.setattr(_regex, "_re2", None)
    _regex.compile_search.cache_clear()
    yield request.param
    _regex.compile_search.cache_clear()


@pytest.fixture
def no_re2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A host without google-re2: the re fallback decides which patterns it runs."""
    monkeypatch.setattr(_regex, "_re2", None)
    _regex.compile_search.cache_clear()
    yield
    _regex.compile_search.cache_clear()


CHILD = """
import json, sys
if sys.argv[1] == "re":
    sys.modules["re2"] = None  # ImportError: a host installed without turnout[re2]
from turnout import _regex
from turnout.engine import compile_ruleset
assert _regex.re2_available() is (sys.argv[1] == "re2")
ruleset = compile_ruleset(json.loads(sys.argv[2]))
decision = ruleset.decide("f", "k", {"ua": sys.argv[3]})
print(json.dumps({"path": str(decision.path), "warnings": list(ruleset.warnings)}))
"""


# -- evaluation never hangs ------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["re2", "re"])
@pytest.mark.parametrize("pattern", EVIL)
def test_decide__evil_pattern_in_ruleset__answers_within_the_deadline(host: str, pattern: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, host, json.dumps(doc(pattern)), HOSTILE[pattern]],
        capture_output=True, text=True, timeout=DEADLINE, cwd=SDK, check=True,
    )
    answer = json.loads(out.stdout)
    assert answer["path"] == "legacy"  # no EVIL pattern matches the value
    if host == "re":
        assert len(answer["warnings"]) == 1 and "cohorts.evil.rules.all[0].values[0]" in answer["warnings"][0]
    else:
        assert answer["warnings"] == []  # RE2 runs it, in linear time


def test_matches__re2__evil_pattern_still_matches_what_it_means(engine: str) -> None:
    ruleset = compile_ruleset(doc(r"(a+)+$"))
    decision = ruleset.decide("f", "k", {"ua": "xaaa"})
    assert decision.path == ("parallel" if engine == "re2" else "legacy")


def test_matches__without_re2_unproven_pattern__condition_false_and_warned(no_re2: None) -> None:
    rules = {"all": [cond(r"(.*a){20}")]}
    ruleset = compile_ruleset({**doc("x"), "cohorts": {"evil": {"rules": rules}}})
    assert ruleset.decide("f", "k", {"ua": "a" * 30}).path == "legacy"
    assert ruleset.warnings and "not proven safe without RE2" in ruleset.warnings[0]


@pytest.mark.parametrize("value", ["user-12", "x" * 1024 + "user-1"])
def test_matches__value_over_the_length_cap__never_matches(engine: str, value: str) -> None:
    ruleset = compile_ruleset(doc(r"user-\d+$"))
    expected = "parallel" if len(value) <= _regex.MAX_MATCH_LENGTH else "legacy"
    assert ruleset.decide("f", "k", {"ua": value}).path == expected


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        (r"^user-\d+$", "user-12", True),
        (r"@example\.com$", "ann@example.com", True),
        (r"@example\.com$", "ann@example.org", False),
        (r"(?i)chrome", "Mozilla Chrome/120", True),
        (r"^\d+(\.\d+)*$", "1.2.30", True),
        (r"^\d+(\.\d+)*$", "1..2", False),
        (r"[a-z]+@[a-z]+\.com", "mail ann@example.com", True),
        (r"^(eu|us)-(west|east)$", "eu-west", True),
    ],
)
def test_matches__safe_patterns__same_answer_with_and_without_re2(
    engine: str, pattern: str, value: str, expected: bool
) -> None:
    ruleset = compile_ruleset(doc(pattern))
    assert ruleset.warnings == ()
    assert (ruleset.decide("f", "k", {"ua": value}).path == "parallel") is expected


@pytest.mark.parametrize(
    ("pattern", "value", "path"),
    [(r"^\d$", "\u0663", "legacy"), (r"^\w+$", "\u00e9t\u00e9", "legacy"), (r"^user-\d+$", "user-1\n", "legacy"),
     (r"\bx\b", "\u00e9x\u00e9", "parallel"), (r"(?m)^user-\d+$", "user-1\nx", "parallel")],
)
def test_matches__re_fallback__reads_the_pattern_as_re2_does(engine: str, pattern: str, value: str, path: str) -> None:
    """ASCII classes, and $ at the very end unless (?m): the same answer on both hosts (not plain re's)."""
    assert compile_ruleset(doc(pattern)).decide("f", "k", {"ua": value}).path == path


def test_matches__re2_path_lone_surrogate__no_match_not_an_error() -> None:
    ruleset = compile_ruleset(doc(r"(a+)+$"))  # not proven safe: RE2 runs it (installed here)
    decision = ruleset.decide("f", "k", {"ua": "a\ud800a"})
    assert (decision.path, decision.error_code) == ("legacy", None)


def test_explain_cohort__evil_pattern__answers(engine: str) -> None:
    ok, why = explain_cohort(doc(r"(a|aa)+$"), "evil", "k", {"ua": HOSTILE_VALUE})
    assert ok is False and "did not match" in why


def test_evaluate__unusable_pattern__ruleset_still_usable(engine: str) -> None:
    broken = doc(r"(a)\1")  # a backreference: neither RE2 nor the re fallback runs it
    broken["flags"]["g"] = {"enabled": True, "percentage": 100}
    assert evaluate(broken, "g", "k").path == "parallel"
    assert evaluate(broken, "f", "k", {"ua": "aa"}).path == "legacy"
    assert len(compile_ruleset(broken).warnings) == 1


# -- the SDK client reports it once ----------------------------------------------------------------


def test_client__unusable_pattern__reported_once_through_on_error(no_re2: None) -> None:
    errors: list[Any] = []
    client = Turnout(None, None, bootstrap=doc(r"(a+)+$"), on_error=errors.append)
    try:
        for _ in range(3):
            assert client.decide("f", "k", {"ua": HOSTILE_VALUE}).path == "legacy"
        client._install(compile_ruleset({**doc(r"(a+)+$"), "version": 2}), etag=None)  # a newer ruleset
    finally:
        client.close()
    assert [(e.kind, "cohorts.evil.rules.all[0].values[0]" in str(e)) for e in errors] == [("ruleset", True)]


# -- write-time validation -------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", EVIL)
def test_validate_rules__evil_pattern__refused_naming_the_value(engine: str, pattern: str) -> None:
    with pytest.raises(RuleError, match=r"^rules\.any\[1\]\.values\[0\]: 'matches' pattern .* could take time"):
        validate_rules({"any": [cond("ok"), cond(pattern)]})


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        (r"(a)\1", "backreference"),
        (r"(?=a)b", "lookahead"),
        (r"(?<!a)b", "lookahead or lookbehind"),
        (r"(?>a+)b", "atomic group"),
        (r"a++", "possessive"),
        (r".*x.*y", "two variable-length parts"),
        (r"\d+\d*", "two variable-length parts"),
        (r"(\w+\s?)+$", "varies in length"),
        ("x" * 1001, "longer than 1000 characters"),
        ("(unclosed", "bad regex for 'matches'"),
        ("a{,2}", "write '{0,n}'"),
        ("[[:alpha:]]+", "POSIX class"),
    ],
)
def test_validate_rules__unsafe_or_unsupported__refused_naming_the_problem(
    engine: str, pattern: str, problem: str
) -> None:
    with pytest.raises(RuleError, match=r"^rules\.all\[0\]\.values\[0\]: ") as info:
        validate_rules({"all": [cond(pattern)]})
    assert problem in str(info.value)


def test_validate_rules__re2_syntax_only__refused_by_the_server() -> None:
    assert _regex.re2_available()  # google-re2 is a server dependency, installed with it
    with pytest.raises(RuleError, match=r"not supported by RE2 \(invalid escape sequence: \\Z\)"):
        validate_rules({"all": [cond(r"a\Z")]})


@pytest.mark.parametrize(
    "pattern",
    [r"^user-\d+$", r"@example\.com$", r"(?i)chrome|firefox", r"^\d+(\.\d+)*$", r"[a-z]+@[a-z]+\.com",
     r"^Mozilla/.*Chrome/", r"a*b", r"(ab)+", r"(foo|far)+", r"x{1000}"],
)
def test_validate_rules__everyday_patterns__accepted(engine: str, pattern: str) -> None:
    validate_rules({"all": [cond(pattern)]})
    assert _regex.backtracking_problem(pattern) is None


def test_compile_ruleset__validation_of_a_read_ruleset__does_not_judge_patterns(engine: str) -> None:
    assert compile_ruleset(doc(r"(a+)+$")).version == 1  # the document stays usable
