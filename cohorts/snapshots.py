from __future__ import annotations

from typing import Any

from cohorts.models import Cohort


def cohort_snapshot(c: Cohort) -> dict[str, Any]:
    return {"key": c.key, "name": c.name, "description": c.description, "match_on": c.match_on,
            "rules": c.rules, "version": c.version}
