"""A workload's phase follows its rollouts (called inside the transaction of every rollout change).

A flag state's phase comes from its configuration: retired → ``retired``; some percentage on the
parallel path → ``transition``; only cohorts → ``pilot``; only comparing → ``validation``;
nothing → ``development``. A kill does not change the phase (the configuration stays, only the
switch is off). The workload takes the least advanced phase of its flags in the most advanced
environment (highest ``order``) where any of them is in play — production, once it has begun.
"""

from __future__ import annotations

from rollout.models import FlagState, Phase, Workload

ORDER = [Phase.DEVELOPMENT, Phase.VALIDATION, Phase.PILOT, Phase.TRANSITION, Phase.RETIRED]


def state_phase(state: FlagState) -> Phase:
    if state.retired:
        return Phase.RETIRED
    if state.percentage > 0:
        return Phase.TRANSITION
    if state.include_cohorts.exists():
        return Phase.PILOT
    if state.compare_percentage > 0:
        return Phase.VALIDATION
    return Phase.DEVELOPMENT


def _in_play(state: FlagState) -> bool:
    return state.stage > 0 or state.enabled or state.retired


def workload_phase(workload: Workload) -> Phase:
    states = [s for s in FlagState.objects.filter(flag__workload=workload).select_related("environment")
              if _in_play(s)]
    if not states:
        return Phase.DEVELOPMENT
    top = max(s.environment.order for s in states)
    phases = [state_phase(s) for s in states if s.environment.order == top]
    return min(phases, key=ORDER.index)


def sync_workload_phase(workload: Workload) -> str:
    """Store the workload's phase as its rollouts say (inside the caller's transaction); returns it."""
    phase = workload_phase(workload)
    if workload.phase != phase:
        Workload.objects.filter(pk=workload.pk).update(phase=phase)
        workload.phase = phase
    return str(phase)
