"""Patterns for the ``matches`` operator that cannot hang anything (private).

``matches`` searches a string attribute for a pattern in RE2's syntax and meaning, in time
linear in the attribute. How a pattern runs (``compile_search``):

- on RE2 (``google-re2``, a linear-time engine) wherever it is importable: the server always
  has it, SDK hosts get it with ``pip install turnout[re2]``;
- without it, on Python's ``re`` if ``backtracking_problem`` proves the pattern cannot backtrack
  catastrophically, compiled to behave as RE2 does (``re.ASCII``: ``\\d \\w \\s \\b`` are ASCII;
  ``$`` outside multi-line mode only at the very end, not also before a final newline). What
  still differs: under ``(?i)``, RE2 also folds non-ASCII letters (``é``/``É``, the Kelvin sign);
- any other pattern is *not usable* there: its condition is false and the SDK warns once;
- an attribute value longer than ``MAX_MATCH_LENGTH`` characters never matches. That bounds the
  ``re`` fallback too: a proven-safe pattern costs at most about length² steps (``bench/regex``).

Write-time validation (``pattern_problem``) refuses what RE2 or ``re`` cannot compile, two
spellings both compile but read differently (``{,n}``, POSIX classes ``[[:alpha:]]``), and what
the static check cannot prove safe, so every stored pattern also runs on an SDK without RE2.

The static check (conservative: it refuses some patterns that are in fact harmless) works on
``re``'s own parse tree. With a pattern's single-character items compared through the real
``re`` engine (so case-insensitivity and classes such as ``\\d`` count exactly), it refuses:

- backreferences, lookarounds, conditionals, atomic groups and possessive repeats;
- a repeat (``*``, ``+``, ``{m,n}`` with n > 1) of something that itself varies in length,
  such as ``(a+)+`` or ``(.*a){20}``, unless every iteration starts with a character that
  nothing else in the repeated part can match, as in ``(\\.\\d+)*``;
- alternatives inside a repeat that can start with the same character, as in ``(a|aa)+``;
- two variable-length parts that can match the same characters with nothing between them
  that the first cannot match, as in ``.*a.*`` or ``\\d+\\d*`` (``[a-z]+@[a-z]+`` is fine);
- more than ``MAX_AMBIGUOUS_CHOICES`` combinations of alternatives that can start alike.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

__all__ = [
    "MAX_MATCH_LENGTH",
    "MAX_PATTERN_LENGTH",
    "backtracking_problem",
    "compile_search",
    "pattern_problem",
    "re2_available",
]

#: An attribute value longer than this never matches (defence in depth: bounds every search).
MAX_MATCH_LENGTH = 1024
#: Longer patterns are refused when saved.
MAX_PATTERN_LENGTH = 1000
#: Product of the alternative counts of ambiguous alternations outside repeats.
MAX_AMBIGUOUS_CHOICES = 16
_FINITE_LIMIT = 256  # a character class with more members is treated as "anything"

Search = Callable[[str], Any]  # returns a match object or None

_parser: Any = importlib.import_module("re._parser")
_compiler: Any = importlib.import_module("re._compiler")
_c: Any = importlib.import_module("re._constants")

try:
    _re2: Any = importlib.import_module("re2")
    _RE2_OPTIONS: Any = _re2.Options()
    _RE2_OPTIONS.log_errors = False  # a refused pattern is reported to the caller, not printed
except Exception:  # ImportError, or a broken build: the re fallback keeps everything safe
    _re2 = None
    _RE2_OPTIONS = None


def re2_available() -> bool:
    """True when ``google-re2`` is importable (``matches`` then runs on RE2)."""
    return _re2 is not None


class _Unsafe(Exception):
    """The pattern could backtrack catastrophically."""


class _Unsupported(_Unsafe):
    """A construct neither RE2 nor the static check accepts."""


# -- single characters ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Char:
    """One single-character item of a pattern: what it matches, and its members when few."""

    test: Callable[[str], bool]
    members: frozenset[str] | None  # None: too many to list (classes, negations, '.', cased + (?i))


def _overlap(a: _Char, b: _Char) -> bool:
    """Can one character match both? (True when it cannot be ruled out.)"""
    if a.members is not None:
        return any(b.test(ch) for ch in a.members)
    if b.members is not None:
        return any(a.test(ch) for ch in b.members)
    return True


def _any_overlap(xs: Iterable[_Char], ys: Iterable[_Char]) -> bool:
    ys = tuple(ys)
    return any(_overlap(x, y) for x in xs for y in ys)


def _cased(ch: str) -> bool:
    return ch.lower() != ch or ch.upper() != ch


def _char(item: tuple[Any, Any], flags: int) -> _Char:
    op, av = item
    state = _parser.State()
    state.flags = flags
    test = _compiler.compile(_parser.SubPattern(state, [item]), 0).fullmatch
    members: set[str] | None = None
    if op is _c.LITERAL:
        members = {chr(av)}
    elif op is _c.IN and not any(kind in (_c.NEGATE, _c.CATEGORY) for kind, _ in av):
        members = set()
        for kind, value in av:
            if kind is _c.LITERAL:
                members.add(chr(value))
            elif kind is _c.RANGE and value[1] - value[0] < _FINITE_LIMIT:
                members.update(chr(o) for o in range(value[0], value[1] + 1))
            else:
                members = None
                break
        if members is not None and len(members) > _FINITE_LIMIT:
            members = None
    if members is not None and flags & re.IGNORECASE and any(_cased(ch) for ch in members):
        members = None  # case folding reaches characters we do not list (K, Kelvin sign...)
    return _Char(lambda ch: test(ch) is not None, frozenset(members) if members is not None else None)


# -- the walk -------------------------------------------------------------------------------

_SINGLE = ("LITERAL", "NOT_LITERAL", "ANY", "IN")
_REPEATS = ("MAX_REPEAT", "MIN_REPEAT")
_REFUSED = {
    "GROUPREF": "a backreference",
    "GROUPREF_EXISTS": "a conditional group",
    "ASSERT": "a lookahead or lookbehind",
    "ASSERT_NOT": "a negative lookahead or lookbehind",
    "ATOMIC_GROUP": "an atomic group",
    "POSSESSIVE_REPEAT": "a possessive repeat",
}


@dataclass
class _Walk:
    choices: int = 1
    live: list[list[_Char]] = field(default_factory=list)


def _name(op: Any) -> str:
    return str(op)


def _chars(items: list[Any], flags: int) -> list[_Char]:
    """Every single-character item in a subtree."""
    found: list[_Char] = []
    for op, av in items:
        name = _name(op)
        if name in _SINGLE:
            found.append(_char((op, av), flags))
        elif name == "SUBPATTERN":
            found += _chars(av[3], _scoped(flags, av))
        elif name == "BRANCH":
            for alt in av[1]:
                found += _chars(alt, flags)
        elif name in _REPEATS:
            found += _chars(av[2], flags)
    return found


def _scoped(flags: int, av: Any) -> int:
    return int((flags | av[1]) & ~av[2])


def _first(items: list[Any], flags: int) -> _Char | None:
    """The single character an alternative must start with, or None (empty, a repeat, ...)."""
    for op, av in items:
        name = _name(op)
        if name == "AT":
            continue
        if name in _SINGLE:
            return _char((op, av), flags)
        if name == "SUBPATTERN":
            return _first(av[3], _scoped(flags, av))
        return None
    return None


def _deterministic(alternatives: list[list[Any]], flags: int) -> bool:
    firsts = [_first(alt, flags) for alt in alternatives]
    if any(f is None for f in firsts):
        return False
    chars = [f for f in firsts if f is not None]
    return not any(_overlap(a, b) for i, a in enumerate(chars) for b in chars[i + 1 :])


def _varies(items: list[Any]) -> bool:
    """Does this subtree hold anything of variable length (a repeat m..n with m != n, a branch)?"""
    for op, av in items:
        name = _name(op)
        if name == "SUBPATTERN" and _varies(av[3]):
            return True
        if name == "BRANCH":
            return True
        if name in _REPEATS and (av[0] != av[1] or _varies(av[2])):
            return True
    return False


def _walk(items: list[Any], flags: int, walk: _Walk, in_repeat: bool) -> None:
    for op, av in items:
        name = _name(op)
        if name in _REFUSED:
            raise _Unsupported(f"{_REFUSED[name]} is not supported")
        if name == "AT":
            continue
        if name in _SINGLE:
            ch = _char((op, av), flags)
            # A character the earlier variable part cannot match ends its ambiguity.
            walk.live = [chars for chars in walk.live if _any_overlap(chars, (ch,))]
        elif name == "SUBPATTERN":
            _walk(av[3], _scoped(flags, av), walk, in_repeat)
        elif name == "BRANCH":
            alternatives = av[1]
            if not _deterministic(alternatives, flags):
                if in_repeat:
                    raise _Unsafe("alternatives that can start with the same character are repeated")
                walk.choices *= len(alternatives)
                if walk.choices > MAX_AMBIGUOUS_CHOICES:
                    raise _Unsafe(f"more than {MAX_AMBIGUOUS_CHOICES} combinations of alternatives that can "
                                  "start with the same character")
            before = walk.live
            after: list[list[_Char]] = []
            for alt in alternatives:
                walk.live = list(before)
                _walk(alt, flags, walk, in_repeat)
                after += [chars for chars in walk.live if not any(chars is seen for seen in after)]
            walk.live = after
        elif name in _REPEATS:
            _repeat(av, flags, walk, in_repeat)
        else:
            raise _Unsupported(f"the construct {name} is not supported")


def _repeat(av: Any, flags: int, walk: _Walk, in_repeat: bool) -> None:
    low, high, body = av
    if high == 0:
        return
    repeated = high > 1
    if repeated and _varies(body):
        # Each iteration must be parsed one way only: it starts with a character nothing else in
        # it can match (``(\.\d+)*``); otherwise ``(a+)+``, ``(.*a){20}``: exponential/polynomial.
        first = _first(body, flags)
        rest = _chars(body, flags)[1:]
        if first is None or first.members is None or _any_overlap((first,), rest):
            raise _Unsafe("a repeated part that itself varies in length (a nested repeat such as (a+)+)")
    chars = _chars(body, flags)
    if low != high:
        # A part that can only start with a character the earlier one cannot match cannot be
        # confused with it: ``\d+(\.\d+)*``.
        start = _first(body, flags)
        leading = chars if start is None else [start]
        for earlier in walk.live:
            if _any_overlap(earlier, leading):
                raise _Unsafe("two variable-length parts can match the same characters one after the other "
                              "(such as .*a.* or \\d+\\d*); search finds a match anywhere, so a leading or "
                              "trailing .* is never needed")
    inner = _Walk(choices=walk.choices, live=[] if repeated else list(walk.live))
    _walk(body, flags, inner, in_repeat or repeated)
    walk.choices = inner.choices
    if low != high:
        walk.live = [*walk.live, chars]
    elif not repeated:
        walk.live = inner.live


@lru_cache(maxsize=1024)
def _analyse(pattern: str) -> tuple[bool, str] | None:
    """None when proven safe, else (supported, why)."""
    try:
        parsed = _parser.parse(pattern, 0)
        _walk(list(parsed.data), parsed.state.flags, _Walk(), False)
    except _Unsupported as exc:
        return False, str(exc)
    except _Unsafe as exc:
        return True, str(exc)
    except re.error as exc:
        return False, f"not a valid regular expression ({exc})"
    except RecursionError:
        return False, "groups nest too deeply"
    return None


def backtracking_problem(pattern: str) -> str | None:
    """Why Python's ``re`` could take more than linear time on this pattern (None: proven safe).

    Patterns ``re`` cannot compile, and constructs RE2 lacks, are reported too."""
    found = _analyse(pattern)
    return None if found is None else found[1]


# -- compile and validate -------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _re2_search(pattern: str) -> Search | str:
    try:
        return _re2.compile(pattern, options=_RE2_OPTIONS).search  # type: ignore[no-any-return]
    except Exception as exc:
        return _re2_message(exc)


def _re2_message(exc: Exception) -> str:
    text = exc.args[0] if exc.args else exc
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"not supported by RE2 ({text})"


def pattern_problem(pattern: str) -> str | None:
    """Why a ``matches`` pattern cannot be saved, naming the bad part; None when it can."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"longer than {MAX_PATTERN_LENGTH} characters"
    for spelling, why in _DIVERGENT:
        if spelling.search(pattern):
            return f"bad regex for 'matches': {why}"
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"bad regex for 'matches': {exc}"
    found = _analyse(pattern)
    if found is not None and not found[0]:
        return f"bad regex for 'matches': {found[1]}"
    try:
        _re_search(pattern)
    except (re.error, RecursionError, OverflowError) as exc:  # e.g. (?u), which re.ASCII refuses
        return f"bad regex for 'matches': {exc}"
    if _re2 is not None:
        compiled = _re2_search(pattern)
        if isinstance(compiled, str):
            return f"bad regex for 'matches': {compiled}"
    if found is not None:
        return f"'matches' pattern {pattern!r} could take time that grows faster than the input: {found[1]}"
    return None


