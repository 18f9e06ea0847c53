"""Template helpers for the UI: permission checks per environment, JSON pretty-printing, diffs."""

from __future__ import annotations

import json
from typing import Any

from django import template

from common.permissions import Capability, can

register = template.Library()


@register.simple_tag(takes_context=True)
def may(context: template.Context, capability: str, environment: Any = None) -> bool:
    """``{% may "change_env" env as allowed %}``: the permission layer, from a template."""
    return can(context["request"].user, Capability(capability), environment=environment)


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


@register.filter
def pct(value: Any) -> str:
    """25.0000 → "25", 12.5000 → "12.5"."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return f"{number:.4f}".rstrip("0").rstrip(".")


def _as_fields(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return {} if value is None else {"value": value}


@register.filter
def diff_rows(event: Any) -> list[dict[str, Any]]:
    """Before/after of an audit event as rows: field, before, after, changed."""
    before, after = _as_fields(event.before), _as_fields(event.after)
    rows = []
    for key in list(dict.fromkeys([*before.keys(), *after.keys()])):
        b, a = before.get(key), after.get(key)
        rows.append({"field": key, "before": b, "after": a, "changed": b != a, "added": key not in before,
                     "removed": key not in after})
    return rows


@register.filter
def get_item(mapping: Any, key: Any) -> Any:
    return mapping.get(key) if hasattr(mapping, "get") else None


@register.filter
def words(value: Any) -> str:
    """``insufficient_data`` → ``insufficient data``."""
    return str(value or "").replace("_", " ")
