"""Plain-dict pictures of domain objects, for audit before/after and API output."""

from __future__ import annotations

from typing import Any

from rollout.models import Environment, Flag, FlagState, Workload


def _pct(value: Any) -> float:
    return float(value)


def environment_snapshot(env: Environment) -> dict[str, Any]:
    return {"key": env.key, "name": env.name, "order": env.order, "requires_approval": env.requires_approval}


def workload_snapshot(w: Workload) -> dict[str, Any]:
    return {
        "key": w.key, "name": w.name, "description": w.description, "owner": w.owner, "risk": w.risk,
        "phase": w.phase, "reversibility": w.reversibility, "legacy_system": w.legacy_system,
        "parallel_system": w.parallel_system, "version": w.version,
    }


def flag_snapshot(f: Flag) -> dict[str, Any]:
    return {
        "key": f.key, "workload": f.workload.key, "description": f.description, "salt": f.salt,
        "bucket_by": f.bucket_by,
    }


def flag_state_snapshot(s: FlagState) -> dict[str, Any]:
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
        "version": s.version,
    }