_DIVERGENT = (
    (re.compile(r"(?<!\\)\{,\d*\}"), "'{,n}' (RE2 reads it literally; write '{0,n}')"),
    (re.compile(r"\[:\^?[a-z]+:\]"), "a POSIX class such as '[[:alpha:]]' (Python's re does not know them)"),
)


def _end_only(items: list[Any], flags: int) -> None:
    """``$`` as RE2 reads it: outside multi-line mode, the very end only (in place)."""
    for index, (op, av) in enumerate(items):
        name = _name(op)
        if name == "AT" and av is _c.AT_END and not flags & re.MULTILINE:
            items[index] = (op, _c.AT_END_STRING)
        elif name == "SUBPATTERN":
            _end_only(av[3], _scoped(flags, av))
        elif name == "BRANCH":
            for alt in av[1]:
                _end_only(alt, flags)
        elif name in _REPEATS:
            _end_only(av[2], flags)


def _re_search(pattern: str) -> Search:
    """``re`` compiled to read the pattern as RE2 does (ASCII classes, ``$`` at the very end)."""
    parsed = _parser.parse(pattern, re.ASCII)
    _end_only(parsed.data, parsed.state.flags)
    return _compiler.compile(parsed, re.ASCII).search  # type: ignore[no-any-return]


def _guarded(search: Search) -> Search:
    def guarded(text: str) -> Any:
        try:
            return search(text)
        except UnicodeError:  # RE2 encodes to UTF-8: a lone surrogate cannot be, so it never matches
            return None

    return guarded


@lru_cache(maxsize=1024)
def compile_search(pattern: str) -> Search | str:
    """The search function for a pattern, or why it is not usable here (the condition is then false).

    Never raises and never returns a function that can backtrack catastrophically."""
    try:
        if _re2 is not None:
            compiled = _re2_search(pattern)
            return compiled if isinstance(compiled, str) else _guarded(compiled)
        if len(pattern) > MAX_PATTERN_LENGTH:
            return f"longer than {MAX_PATTERN_LENGTH} characters"
        problem = backtracking_problem(pattern)
        if problem is not None:
            return f"not proven safe without RE2 ({problem}); install turnout[re2]"
        return _re_search(pattern)
    except Exception as exc:  # RecursionError, OverflowError...: unusable, never raised
        return f"cannot be compiled ({type(exc).__name__})"
