"""Every change a person can ask for, as data: its name, its target, its parameters, what it does.

An ``ActionSpec`` says how to lock the target row (inside the action's one transaction), what the change
does as policy sees it (``rollout.policy.Effect``), how to perform it (the service that writes the
change and its one audit event) and how to describe it to an approver. ``actions.submit`` reads it;
nothing else decides which actions exist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from audit.models import AuditEvent
from audit.names import Action
from cohorts.models import Cohort
from cohorts.services import (
    cohort_effect,
    cohort_members_add,
    cohort_members_change,
    cohort_members_remove,
    cohort_update,
)
from common.actors import Actor
from common.errors import NotFound, ValidationFailed
from common.services import UNSET, check_version
from rollout import stale
from rollout.datamigration import services as migration_services
from rollout.feedback import services as feedback_services
from rollout.models import Flag, FlagState, TargetType, Workload
from rollout.plans import guardrails, prometheus, promotion, stages
from rollout.plans.stages import set_plan_state
from rollout.policy import NO_EFFECT, Approval, Effect, enforce, state_effect, states_effect, workload_effect
from rollout.services import flags as flag_services
from rollout.services import workloads as workload_services
from rollout.services.flags import get_state_for_update
from rollout.telemetry import mismatches

Perform = Callable[..., Any]


@dataclass(frozen=True)
class ActionSpec:
    name: Action
    target: TargetType
    params: frozenset[str]
    perform: Perform  # (obj, *, actor, key, approval, version, reason, **params) inside the transaction
    describe: Callable[[Any, Mapping[str, Any]], str]
    effect: Callable[[Any, Mapping[str, Any]], Effect] | None = None  # None: the flag state's own effect

    def effect_of(self, obj: Any, params: Mapping[str, Any]) -> Effect:
        if self.effect is None:
            return state_effect(obj, self.name)
        return self.effect(obj, params)


# -- targets: "flag@environment" for a flag state, the key for the rest --------------------------


def split_state_key(key: str) -> tuple[str, str]:
    flag, sep, environment = key.rpartition("@")
    if not sep or not flag or not environment:
        raise ValidationFailed.field("target", f"a flag state is named 'flag@environment', not {key!r}")
    return flag, environment


def state_key(state: FlagState) -> str:
    return f"{state.flag.key}@{state.environment.key}"


def _lock_flag(key: str) -> Flag:
    flag = Flag.objects.select_for_update(of=("self",)).select_related("workload").filter(key=key).first()
    if flag is None:
        raise NotFound(f"flag '{key}' does not exist")
    return flag


def _lock_workload(key: str) -> Workload:
    workload = Workload.objects.select_for_update().filter(key=key).first()
    if workload is None:
        raise NotFound(f"workload '{key}' does not exist")
    return workload


def _lock_cohort(key: str) -> Cohort:
    cohort = Cohort.objects.select_for_update().filter(key=key).first()
    if cohort is None:
        raise NotFound(f"cohort '{key}' does not exist")
    return cohort


LOCKS: dict[TargetType, Callable[[str], Any]] = {
    TargetType.FLAG_STATE: lambda key: get_state_for_update(*split_state_key(key)),
    TargetType.FLAG: _lock_flag,
    TargetType.WORKLOAD: _lock_workload,
    TargetType.COHORT: _lock_cohort,
}


# -- flag states: the inner services run on the row locked here -----------------------------------


def _update(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
            **fields: Any) -> AuditEvent | None:
    if "percentage" in fields:
        fields["percentage_value"] = fields.pop("percentage")
    return flag_services.update_state(state, actor=actor, approval=approval, version=version, reason=reason, **fields)


def _advance(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
             force: bool = False, resume: bool = False) -> AuditEvent:
    for name, value in (("force", force), ("resume", resume)):
        if not isinstance(value, bool):
            raise ValidationFailed.field(name, "must be true or false")
    return stages.advance_state(state, actor=actor, approval=approval, version=version, reason=reason, force=force,
                                resume=resume)


def _resume(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None,
            reason: str) -> AuditEvent:
    return flag_services.resume_state(state, actor=actor, approval=approval, version=version, reason=reason)


def _retire(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None,
            reason: str) -> AuditEvent:
    return flag_services.retire_state(state, actor=actor, approval=approval, version=version, reason=reason)


def _plan(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
          stages: Any = None) -> AuditEvent:
    return set_plan_state(state, actor=actor, approval=approval, version=version, reason=reason, stages=stages)


def _guardrails(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
                **limits: Any) -> AuditEvent:
    return guardrails.set_guardrail_state(state, actor=actor, approval=approval, version=version, reason=reason,
                                          **limits)


def _promote(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
             **copy: Any) -> AuditEvent:
    return promotion.promote_state(state, actor=actor, approval=approval, version=version, reason=reason, **copy)


def _queries(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
             queries: Any = ()) -> AuditEvent:
    return prometheus.set_queries_state(state, actor=actor, approval=approval, version=version, reason=reason,
                                        queries=queries)


def _feedback_rule(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
                   **fields: Any) -> AuditEvent:
    return feedback_services.set_feedback_rule_state(state, actor=actor, approval=approval, version=version,
                                                     reason=reason, **fields)


def _removes_rule(params: Mapping[str, Any]) -> bool:
    return "max_score_drop" in params and params["max_score_drop"] is None


def _known(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
           group: int = 0, known: bool = True) -> AuditEvent:
    return mismatches.mark_known_state(state, actor=actor, approval=approval, version=version, reason=reason,
                                       group=group, known=known)


def _kill(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None,
          reason: str) -> AuditEvent:
    return flag_services.kill_state(state, actor=actor, reason=reason, version=version)


def _rollback(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None,
              reason: str) -> AuditEvent:
    return stages.rollback_state(state, actor=actor, reason=reason, version=version)


def _pause(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None,
           reason: str) -> AuditEvent:
    return stages.pause_state(state, actor=actor, reason=reason, version=version)


def _migration_stage(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None,
                     reason: str, **config: Any) -> AuditEvent | None:
    return migration_services.set_migration_state(state, actor=actor, approval=approval, version=version,
                                                  reason=reason, **config)


def _migration_rollback(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None,
                        reason: str) -> AuditEvent:
    return migration_services.rollback_migration_state(state, actor=actor, version=version, reason=reason)


def _divergences_resolved(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None,
                          reason: str, divergences: Any = ()) -> AuditEvent:
    return migration_services.resolve_divergences_state(state, actor=actor, approval=approval, version=version,
                                                        reason=reason, divergences=divergences)


MAX_STEPS = 50


def _steps(params: Mapping[str, Any]) -> list[tuple[ActionSpec, dict[str, Any]]]:
    """The changes one ``flag_state.configured`` carries, each checked against its own spec."""
    raw = params.get("steps")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_STEPS:
        raise ValidationFailed.field("steps", f"must be a list of 1 to {MAX_STEPS} changes of the flag state")
    out: list[tuple[ActionSpec, dict[str, Any]]] = []
    for index, step in enumerate(raw):
        if (not isinstance(step, Mapping) or set(step) - {"action", "params"} or not isinstance(step.get("action"), str)
                or not isinstance(step.get("params", {}), Mapping)):
            raise ValidationFailed.field(f"steps[{index}]", "must be an object {action, params: {…}}")
        spec = spec_for(step["action"], dict(step.get("params") or {}))
        if spec.target != TargetType.FLAG_STATE or spec.name == Action.FLAG_STATE_CONFIGURED:
            raise ValidationFailed.field(f"steps[{index}].action", f"'{spec.name}' is not a change of a flag state")
        out.append((spec, dict(step.get("params") or {})))
    return out


def _configured_effect(state: FlagState, params: Mapping[str, Any]) -> Effect:
    """Everything the steps do: every environment and workload any of them reaches, and an always-approval
    reason when one of them has it (so the whole never needs less than its strictest step)."""
    effects = [spec.effect_of(state, p) for spec, p in _steps(params)]
    envs = {e.pk: e for effect in effects for e in effect.environments}
    workloads = {w.key: w for effect in effects for w in effect.workloads}
    always = "; ".join(dict.fromkeys(e.always_approval for e in effects if e.always_approval))
    return Effect(environments=tuple(envs.values()), workloads=tuple(workloads.values()), always_approval=always,
                  decides=any(e.decides for e in effects))


def _configured(state: FlagState, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
                steps: Any = ()) -> list[Any]:
    """The steps in order on the one locked row, in the one transaction: each is policed by its own rule
    (with the approval of the request that carries them all) and writes its own audit event."""
    check_version(state, version, what=f"flag state '{_where(state)}'")
    events = []
    for spec, params in _steps({"steps": steps}):
        enforce(actor, spec.name, spec.effect_of(state, params), approval=approval,
                what=f"{spec.name} of '{_where(state)}'")
        events.append(spec.perform(state, actor=actor, approval=approval, version=state.version, reason=reason,
                                   **params))
    return events


def _describe_configured(state: FlagState, params: Mapping[str, Any]) -> str:
    try:
        steps = _steps(params)
    except ValidationFailed:
        return f"change {_where(state)}"
    runs: list[list[Any]] = []  # [description, count]: repeated steps (advance, advance) said once
    for spec, p in steps:
        text = "advance one stage" if spec.name == Action.FLAG_STATE_ADVANCED else spec.describe(state, p)
        if runs and runs[-1][0] == text:
            runs[-1][1] += 1
        else:
            runs.append([text, 1])
    return f"{len(steps)} changes of {_where(state)} together: " + "; ".join(
        f"{text} (x{count})" if count > 1 else str(text) for text, count in runs)


def _describe_stage(state: FlagState, params: Mapping[str, Any]) -> str:
    if params.get("stage") == "complete":
        return f"complete the migration of {_where(state)} (irreversible: legacy is no longer written)"
    return f"move the migration of {_where(state)} forward ({', '.join(sorted(params))})"


def _resolving(params: Mapping[str, Any]) -> str:
    return "every unresolved" if params.get("divergences") == "all" else str(_count(params, "divergences"))


def _where(state: FlagState) -> str:
    return state_key(state)


# -- flags, workloads, cohorts: their services lock again inside this transaction (a savepoint) ----


def _flag_effect(flag: Flag, params: Mapping[str, Any]) -> Effect:
    reshuffles = ("salt" in params and params["salt"] != flag.salt) or (
        "bucket_by" in params and str(params["bucket_by"] or "").strip() != flag.bucket_by)
    if not reshuffles:
        return NO_EFFECT
    return states_effect(flag.states.filter(enabled=True).select_related("environment", "flag__workload"))


def _flag_update(flag: Flag, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
                 **fields: Any) -> Flag:
    return flag_services.flag_update(actor=actor, key=flag.key, version=version, reason=reason, approval=approval,
                                     **fields)


def _live_effect(flag: Flag, params: Mapping[str, Any]) -> Effect:
    """Archiving or restoring moves the decisions wherever the flag is on."""
    return states_effect(flag.states.filter(enabled=True).select_related("environment", "flag__workload"))


def _archive(flag: Flag, *, actor: Actor, approval: Approval | None, version: int | None, reason: str) -> Flag:
    return stale.flag_archive(actor=actor, key=flag.key, version=version, reason=reason, approval=approval)


def _restore(flag: Flag, *, actor: Actor, approval: Approval | None, version: int | None, reason: str) -> Flag:
    return stale.flag_restore(actor=actor, key=flag.key, version=version, reason=reason, approval=approval)


def _workload_update(workload: Workload, *, actor: Actor, approval: Approval | None, version: int | None,
                     reason: str, **fields: Any) -> Workload:
    return workload_services.workload_update(actor=actor, key=workload.key, version=version, reason=reason,
                                             approval=approval, **fields)


def _cohort_effect(cohort: Cohort, params: Mapping[str, Any]) -> Effect:
    decisive = ("rules" in params and params["rules"] != cohort.rules) or (
        "match_on" in params and str(params["match_on"] or "").strip() != cohort.match_on)
    return cohort_effect(cohort) if decisive else NO_EFFECT


def _members_effect(cohort: Cohort, params: Mapping[str, Any]) -> Effect:
    return cohort_effect(cohort)


def _cohort_update(cohort: Cohort, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
                   **fields: Any) -> Cohort:
    return cohort_update(actor=actor, key=cohort.key, version=version, reason=reason, approval=approval, **fields)


def _members_add(cohort: Cohort, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
                 subjects: Any = (), kind: str = "include") -> dict[str, int]:
    return cohort_members_add(actor=actor, key=cohort.key, subjects=subjects, kind=kind, version=version,
                              reason=reason, approval=approval)


def _members_remove(cohort: Cohort, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
                    subjects: Any = ()) -> dict[str, int]:
    return cohort_members_remove(actor=actor, key=cohort.key, subjects=subjects, version=version, reason=reason,
                                 approval=approval)


def _members_change(cohort: Cohort, *, actor: Actor, approval: Approval | None, version: int | None, reason: str,
                    add: Any = (), remove: Any = (), kind: str = "include") -> dict[str, int]:
    return cohort_members_change(actor=actor, key=cohort.key, add=add, remove=remove, kind=kind, version=version,
                                 reason=reason, approval=approval)


def _count(params: Mapping[str, Any], name: str) -> int:
    value = params.get(name) or ()
    return len(value) if isinstance(value, list | tuple) else 0


STATE = TargetType.FLAG_STATE
ACTIONS: dict[Action, ActionSpec] = {spec.name: spec for spec in [
    ActionSpec(Action.FLAG_STATE_UPDATED, STATE,
               frozenset({"enabled", "percentage", "compare_percentage", "include_cohorts", "exclude_cohorts",
                          "overrides"}),
               _update, lambda s, p: f"change {', '.join(sorted(p))} of {_where(s)}"),
    ActionSpec(Action.FLAG_STATE_ADVANCED, STATE, frozenset({"force", "resume"}), _advance,
               lambda s, p: f"{'resume and ' if p.get('resume') else ''}advance {_where(s)} from stage {s.stage}"),
    ActionSpec(Action.FLAG_STATE_RESUMED, STATE, frozenset(), _resume, lambda s, p: f"resume {_where(s)}"),
    ActionSpec(Action.FLAG_STATE_RETIRED, STATE, frozenset(), _retire,
               lambda s, p: f"retire legacy for {_where(s)}"),
    ActionSpec(Action.FLAG_STATE_PLAN_SET, STATE, frozenset({"stages"}), _plan,
               lambda s, p: f"set the rollout plan of {_where(s)} ({_count(p, 'stages')} stages)"),
    ActionSpec(Action.FLAG_STATE_GUARDRAILS_SET, STATE, guardrails.LIMIT_FIELDS, _guardrails,
               lambda s, p: f"change the guardrails of {_where(s)}"),
    ActionSpec(Action.FLAG_STATE_GUARDRAIL_QUERIES_SET, STATE, frozenset({"queries"}), _queries,
               lambda s, p: f"set the Prometheus guardrail queries of {_where(s)} ({_count(p, 'queries')})"),
    ActionSpec(Action.FLAG_STATE_PROMOTED, STATE, promotion.PARAMS, _promote,
               lambda s, p: f"promote the plan, guardrails and targeting of {s.flag.key} from {p.get('source')} "
                            f"to {s.environment.key}"),
    ActionSpec(Action.FLAG_STATE_CONFIGURED, STATE, frozenset({"steps"}), _configured, _describe_configured,
               _configured_effect),
    ActionSpec(Action.FLAG_STATE_FEEDBACK_RULE_SET, STATE, feedback_services.RULE_FIELDS, _feedback_rule,
               lambda s, p: f"{'remove' if _removes_rule(p) else 'set'} the user-feedback rule of {_where(s)}"),
    ActionSpec(Action.MISMATCH_GROUP_KNOWN, STATE, frozenset({"group", "known"}), _known,
               lambda s, p: f"mark mismatch group {p.get('group')} of {_where(s)} as "
                            f"{'a known difference' if p.get('known', True) else 'unexplained'}"),
    ActionSpec(Action.FLAG_STATE_KILLED, STATE, frozenset(), _kill, lambda s, p: f"kill {_where(s)}"),
    ActionSpec(Action.FLAG_STATE_ROLLED_BACK, STATE, frozenset(), _rollback,
               lambda s, p: f"roll {_where(s)} back one stage"),
    ActionSpec(Action.FLAG_STATE_PAUSED, STATE, frozenset(), _pause, lambda s, p: f"pause {_where(s)}"),
    ActionSpec(Action.MIGRATION_STAGE_SET, STATE, frozenset({"stage", "splits", "cohorts", "max_divergences"}),
               _migration_stage,
               _describe_stage, migration_services.stage_change_effect),
    ActionSpec(Action.MIGRATION_ROLLED_BACK, STATE, frozenset(), _migration_rollback,
               lambda s, p: f"roll the migration of {_where(s)} back one stage"),
    ActionSpec(Action.MIGRATION_DIVERGENCES_RESOLVED, STATE, frozenset({"divergences"}), _divergences_resolved,
               lambda s, p: f"resolve {_resolving(p)} divergence(s) of {_where(s)}"),
    ActionSpec(Action.FLAG_UPDATED, TargetType.FLAG, frozenset({"description", "salt", "bucket_by"}),
               _flag_update, lambda f, p: f"change {', '.join(sorted(p))} of flag {f.key}", _flag_effect),
    ActionSpec(Action.FLAG_ARCHIVED, TargetType.FLAG, frozenset(), _archive,
               lambda f, p: f"archive flag {f.key} (it leaves every ruleset)", _live_effect),
    ActionSpec(Action.FLAG_RESTORED, TargetType.FLAG, frozenset(), _restore,
               lambda f, p: f"restore archived flag {f.key}", _live_effect),
    ActionSpec(Action.WORKLOAD_UPDATED, TargetType.WORKLOAD, frozenset(workload_services.EDITABLE),
               _workload_update, lambda w, p: f"change {', '.join(sorted(p))} of workload {w.key}",
               lambda w, p: workload_effect(w, dict(p))),
    ActionSpec(Action.COHORT_UPDATED, TargetType.COHORT, frozenset({"name", "description", "match_on", "rules"}),
               _cohort_update, lambda c, p: f"change {', '.join(sorted(p))} of cohort {c.key}", _cohort_effect),
    ActionSpec(Action.COHORT_MEMBERS_ADDED, TargetType.COHORT, frozenset({"subjects", "kind"}), _members_add,
               lambda c, p: f"add {_count(p, 'subjects')} subject(s) to cohort {c.key} ({p.get('kind', 'include')})",
               _members_effect),
    ActionSpec(Action.COHORT_MEMBERS_REMOVED, TargetType.COHORT, frozenset({"subjects"}), _members_remove,
               lambda c, p: f"remove {_count(p, 'subjects')} subject(s) from cohort {c.key}", _members_effect),
    ActionSpec(Action.COHORT_MEMBERS_CHANGED, TargetType.COHORT, frozenset({"add", "remove", "kind"}),
               _members_change,
               lambda c, p: f"add {_count(p, 'add')} and remove {_count(p, 'remove')} subject(s) of cohort {c.key}",
               _members_effect),
]}

#: Names stored by change requests before the action layer (and still accepted by the API).
ALIASES: dict[str, Action] = {
    "update": Action.FLAG_STATE_UPDATED, "advance": Action.FLAG_STATE_ADVANCED, "resume": Action.FLAG_STATE_RESUMED,
    "retire": Action.FLAG_STATE_RETIRED, "plan": Action.FLAG_STATE_PLAN_SET,
    "guardrails": Action.FLAG_STATE_GUARDRAILS_SET, "known_difference": Action.MISMATCH_GROUP_KNOWN,
    "kill": Action.FLAG_STATE_KILLED, "rollback": Action.FLAG_STATE_ROLLED_BACK, "pause": Action.FLAG_STATE_PAUSED,
}

ACTION_CHOICES = sorted([*map(str, ACTIONS), *ALIASES])


def spec_for(action: str, params: Any = UNSET) -> ActionSpec:
    """The spec of ``action`` (an ``Action`` value or an alias), with ``params`` checked against it."""
    name = ALIASES.get(action) or (Action(action) if action in Action._value2member_map_ else None)
    spec = ACTIONS.get(name) if name is not None else None
    if spec is None:
        raise ValidationFailed.field("action", f"unknown action '{action}'; known: {', '.join(ACTION_CHOICES)}")
    if params is not UNSET:
        if not isinstance(params, dict):
            raise ValidationFailed.field("params", "must be an object")
        unknown = sorted(set(params) - spec.params)
        if unknown:
            raise ValidationFailed.field(f"params.{unknown[0]}", f"is not a parameter of '{spec.name}'")
    return spec
