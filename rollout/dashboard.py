"""Reads for the dashboard and the flag page: workloads with their per-environment rollout state."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from django.db.models import Count, Q

from audit.models import AuditEvent
from rollout.models import Environment, Flag, FlagState, Guardrail, MetricMinute, Workload
from rollout.plans.readiness import ReadinessReport
from rollout.telemetry.reads import SeriesPoint

STATUSES = (("live", "Live"), ("off", "Off / killed"), ("retired", "Legacy retired"))


def state_status(state: FlagState) -> str:
    if state.retired:
        return "retired"
    return "live" if state.enabled else "off"


@dataclass
class EnvCell:
    environment: Environment
    states: list[FlagState] = field(default_factory=list)


@dataclass
class WorkloadRow:
    workload: Workload
    flags: list[Flag]
    cells: list[EnvCell]
    last_event: AuditEvent | None = None


def _object_filter(workload: Workload, flag_keys: list[str]) -> Q:
    q = Q(object_type="workload", object_key=workload.key)
    if flag_keys:
        q |= Q(object_type="flag", object_key__in=flag_keys)
        for key in flag_keys:
            q |= Q(object_type="flag_state", object_key__startswith=f"{key}@")
    return q


def guardrail_status(state: FlagState) -> str:
    """The guardrails' last verdict (from the periodic check), without reading metrics per row."""
    try:
        checked = state.guardrail.last_check  # select_related: no query
    except Guardrail.DoesNotExist:
        return "unguarded"
    return str(checked["status"]) if checked else "not checked yet"


NEAR_LIMIT = 0.75  # a healthy check at this share of its limit or more is shown as close to it


def guardrail_near(state: FlagState) -> str:
    """The checks of the last verdict that passed but came close to their limit ("error rate 1.2% of 1.5%"),
    so a rollout about to trip is visible before it does; "" when none (or no check yet)."""
    try:
        checked = state.guardrail.last_check  # select_related: no query
    except Guardrail.DoesNotExist:
        return ""
    if not checked or checked.get("status") != "healthy":
        return ""
    near = []
    for check in checked.get("checks", []):
        value, limit = check.get("value"), check.get("limit")
        if check.get("ok") and value is not None and limit and value >= NEAR_LIMIT * limit:
            unit = "" if check["name"] == "latency_p95_ratio" else "%"
            near.append(f"{check['name'].replace('_', ' ')} {round(value, 2)}{unit} of {limit}{unit}")
    return "; ".join(near)


def last_event_for(workload: Workload, flag_keys: list[str]) -> AuditEvent | None:
    """The newest audit event about the workload, its flags or their states: who changed it, when."""
    return AuditEvent.objects.filter(_object_filter(workload, flag_keys)).order_by("-sequence").first()


def last_state_event(state: FlagState) -> AuditEvent | None:
    return (
        AuditEvent.objects.filter(object_type="flag_state", object_key=f"{state.flag.key}@{state.environment.key}")
        .order_by("-sequence")
        .first()
    )


def dashboard_rows(
    *, q: str = "", risk: str = "", phase: str = "", status: str = "", environment: str = ""
) -> tuple[list[Environment], list[WorkloadRow]]:
    envs = list(Environment.objects.all())
    if environment:
        envs = [e for e in envs if e.key == environment] or envs
    workloads = Workload.objects.all()
    if q:
        workloads = workloads.filter(
            Q(key__icontains=q) | Q(name__icontains=q) | Q(owner__icontains=q) | Q(flags__key__icontains=q)
        ).distinct()
    if risk:
        workloads = workloads.filter(risk=risk)
    if phase:
        workloads = workloads.filter(phase=phase)
    workloads_list = list(workloads.prefetch_related("flags"))
    states: dict[tuple[int, int], list[FlagState]] = defaultdict(list)
    for state in (
        FlagState.objects.filter(flag__workload__in=workloads_list, environment__in=envs)
        .select_related("flag", "environment", "guardrail")
        .prefetch_related("include_cohorts", "exclude_cohorts")
        .annotate(stage_count=Count("stages"))
    ):
        state.guardrail_status = guardrail_status(state)  # type: ignore[attr-defined]  # for the template, not a field
        state.guardrail_near = guardrail_near(state)  # type: ignore[attr-defined]  # for the template, not a field
        states[(state.flag.workload_id, state.environment_id)].append(state)
    rows = []
    for workload in workloads_list:
        cells = [EnvCell(env, states.get((workload.pk, env.pk), [])) for env in envs]
        if status and not any(state_status(s) == status for c in cells for s in c.states):
            continue
        flags = list(workload.flags.all())
        rows.append(WorkloadRow(workload, flags, cells, last_event_for(workload, [f.key for f in flags])))
    return envs, rows


def flag_states(flag: Flag) -> list[FlagState]:
    return list(
        FlagState.objects.filter(flag=flag)
        .select_related("flag", "environment")
        .prefetch_related("include_cohorts", "exclude_cohorts")
        .order_by("environment__order", "environment__key")
    )


