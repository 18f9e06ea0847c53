"""The migration stage card on the flag page (docs/migrations.md): ``{% migration_card state %}``."""

from __future__ import annotations

from typing import Any

from django import template

from rollout.datamigration.reports import migration_status
from rollout.models import FlagKind, FlagState

register = template.Library()


@register.inclusion_tag("rollout/migration_card.html")
def migration_card(state: FlagState) -> dict[str, Any]:
    """Where each tier stands, what each stage means, the next allowed step, SDK figures per origin and
    operation, divergence counts with the export (changes: the API's migration endpoints)."""
    if state.flag.kind != FlagKind.MIGRATION:
        return {"migration": None}
    return {"migration": migration_status(state), "state": state}
