"""The migration stage card on the flag page (docs/migrations.md): ``{% migration_card state %}``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django import template

from rollout.datamigration.cards import migration_card as card_context
from rollout.models import FlagState

register = template.Library()


@register.inclusion_tag("rollout/migration_card.html", takes_context=True)
def migration_card(context: template.Context, state: FlagState) -> dict[str, Any]:
    """Where each tier stands, what each stage means, the next allowed step and the controls the person's role
    and the policy allow (move forward, roll back, resolve divergences), SDK figures and charts per origin and
    operation, the divergences with the export. ``migration_panel`` in the page's context reopens a panel
    (after an error)."""
    request = context.get("request")
    return card_context(getattr(request, "user", None), state, panel=str(context.get("migration_panel") or ""))


@register.filter
def when(value: Any) -> str:
    """An ISO time (or a datetime) as ``2026-12-07 02:15:51 UTC``; empty for none."""
    if not value:
        return ""
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if at.utcoffset() is None:
        return at.strftime("%Y-%m-%d %H:%M:%S")
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