def share_moving(old: Any, new: Any) -> float:
    """Percentage points of subjects that change path when the split goes from ``old`` to ``new``."""
    return abs(float(new) - float(old))


def exposure_impact(state: FlagState, new: Any, *, hours: int = 24) -> dict[str, int] | None:
    """From the last ``hours`` of traffic SDKs reported: how many calls would have taken the other path.

    Raising the split moves that share of the calls the split kept on legacy; lowering it, that share
    of the ones it sent to parallel (cohorts and overrides do not move). Calls, not distinct subjects:
    SDKs report counts. ``None`` when nothing was reported.
    """
    from datetime import timedelta

    from django.db.models import Sum
    from django.utils import timezone

    since = timezone.now() - timedelta(hours=hours)
    calls = dict(
        MetricMinute.objects.filter(environment_id=state.environment_id, flag_key=state.flag.key, minute__gte=since)
        .values_list("path").annotate(n=Sum("calls")).values_list("path", "n")
    )
    legacy, parallel = int(calls.get("legacy") or 0), int(calls.get("parallel") or 0)
    if legacy + parallel == 0:
        return None
    old, new_value = float(state.percentage), float(new)
    if new_value > old:
        moving = legacy * (new_value - old) / (100 - old) if old < 100 else 0.0
    else:
        moving = parallel * (old - new_value) / old if old > 0 else 0.0
    return {"seen": legacy + parallel, "affected": round(moving), "hours": hours}


PATH_COLOURS = {"legacy": "#6b7780", "parallel": "#1f5fae"}


def readiness_charts(report: ReadinessReport) -> list[dict[str, Any]]:
    """Chart data (labels + series) from the readiness report's per-minute series, one element id each."""
    series = report["series"]
    labels = [row["minute"][11:16] for row in series]

    def line(metric: Literal["error_rate", "p95_ms"], path: Literal["legacy", "parallel"]) -> dict[str, Any]:
        return {"label": path, "color": PATH_COLOURS[path], "data": [row[path][metric] for row in series]}

    def mismatch_rate(row: SeriesPoint) -> float | None:
        compared = row["legacy"]["comparisons"] + row["parallel"]["comparisons"]
        mismatched = row["legacy"]["mismatches"] + row["parallel"]["mismatches"]
        return round(100.0 * mismatched / compared, 4) if compared else None

    charts = [
        {"id": "error-rate", "title": "Error rate", "unit": "%",
         "labels": labels, "series": [line("error_rate", "legacy"), line("error_rate", "parallel")]},
        {"id": "latency", "title": "Latency p95", "unit": "ms",
         "labels": labels, "series": [line("p95_ms", "legacy"), line("p95_ms", "parallel")]},
        {"id": "mismatch", "title": "Mismatch rate (compared calls)", "unit": "%",
         "labels": labels, "series": [{"label": "mismatches", "color": "#a8201a",
                                       "data": [mismatch_rate(row) for row in series]}]},
    ]
    for chart in charts:
        chart["element_id"] = f"chart-{report['environment']}-{chart['id']}"
    return charts


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return None
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        return None
    return number if number.is_finite() else None


def _plain(number: Decimal) -> int | float:
    return int(number) if number == number.to_integral_value() else float(number)


def _same_kind(now: Any, proposed: Any) -> tuple[Any, Any]:
    """A request stores numbers as the text it was given ("10"); the snapshot holds numbers (0.0). Shown
    side by side, both are numbers — 0 → 10, not 0.0 → "10"."""
    if isinstance(now, int | float | Decimal) and not isinstance(now, bool):
        a, b = _number(now), _number(proposed)
        if a is not None and b is not None:
            return _plain(a), _plain(b)
    return now, proposed


def change_proposal(cr: Any, current: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What a change request would change, as rows (field, now, proposed) for the diff view."""
    params = dict(cr.params or {})
    if cr.action in {"flag_state.updated", "flag.updated", "workload.updated", "cohort.updated"}:
        rows = []
        for name, value in sorted(params.items()):
            now, proposed = _same_kind(current.get(name), value)
            rows.append({"field": name, "now": now, "proposed": proposed, "changed": now != proposed})
        return rows
    if cr.action == "flag_state.advanced":
        return [{"field": "stage", "now": current.get("stage"), "proposed": (current.get("stage") or 0) + 1,
                 "changed": True}] + ([{"field": "force", "now": None, "proposed": True, "changed": True}]
                                      if params.get("force") else [])
    if cr.action in ("flag_state.resumed", "flag_state.retired"):
        field = "enabled" if cr.action == "flag_state.resumed" else "retired"
        return [{"field": field, "now": current.get(field), "proposed": True, "changed": True}]
    if cr.action == "flag_state.plan_set":
        stages = params.get("stages") or []
        return [{"field": "plan", "now": None, "changed": True,
                 "proposed": [f"{s.get('name')}: {s.get('percentage')}%" for s in stages]}]
    return [{"field": name, "now": None, "proposed": value, "changed": True} for name, value in sorted(params.items())]
