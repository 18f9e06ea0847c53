"""Plain-dict pictures of domain objects, for audit before/after and API output."""

from __future__ import annotations

from typing import Any, TypedDict

from rollout.models import (
    ChangeRequest,
    Environment,
    Flag,
    FlagState,
    Guardrail,
    MismatchGroup,
    RolloutStage,
    Workload,
)


class FlagStateSnapshot(TypedDict):
    flag: str
    environment: str
    enabled: bool
    retired: bool
    percentage: float
    compare_percentage: float
    include_cohorts: list[str]
    exclude_cohorts: list[str]
    overrides: dict[str, str]
    stage: int
    paused: bool
    version: int


class StageSnapshot(TypedDict):
    position: int
    name: str
    percentage: float
    compare_percentage: float
    include_cohorts: list[str]
    min_soak_seconds: int
    gate: str
    scheduled_at: str | None
    retires_legacy: bool


class GuardrailSnapshot(TypedDict):
    max_error_rate: float | None
    max_error_rate_increase: float | None
    max_latency_p95_ratio: float | None
    max_mismatch_rate: float | None
    min_sample_size: int
    window_seconds: int
    action: str


def _pct(value: Any) -> float:
    return float(value)


def environment_snapshot(env: Environment) -> dict[str, Any]:
    return {"key": env.key, "name": env.name, "order": env.order, "requires_approval": env.requires_approval,
            "description": env.description}


def workload_snapshot(w: Workload) -> dict[str, Any]:
    return {
        "key": w.key, "name": w.name, "description": w.description, "owner": w.owner, "risk": w.risk,
        "phase": w.phase, "reversibility": w.reversibility, "legacy_system": w.legacy_system,
        "parallel_system": w.parallel_system, "version": w.version,
    }


def flag_snapshot(f: Flag) -> dict[str, Any]:
    return {
        "key": f.key, "workload": f.workload.key, "description": f.description, "salt": f.salt,
        "bucket_by": f.bucket_by, "kind": f.kind, "version": f.version,
    }


def flag_state_snapshot(s: FlagState) -> FlagStateSnapshot:
    return {
        "flag": s.flag.key,
        "environment": s.environment.key,
        "enabled": s.enabled,
        "retired": s.retired,
        "percentage": _pct(s.percentage),
        "compare_percentage": _pct(s.compare_percentage),
        "include_cohorts": sorted(c.key for c in s.include_cohorts.all()),
        "exclude_cohorts": sorted(c.key for c in s.exclude_cohorts.all()),
        "overrides": dict(sorted(s.overrides.items())),
        "stage": s.stage,
        "paused": s.paused_at is not None,
        "version": s.version,
    }


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


def stage_snapshot(st: RolloutStage) -> StageSnapshot:
    return {
        "position": st.position,
        "name": st.name,
        "percentage": _pct(st.percentage),
        "compare_percentage": _pct(st.compare_percentage),
        "include_cohorts": sorted(c.key for c in st.include_cohorts.all()),
        "min_soak_seconds": st.min_soak_seconds,
        "gate": st.gate,
        "scheduled_at": st.scheduled_at.isoformat() if st.scheduled_at else None,
        "retires_legacy": st.retires_legacy,
    }


def plan_snapshot(state: FlagState) -> list[StageSnapshot]:
    return [stage_snapshot(st) for st in state.stages.prefetch_related("include_cohorts").order_by("position")]


def guardrail_snapshot(g: Guardrail | None) -> GuardrailSnapshot | None:
    if g is None:
        return None
    return {
        "max_error_rate": _opt(g.max_error_rate),
        "max_error_rate_increase": _opt(g.max_error_rate_increase),
        "max_latency_p95_ratio": _opt(g.max_latency_p95_ratio),
        "max_mismatch_rate": _opt(g.max_mismatch_rate),
        "min_sample_size": g.min_sample_size,
        "window_seconds": g.window_seconds,
        "action": g.action,
    }


def change_request_snapshot(cr: ChangeRequest) -> dict[str, Any]:
    return {
        "id": cr.pk,
        "target_type": cr.target_type,
        "target": cr.target_key,
        "flag": cr.flag_state.flag.key if cr.flag_state is not None else None,
        "environment": cr.flag_state.environment.key if cr.flag_state is not None else None,
        "action": cr.action,
        "params": cr.params,
        "based_on_version": cr.based_on_version,
        "summary": cr.summary,
        "status": cr.status,
        "requested_by": cr.requested_by_label,
        "decided_by": cr.decided_by_label or None,
        "decision_reason": cr.decision_reason,
    }


def mismatch_group_snapshot(g: MismatchGroup) -> dict[str, Any]:
    return {
        "id": g.pk,
        "fingerprint": g.fingerprint,
        "count": g.count,
        "known": g.known,
        "known_reason": g.known_reason,
    }
