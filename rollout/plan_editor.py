"""The stage editor's rows: a rollout plan as the web form holds it, and back.

The editor only translates. Its rows become the same stage objects the API takes (``rollout_plan_set``'s
``PlanInput``, so the same field checks and the same messages), then one ``flag_state.plan_set`` action
through the action layer, whose service (``rollout.plans.stages``) checks the plan as a whole (names,
rising percentages, where legacy is retired). Errors from either come back next to the stage and field
they name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.http import QueryDict

from common.errors import ServiceError
from rollout.api.rollouts import PlanInput, stage_json

UNITS: dict[str, int] = {"minutes": 60, "hours": 3600, "days": 86_400, "seconds": 1}
MAX_ROWS = 20
_SERVICE_FIELD = re.compile(r"^stages\[(\d+)\](?:\.(\w+))?$")


@dataclass
class StageRow:
    """One stage as the form shows it: text as typed, the soak time as a number and a unit."""

    name: str = ""
    percentage: str = "0"
    compare_percentage: str = "0"
    include_cohorts: list[str] = field(default_factory=list)
    soak: str = "0"
    soak_unit: str = "hours"
    gate: str = "manual"
    scheduled_at: str = ""  # datetime-local, UTC
    retires_legacy: bool = False
    errors: dict[str, list[str]] = field(default_factory=dict)


def _number(value: Any) -> str:
    text = f"{float(value):.4f}".rstrip("0").rstrip(".")
    return text or "0"


def _soak(seconds: int) -> tuple[str, str]:
    for unit in ("days", "hours", "minutes"):
        size = UNITS[unit]
        if seconds and seconds % size == 0:
            return str(seconds // size), unit
    return str(seconds), "seconds"


def rows_from_stages(stages: Sequence[Mapping[str, Any]]) -> list[StageRow]:
    """Rows for stages in the plan's own shape (the stored plan's snapshot or a template's stages)."""
    rows = []
    for stage in stages:
        soak, unit = _soak(int(stage.get("min_soak_seconds") or 0))
        scheduled = stage.get("scheduled_at") or ""
        rows.append(StageRow(
            name=str(stage.get("name", "")), percentage=_number(stage.get("percentage", 0)),
            compare_percentage=_number(stage.get("compare_percentage", 0)),
            include_cohorts=list(stage.get("include_cohorts") or []), soak=soak, soak_unit=unit,
            gate=str(stage.get("gate", "manual")), scheduled_at=str(scheduled)[:16],
            retires_legacy=bool(stage.get("retires_legacy"))))
    return rows


def rows_from_post(data: QueryDict) -> list[StageRow]:
    """The rows a submitted editor holds (``stages-N-field``), in order, at most ``MAX_ROWS`` + 1."""
    count = data.get("stages-count", "0")
    total = min(int(count), MAX_ROWS + 1) if count.isdigit() else 0
    rows = []
    for n in range(total):
        prefix = f"stages-{n}-"
        rows.append(StageRow(
            name=data.get(prefix + "name", "").strip(), percentage=data.get(prefix + "percentage", "").strip(),
            compare_percentage=data.get(prefix + "compare_percentage", "").strip(),
            include_cohorts=[c for c in data.getlist(prefix + "include_cohorts") if c],
            soak=data.get(prefix + "soak", "").strip(), soak_unit=data.get(prefix + "soak_unit", "hours"),
            gate=data.get(prefix + "gate", "manual"), scheduled_at=data.get(prefix + "scheduled_at", "").strip(),
            retires_legacy=data.get(prefix + "retires_legacy") == "on"))
    return rows


def next_row(rows: Sequence[StageRow]) -> StageRow:
    """A new stage after the last one: same split (percentages only rise), a day's soak, manual gate."""
    last = rows[-1] if rows else None
    return StageRow(name=f"stage {len(rows) + 1}", percentage=last.percentage if last else "0",
                    compare_percentage=last.compare_percentage if last else "0",
                    include_cohorts=list(last.include_cohorts) if last else [], soak="1", soak_unit="days")


def _row_input(row: StageRow) -> dict[str, Any]:
    """A row as the API's stage input (soak in seconds; a time without a zone is UTC, as the form says)."""
    soak: Any = row.soak or "0"
    if soak.isdigit() and row.soak_unit in UNITS:
        soak = int(soak) * UNITS[row.soak_unit]
    scheduled = row.scheduled_at or None
    if scheduled and not re.search(r"(Z|[+-]\d\d:?\d\d)$", scheduled):
        scheduled += "Z"
    return {"name": row.name, "percentage": row.percentage or "0",
            "compare_percentage": row.compare_percentage or "0", "include_cohorts": row.include_cohorts,
            "min_soak_seconds": soak, "gate": row.gate, "scheduled_at": scheduled,
            "retires_legacy": row.retires_legacy}


def _field(name: str) -> str:
    return "soak" if name == "min_soak_seconds" else name


def _messages(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [m for v in value.values() for m in _messages(v)]
    if isinstance(value, list | tuple):
        return [m for v in value for m in _messages(v)]
    return [str(value)]


def validated_stages(rows: list[StageRow], *, version: int | None, reason: str) -> tuple[list[dict[str, Any]] | None,
                                                                                         list[str]]:
    """The rows as the plan's stages, checked by the API's own input; on errors, each row gets its
    messages (``row.errors``) and the plan-wide ones are returned."""
    body: dict[str, Any] = {"stages": [_row_input(r) for r in rows], "reason": reason}
    if version is not None:
        body["version"] = version
    data = PlanInput(data=body)
    if data.is_valid():
        return [stage_json(s) for s in data.validated_data["stages"]], []
    general: list[str] = []
    for name, value in data.errors.items():
        if name == "stages" and isinstance(value, list) and len(value) == len(rows) and all(
                isinstance(v, Mapping) for v in value):
            for row, row_errors in zip(rows, value, strict=True):
                for fname, messages in row_errors.items():
                    row.errors.setdefault(_field(fname), []).extend(_messages(messages))
        else:
            general += [f"{name}: {m}" if name not in ("stages", "non_field_errors") else m for m in _messages(value)]
    if not rows:
        general.append("a plan has at least one stage")
    return None, general


def place_service_errors(rows: list[StageRow], exc: ServiceError) -> list[str]:
    """A service's errors (``stages[2].percentage``) next to the stage and field they name; the rest
    returned for the top of the form."""
    general: list[str] = []
    for name, messages in (exc.fields or {"__all__": [exc.message]}).items():
        match = _SERVICE_FIELD.match(name)
        if match and int(match.group(1)) < len(rows):
            rows[int(match.group(1))].errors.setdefault(_field(match.group(2) or "name"), []).extend(messages)
        else:
            general += [m if name in ("__all__", "stages") else f"{name}: {m}" for m in messages]
    return general
