"""Reading JSON sent from outside: one helper for every entrance, with a nesting limit.

Python's ``json`` recurses once per level of arrays and objects, so a body such as
``[[[[…]]]]`` 30,000 levels deep raises ``RecursionError`` (an HTML 500), and one a few hundred
levels deep parses but breaks whatever walks it next (serializers, audit snapshots, the rules
validator). ``loads`` turns both into ``JsonInputError`` naming the problem, which every entrance
answers with a 400: the DRF parser below (the default for the management API), the lean SDK and
OFREP views (``rollout.delivery.lean.read_json``) and the UI's JSON fields (``cohorts.forms``).
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from common.charsets import text_encoding

__all__ = ["MAX_DEPTH", "JSONParser", "JsonInputError", "loads"]

#: Deepest nesting of arrays and objects accepted (cohort rules, the deepest legitimate input,
#: nest at most 32 rule levels: 64 JSON levels plus the request's own few).
MAX_DEPTH = 100


class JsonInputError(ValueError):
    """Input that is not JSON, or nests too deeply; ``message`` ('is not valid JSON: ...', 'nests ...')
    says which, to follow the name of what was read."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _too_deep(value: Any, limit: int) -> bool:
    """Does ``value`` nest arrays/objects more than ``limit`` levels? (Iterative: no recursion.)"""
    if not isinstance(value, (dict, list)):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def loads(data: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH, allow_nan: bool = True) -> Any:
    """Parse JSON text; ``JsonInputError`` when it is not JSON or nests deeper than ``max_depth``.

    ``allow_nan`` False also refuses ``NaN`` and ``Infinity`` (not JSON, but Python's json reads them).
    """
    too_deep = f"nests arrays and objects deeper than {max_depth} levels"
    try:
        value = json.loads(data, parse_constant=None if allow_nan else _refuse_constant)
    except RecursionError:
        raise JsonInputError(too_deep) from None
    except json.JSONDecodeError as exc:
        raise JsonInputError(f"is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise JsonInputError(f"is not valid JSON: {exc}") from None
    if _too_deep(value, max_depth):
        raise JsonInputError(too_deep)
    return value


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser reading through ``loads`` (settings: ``DEFAULT_PARSER_CLASSES``)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        declared = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        encoding = text_encoding(declared)
        if encoding is None:  # unknown, or a codec that is not a text encoding (rot13, hex, bz2...)
            raise ParseError(f'Unsupported charset "{declared[:40]}" in the request Content-Type.')
        try:
            text = stream.read().decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - the body is not valid {encoding} (byte {exc.start})") from None
        try:
            return loads(text, allow_nan=not self.strict)
        except JsonInputError as exc:
            raise ParseError(f"JSON parse error - the body {exc.message}") from None
