"""Plan and apply configuration files: what would change, what policy says about each change, then do it.

``plan`` compares the files (``actions.config.files``) with the installation (``actions.config.export.current``)
and lists, per object, whether it would be created, changed (with a field-level diff) or left alone, and for
each change the action that carries it and **the policy's ruling** — asked of the one action layer
(``actions.submit.preview`` for changes, ``rollout.policy.decide`` for creations and
deletions, which the create and delete services enforce themselves), never judged here.

``apply`` recomputes the plan, refuses it when any object's version differs from the one the caller's plan
read (409: the installation moved since; plan again) or when any change is refused, and then submits the
changes in order — environments, workloads, cohorts, flags, rollouts, deletions — each as **one action in
its own transaction** with its own audit event (the reason carries the commit id and file), exactly as the
UI or the API would submit it: applied, or a change request for a second person (linked in the result).
Why not one transaction for the whole apply: a change request is only worth anything once committed, and
every action is already all-or-nothing with the version it was planned against; the result names each
change done, waiting for approval, or not attempted after the first failure, so a re-run plan shows
exactly what is left.

Objects missing from the files are deleted only with ``delete``; a flag SDKs still evaluate (on in an
environment, or reported calls in the last day) only when also named in ``confirm_delete`` — it is then
killed everywhere before it is deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from actions.config.export import Current, current
from actions.config.files import ConfigInvalid, Desired, Problem, Where, check_files, read_configuration
from actions.submit import preview, submit
from audit.names import Action
from cohorts.services import MAX_MEMBERS_PER_REQUEST, cohort_create, cohort_delete
from common import clock
from common.actors import Actor
from common.errors import Conflict, Forbidden, ServiceError, ValidationFailed
from rollout.datamigration.rules import (
    STAGES,
    Config,
    backward_moves,
    clean_config,
    position,
    skipped_stages,
)
from rollout.datamigration.services import rollback_target
from rollout.models import Environment, Flag, FlagKind, FlagState, MetricMinute, MigrationStage, Workload
from rollout.policy import NO_EFFECT, Ruling, Verdict, decide
from rollout.services.environments import environment_create, environment_update
from rollout.services.flags import flag_create, flag_delete
from rollout.services.workloads import workload_create, workload_delete

ORDER = ("environment", "workload", "cohort", "flag", "flag_state", "delete")
EVALUATED_WITHIN = timedelta(days=1)
MAX_MIGRATION_STEPS = 30
GUARDRAIL_DEFAULTS: dict[str, Any] = {"max_error_rate": None, "max_error_rate_increase": None,
                                      "max_latency_p95_ratio": None, "max_mismatch_rate": None,
                                      "min_sample_size": 100, "window_seconds": 300, "action": "rollback"}


@dataclass
class Change:
    """One action a plan would submit (or one object it leaves alone: ``op`` ``unchanged``)."""

    kind: str  # environment | workload | cohort | flag | flag_state
    key: str  # the object's key; a flag state is "flag@environment"
    op: str  # create | update | delete | unchanged
    action: str = ""  # the audit action name that carries it
    params: dict[str, Any] = field(default_factory=dict)
    diff: dict[str, dict[str, Any]] = field(default_factory=dict)  # field → {before, after}
    ruling: str = ""  # apply | request | refuse
    why: str = ""
    version: Any = None  # the object's version the plan read (None: it does not exist yet)
    file: str = ""
    line: int = 0
    stage: str = "flag_state"  # the order of application (ORDER)
    together: int = 0  # > 1: one of that many consecutive changes of this flag state carried by one change request

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("stage")
        return out


@dataclass
class Plan:
    changes: list[Change]
    versions: dict[str, Any]

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.op != "unchanged"]

    def summary(self) -> dict[str, int]:
        counts = {"create": 0, "update": 0, "delete": 0, "unchanged": 0, "apply": 0, "request": 0, "refuse": 0,
                  "change_requests": 0}
        carried = 0  # changes still to come of the change request being counted
        for c in self.changes:
            counts[c.op] += 1
            if c.ruling:
                counts[c.ruling] += 1
            if c.ruling == Verdict.REQUEST and not carried:
                counts["change_requests"] += 1
                carried = max(c.together, 1)
            carried = max(carried - 1, 0)
        return counts

    def as_json(self) -> dict[str, Any]:
        return {"changes": [c.as_json() for c in self.changes], "summary": self.summary(),
                "versions": self.versions, "has_changes": bool(self.pending)}


def _ruled(change: Change, ruling: Ruling) -> Change:
    change.ruling = str(ruling.verdict)
    change.why = ruling.message
    return change


def _diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The fields the file gives that differ from the installation (a field the file leaves out is left alone)."""
    return {name: {"before": before.get(name), "after": value} for name, value in after.items()
            if name != "key" and _norm(before.get(name)) != _norm(value)}


def _norm(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


class _Planner:
    def __init__(self, *, actor: Actor, desired: Desired, now: Current, delete: bool, create_environments: bool,
                 confirm_delete: frozenset[str]):
        self.actor, self.desired, self.now = actor, desired, now
        self.delete, self.create_environments, self.confirm_delete = delete, create_environments, confirm_delete
        self.changes: list[Change] = []
        self.problems: list[Problem] = []
        self.new_envs: dict[str, Environment] = {}
        self.new_workloads: dict[str, Workload] = {}

    def change(self, kind: str, key: str, op: str, where: Where, **kw: Any) -> Change:
        change = Change(kind=kind, key=key, op=op, file=where.file, line=where.line,
                        version=self.now.versions.get(f"{kind}:{key}"), stage=kw.pop("stage", kind), **kw)
        self.changes.append(change)
        return change

    def problem(self, kind: str, key: str, path: tuple[str | int, ...], message: str) -> None:
        where, name = self.desired.locate(kind, key, *path)
        self.problems.append(Problem(where.file, where.line, name, message))

    def create_ruling(self, action: Action) -> Ruling:
        return decide(self.actor, action, NO_EFFECT)

    # -- environments -----------------------------------------------------------------------------

    def environments(self) -> None:
        for key, env in self.desired.environments.items():
            where = self.desired.located("environment", key)
            existing = self.now.environments.get(key)
            if existing is None:
                if not self.create_environments:
                    self.problem("environment", key, ("key",),
                                 f"environment '{key}' does not exist in this installation (files for another "
                                 "installation?); pass --create-environments to create it")
                    continue
                params = {k: v for k, v in env.items() if k != "key"}
                self.new_envs[key] = Environment(key=key, **params)
                self.change("environment", key, "create", where, action=Action.ENVIRONMENT_CREATED, params=params,
                            diff={k: {"before": None, "after": v} for k, v in params.items()})
                _ruled(self.changes[-1], self.create_ruling(Action.ENVIRONMENT_CREATED))
                continue
            diff = _diff(existing, env)
            if not diff:
                self.change("environment", key, "unchanged", where)
                continue
            change = self.change("environment", key, "update", where, action=Action.ENVIRONMENT_UPDATED,
                                 params={k: v["after"] for k, v in diff.items()}, diff=diff)
            _ruled(change, self.create_ruling(Action.ENVIRONMENT_UPDATED))

    def environment(self, key: str) -> Environment | None:
        if key in self.new_envs:
            return self.new_envs[key]
        return Environment.objects.filter(key=key).first()

    # -- workloads, cohorts, flags ----------------------------------------------------------------

    def workloads(self) -> None:
        for key, workload in self.desired.workloads.items():
            where = self.desired.located("workload", key)
            existing = self.now.workloads.get(key)
            if existing is None:
                params = {k: v for k, v in workload.items() if k != "key"}
                self.new_workloads[key] = Workload(key=key, **params)
                change = self.change("workload", key, "create", where, action=Action.WORKLOAD_CREATED, params=params,
                                     diff={k: {"before": None, "after": v} for k, v in params.items()})
                _ruled(change, self.create_ruling(Action.WORKLOAD_CREATED))
                continue
            diff = _diff(existing, workload)
            if not diff:
                self.change("workload", key, "unchanged", where)
                continue
            params = {k: v["after"] for k, v in diff.items()}
            change = self.change("workload", key, "update", where, action=Action.WORKLOAD_UPDATED, params=params,
                                 diff=diff)
            _ruled(change, preview(actor=self.actor, action=Action.WORKLOAD_UPDATED, target=key, params=params))

    def cohorts(self) -> None:
        for key, cohort in self.desired.cohorts.items():
            where = self.desired.located("cohort", key)
            members = cohort.get("members")
            if members is not None and set(members.get("include", [])) & set(members.get("exclude", [])):
                both = sorted(set(members["include"]) & set(members["exclude"]))[0]
                self.problem("cohort", key, ("members",), f"subject '{both}' is both included and excluded")
                continue
            fields = {k: v for k, v in cohort.items() if k not in {"key", "members"}}
            existing = self.now.cohorts.get(key)
            if existing is None:
                change = self.change("cohort", key, "create", where, action=Action.COHORT_CREATED, params=fields,
                                     diff={k: {"before": None, "after": v} for k, v in fields.items()})
                _ruled(change, self.create_ruling(Action.COHORT_CREATED))
                if members is not None:
                    self.members(key, where, {"include": [], "exclude": []}, members, new=True)
                continue
            diff = _diff(existing, fields)
            if diff:
                params = {k: v["after"] for k, v in diff.items()}
                change = self.change("cohort", key, "update", where, action=Action.COHORT_UPDATED, params=params,
                                     diff=diff)
                _ruled(change, preview(actor=self.actor, action=Action.COHORT_UPDATED, target=key, params=params))
            moved = members is not None and self.members(key, where, existing["members"], members, new=False)
            if not diff and not moved:
                self.change("cohort", key, "unchanged", where)

    def members(self, key: str, where: Where, before: Mapping[str, list[str]], after: Mapping[str, list[str]],
                *, new: bool) -> bool:
        had_inc, had_exc = set(before.get("include", [])), set(before.get("exclude", []))
        inc, exc = set(after.get("include", had_inc)), set(after.get("exclude", had_exc))
        steps = [("include", sorted(inc - had_inc), sorted((had_inc | had_exc) - (inc | exc))),
                 ("exclude", sorted(exc - had_exc), [])]
        moved = False
        for kind, add, remove in steps:
            for start in range(0, max(len(add), len(remove)), MAX_MEMBERS_PER_REQUEST // 2):
                chunk_add = add[start:start + MAX_MEMBERS_PER_REQUEST // 2]
                chunk_remove = remove[start:start + MAX_MEMBERS_PER_REQUEST // 2]
                params = {"add": chunk_add, "remove": chunk_remove, "kind": kind}
                diff = {f"members.{kind}": {"before": f"{len(had_inc if kind == 'include' else had_exc)} subjects",
                                            "after": f"+{len(chunk_add)} -{len(chunk_remove)}"}}
                change = self.change("cohort", key, "update", where, action=Action.COHORT_MEMBERS_CHANGED,
                                     params=params, diff=diff, stage="cohort_members")
                if new:
                    _ruled(change, Ruling(Verdict.APPLY))  # a cohort no flag uses yet moves no decision
                else:
                    _ruled(change, preview(actor=self.actor, action=Action.COHORT_MEMBERS_CHANGED, target=key,
                                           params=params))
                moved = True
        return moved

    def workload(self, key: str) -> Workload | None:
        return self.new_workloads.get(key) or Workload.objects.filter(key=key).first()

    def flags(self) -> None:
        cohorts = set(self.now.cohorts) | set(self.desired.cohorts)
        for key, flag in self.desired.flags.items():
            where = self.desired.located("flag", key)
            workload = self.workload(flag["workload"])
            if workload is None:
                self.problem("flag", key, ("workload",),
                             f"workload '{flag['workload']}' is neither in the files nor in the installation")
                continue
            fields = {k: v for k, v in flag.items() if k not in {"key", "environments"}}
            existing = self.now.flags.get(key)
            if existing is None:
                change = self.change("flag", key, "create", where, action=Action.FLAG_CREATED, params=fields,
                                     diff={k: {"before": None, "after": v} for k, v in fields.items()})
                _ruled(change, self.create_ruling(Action.FLAG_CREATED))
                flag_obj = Flag(key=key, workload=workload, salt=fields.get("salt") or key,
                                bucket_by=fields.get("bucket_by", ""), kind=fields.get("kind", FlagKind.RELEASE))
            else:
                if fields.get("workload", existing["workload"]) != existing["workload"]:
                    self.problem("flag", key, ("workload",),
                                 f"flag '{key}' belongs to workload '{existing['workload']}'; a flag does not move "
                                 "between workloads")
                    continue
                fields.pop("workload", None)
                if fields.pop("kind", "release") != existing.get("kind", "release"):
                    self.problem("flag", key, ("kind",),
                                 f"flag '{key}' is a {existing.get('kind', 'release')} flag; a flag's kind is set "
                                 "when it is created and does not change")
                    continue
                diff = _diff(existing, fields)
                if diff:
                    params = {k: v["after"] for k, v in diff.items()}
                    change = self.change("flag", key, "update", where, action=Action.FLAG_UPDATED, params=params,
                                         diff=diff)
                    _ruled(change, preview(actor=self.actor, action=Action.FLAG_UPDATED, target=key, params=params))
                flag_obj = Flag.objects.select_related("workload").get(key=key)
            states_changed = False
            for env_key, state in (flag.get("environments") or {}).items():
                unknown = False
                for listed in ("include_cohorts", "exclude_cohorts"):
                    for n, cohort in enumerate(state.get(listed, [])):
                        if cohort not in cohorts:
                            unknown = True
                            self.state_problem(key, env_key, (listed, n),
                                               f"cohort '{cohort}' is neither in the files nor in the installation")
                for index, stage in enumerate(state.get("plan") or []):
                    for n, cohort in enumerate(stage.get("include_cohorts", [])):
                        if cohort not in cohorts:
                            unknown = True
                            self.state_problem(key, env_key, ("plan", index, "include_cohorts", n),
                                               f"cohort '{cohort}' is neither in the files nor in the installation")
                for n, entry in enumerate((state.get("migration") or {}).get("cohorts", [])):
                    if entry["cohort"] not in cohorts:
                        unknown = True
                        self.state_problem(key, env_key, ("migration", "cohorts", n, "cohort"),
                                           f"cohort '{entry['cohort']}' is neither in the files nor in the "
                                           "installation")
                env = self.environment(env_key)
                if env is None:
                    self.state_problem(key, env_key, (),
                                       f"environment '{env_key}' does not exist in this installation (files for "
                                       "another installation?)")
                    continue
                if unknown:
                    continue
                before = (existing or {}).get("environments", {}).get(env_key)
                states_changed |= self.state(flag_obj, env, state, before, where)
            if existing is not None and not states_changed and not any(
                    c.kind == "flag" and c.key == key for c in self.changes):
                self.change("flag", key, "unchanged", where)

    def at(self, flag: str, env: str, *path: str | int) -> tuple[Where, str]:
        """File, line and field path of a field inside one flag's block for one environment."""
        return self.desired.locate("flag", flag, "environments", env, *path)

    def state_problem(self, flag: str, env: str, path: tuple[str | int, ...], message: str) -> None:
        where, name = self.at(flag, env, *path)
        self.problems.append(Problem(where.file, where.line, name, message))

    def state(self, flag: Flag, env: Environment, wanted: Mapping[str, Any], before: Mapping[str, Any] | None,
              where: Where) -> bool:
        """The changes of one flag state, in the order they are made on the row: rollbacks (a file moving the
        rollout back), plan, guardrails, Prometheus queries, advances (forward), pause or resume, the split
        and targeting, retirement. Each is compared with what the row holds *after* the steps before it (an
        advance sets the stage's split, so a file at that stage asks no further update)."""
        key = f"{flag.key}@{env.key}"
        before = before or {"enabled": False, "retired": False, "percentage": 0.0, "compare_percentage": 0.0,
                            "include_cohorts": [], "exclude_cohorts": [], "overrides": {}, "plan": [],
                            "guardrails": None, "prometheus": []}
        progress = self.now.progress.get(key, {"stage": 0, "paused": False})
        exists = flag.pk is not None and env.pk is not None
        obj: Any = None if exists else FlagState(flag=flag, environment=env)
        steps: list[Change] = []

        def step(action: Action, params: dict[str, Any], diff: dict[str, Any], at: tuple[str | int, ...]) -> Change:
            place, _name = self.at(flag.key, env.key, *at)
            change = self.change("flag_state", key, "update", place, action=action, params=params, diff=diff)
            if exists:
                _ruled(change, preview(actor=self.actor, action=change.action, target=key, params=change.params))
            else:
                _ruled(change, preview(actor=self.actor, action=change.action, obj=obj, params=change.params))
            steps.append(change)
            return change

        wanted_sorted = {k: (sorted(v) if k in {"include_cohorts", "exclude_cohorts"} else v)
                         for k, v in wanted.items() if k not in {"progress", "migration"}}
        diff = _diff(before, wanted_sorted)
        old_plan: list[dict[str, Any]] = list(before["plan"])
        new_plan = [_stage(s) for s in wanted["plan"]] if wanted.get("plan") else old_plan
        plan_changes = "plan" in diff and bool(new_plan) and _norm(new_plan) != _norm(old_plan)
        if "plan" in diff and not wanted["plan"]:
            self.state_problem(flag.key, env.key, ("plan",),
                               "a plan cannot be removed from files (a plan has 1 to 20 stages)")

        # where the rollout should stand: progress.stage names a stage of the plan the file ends with
        stage_now, paused_now = int(progress["stage"]), bool(progress["paused"])
        target, want_paused = stage_now, None
        wanted_progress = wanted.get("progress")
        if wanted_progress is not None:
            if "stage" in wanted_progress:
                name = wanted_progress["stage"]
                names = [s["name"] for s in new_plan]
                if name is None:
                    target = 0
                elif name in names:
                    target = names.index(name) + 1
                else:
                    self.state_problem(flag.key, env.key, ("progress", "stage"),
                                       f"'{name}' is not a stage of the plan "
                                       f"({', '.join(names) if names else 'the flag state has no plan'})")
            want_paused = wanted_progress.get("paused")

        def stage_name(plan: list[dict[str, Any]], position: int) -> str | None:
            return plan[position - 1]["name"] if 0 < position <= len(plan) else None

        expected = {k: before[k] for k in ("enabled", "retired", "percentage", "compare_percentage",
                                           "include_cohorts", "exclude_cohorts", "overrides")}

        def at_stage(plan: list[dict[str, Any]], position: int, *, enabled: bool) -> None:
            if position == 0:
                expected.update(enabled=False, retired=False, percentage=0.0, compare_percentage=0.0,
                                include_cohorts=[])
                return
            st = plan[position - 1]
            expected.update(enabled=enabled, retired=st["retires_legacy"], percentage=float(st["percentage"]),
                            compare_percentage=float(st["compare_percentage"]),
                            include_cohorts=sorted(st["include_cohorts"]))

        stage, paused = stage_now, paused_now
        # 1. back: a rollback per stage (it never waits; it pauses the rollout, as the API's rollback does)
        back_to = 0 if plan_changes and target == 0 else target
        if back_to < stage and not (plan_changes and target > 0):
            for position in range(stage, back_to, -1):
                step(Action.FLAG_STATE_ROLLED_BACK, {}, {"progress.stage": {
                    "before": stage_name(old_plan, position), "after": stage_name(old_plan, position - 1)}},
                     ("progress", "stage"))
            at_stage(old_plan, back_to, enabled=bool(expected["enabled"]))
            stage, paused = back_to, True
        # 2. the plan (only while it has not started), guardrails, Prometheus queries
        if plan_changes:
            change = step(Action.FLAG_STATE_PLAN_SET, {"stages": new_plan}, {"plan": diff["plan"]}, ("plan",))
            if stage:
                change.ruling, change.why = str(Verdict.REFUSE), (
                    f"the plan has started (stage {stage}); roll it back to the start to edit it "
                    "(progress.stage: null in the same file does)")
        if "guardrails" in diff:
            limits = wanted["guardrails"]
            if limits is None:
                self.state_problem(flag.key, env.key, ("guardrails",),
                                   "guardrails cannot be removed from files; set each limit to null instead")
            else:
                full = {**GUARDRAIL_DEFAULTS, **(before["guardrails"] or {}), **limits}
                if _norm(full) != _norm(before["guardrails"]):
                    step(Action.FLAG_STATE_GUARDRAILS_SET, dict(limits),
                         {"guardrails": {"before": before["guardrails"], "after": full}}, ("guardrails",))
        if "prometheus" in diff:
            step(Action.FLAG_STATE_GUARDRAIL_QUERIES_SET, {"queries": [dict(q) for q in wanted["prometheus"]]},
                 {"prometheus": diff["prometheus"]}, ("prometheus",))
        # 3. forward: an advance per stage, with the policy of the API's advance
        if target > stage:
            killed = stage > 0 and not expected["enabled"]
            for position in range(stage, target):
                params = {"resume": True} if paused and position == stage else {}
                change = step(Action.FLAG_STATE_ADVANCED, params, {"progress.stage": {
                    "before": stage_name(new_plan, position), "after": stage_name(new_plan, position + 1)}},
                              ("progress", "stage"))
                if killed and change.ruling != Verdict.REFUSE:
                    change.ruling, change.why = str(Verdict.REFUSE), (
                        f"'{key}' is killed at stage {stage}: switch it back on (turnout resume) before advancing "
                        "it from files")
            at_stage(new_plan, target, enabled=True)
            stage, paused = target, False
        # 4. pause or resume
        if want_paused is not None and want_paused != paused:
            if want_paused:
                step(Action.FLAG_STATE_PAUSED, {}, {"progress.paused": {"before": False, "after": True}},
                     ("progress", "paused"))
            else:
                step(Action.FLAG_STATE_RESUMED, {}, {"progress.paused": {"before": True, "after": False}},
                     ("progress", "paused"))
                expected["enabled"] = True
        # 5. a migration flag's data-migration stages: back by rollbacks, forward one allowed step at a time
        if wanted.get("migration") is not None:
            self.migration(flag, env, wanted["migration"], step, expected)
        # 6. the split and targeting, then retirement, compared with the row after the steps above
        rest = _diff(expected, {k: v for k, v in wanted_sorted.items()
                                if k not in {"plan", "guardrails", "prometheus"}})
        simple = {k: v for k, v in rest.items() if k != "retired"}
        retire = rest.get("retired")
        if retire is not None and simple.get("compare_percentage") and wanted.get("retired"):
            simple.pop("compare_percentage")  # retiring legacy ends the comparison by itself
        if simple:
            step(Action.FLAG_STATE_UPDATED, {k: v["after"] for k, v in simple.items()}, simple, (next(iter(simple)),))
        if retire is not None:
            if not retire["after"]:
                self.state_problem(flag.key, env.key, ("retired",),
                                   "legacy, once retired, is not brought back from files")
            else:
                step(Action.FLAG_STATE_RETIRED, {}, {"retired": retire}, ("retired",))
        self.together(key, steps, obj if not exists else None)
        if not steps and self.now.flags.get(flag.key) is not None:
            self.change("flag_state", key, "unchanged", where)
        return bool(steps)

    def migration(self, flag: Flag, env: Environment, wanted: Mapping[str, Any], step: Any,
                  expected: dict[str, Any]) -> None:
        """The steps from the migration as it stands to the file's ``migration`` block, each an action the API
        offers: ``migration.rolled_back`` (the furthest tier one stage back) while the file has anyone at an
        earlier stage than now, then ``migration.stage_set`` moves that never skip a stage (the divergence
        limit rides on the first). Policy is the action layer's, step by step, as for the API."""
        key = f"{flag.key}@{env.key}"
        if flag.kind != FlagKind.MIGRATION:
            self.state_problem(flag.key, env.key, ("migration",),
                               f"flag '{flag.key}' is a {flag.kind} flag: only a migration flag has data-migration "
                               "stages")
            return
        known = set(self.now.cohorts) | set(self.desired.cohorts)
        try:
            new = clean_config(stage=wanted["stage"], splits=list(wanted.get("splits", [])),
                               cohorts=list(wanted.get("cohorts", [])), known_cohorts=known)
        except ValidationFailed as exc:
            name, messages = next(iter(exc.fields.items()))
            self.state_problem(flag.key, env.key, ("migration", *_path(name)), messages[0])
            return
        now_block = self.now.migrations.get(key, {"stage": str(MigrationStage.OFF)})
        old = Config(now_block["stage"], tuple(now_block.get("splits", ())), tuple(now_block.get("cohorts", ())))
        old_limit, new_limit = now_block.get("max_divergences"), wanted.get("max_divergences")
        if new == old and old_limit == new_limit:
            return
        if old.stage == MigrationStage.COMPLETE:
            self.state_problem(flag.key, env.key, ("migration", "stage"),
                               f"the migration of '{key}' is complete: 'complete' is irreversible (legacy is no "
                               "longer written) and no file can undo or change it; put the block back to "
                               "{stage: complete}")
            return
        cur, moves = old, 0
        while backward_moves(cur, new) and moves < MAX_MIGRATION_STEPS:
            back = rollback_target(cur)
            step(Action.MIGRATION_ROLLED_BACK, {}, {"migration": {"before": cur.rule(), "after": back.rule()}},
                 ("migration", "stage"))
            cur, moves = back, moves + 1
        limit_moved = old_limit != new_limit
        while cur != new and moves < MAX_MIGRATION_STEPS:
            nxt = _forward_step(cur, new)
            if nxt is None:
                self.state_problem(flag.key, env.key, ("migration",),
                                   f"'{key}' cannot move from {cur.rule()} to {new.rule()} one allowed step at a "
                                   "time; apply the move in smaller steps")
                return
            params: dict[str, Any] = {"stage": nxt.stage, "splits": list(nxt.splits), "cohorts": list(nxt.cohorts)}
            diff: dict[str, Any] = {"migration": {"before": cur.rule(), "after": nxt.rule()}}
            if limit_moved:
                params["max_divergences"] = new_limit
                diff["migration.max_divergences"] = {"before": old_limit, "after": new_limit}
                limit_moved = False
            step(Action.MIGRATION_STAGE_SET, params, diff, ("migration", "stage"))
            if cur.stage == MigrationStage.OFF and nxt.stage != MigrationStage.OFF:
                expected["enabled"] = True  # a migration under way is switched on, as the API does
            cur, moves = nxt, moves + 1
        if cur != new:
            self.state_problem(flag.key, env.key, ("migration",),
                               f"'{key}' needs more than {MAX_MIGRATION_STEPS} steps to reach the file's migration; "
                               "apply the move in smaller steps")
            return
        if limit_moved:
            step(Action.MIGRATION_STAGE_SET, {"max_divergences": new_limit},
                 {"migration.max_divergences": {"before": old_limit, "after": new_limit}},
                 ("migration", "max_divergences"))

    def together(self, key: str, steps: list[Change], obj: Any) -> None:
        """Several changes of one flag state, once one of them needs a second person, become **one** change
        request (``flag_state.configured``, its steps in order on one row): separate requests would each be
        based on the same version, so approving one would make the others stale. The changes before the
        first that waits apply at once, as they would alone."""
        first = next((i for i, c in enumerate(steps) if c.ruling == Verdict.REQUEST), None)
        if first is None or len(steps) - first < 2 or any(c.ruling == Verdict.REFUSE for c in steps[first:]):
            return
        group = steps[first:]
        params = {"steps": [{"action": str(c.action), "params": c.params} for c in group]}
        if obj is None:
            ruling = preview(actor=self.actor, action=Action.FLAG_STATE_CONFIGURED, target=key, params=params)
        else:
            ruling = preview(actor=self.actor, action=Action.FLAG_STATE_CONFIGURED, obj=obj, params=params)
        for change in group:
            change.together = len(group)
            if ruling.verdict is Verdict.REFUSE or change.ruling != Verdict.REFUSE:
                change.ruling = str(ruling.verdict)
            change.why = f"{ruling.message or change.why} (one change request for these {len(group)} changes " \
                         f"of {key})"


    # -- deletions --------------------------------------------------------------------------------

    def deletions(self) -> None:
        if not self.delete:
            return
        nowhere = Where("", 0)
        since = clock.now() - EVALUATED_WITHIN
        for key, flag in self.now.flags.items():
            if key in self.desired.flags:
                continue
            live = sorted(env for env, s in flag["environments"].items() if s["enabled"])
            called = sorted(set(MetricMinute.objects.filter(flag_key=key, minute__gte=since, calls__gt=0)
                                .values_list("environment__key", flat=True)))
            change = self.change("flag", key, "delete", nowhere, action=Action.FLAG_DELETED, stage="delete",
                                 params={"kill": live})
            _ruled(change, decide(self.actor, Action.FLAG_DELETED))
            if (live or called) and key not in self.confirm_delete and change.ruling != Verdict.REFUSE:
                where_ = ", ".join(sorted({*live, *called}))
                change.ruling, change.why = str(Verdict.REFUSE), (
                    f"SDKs still evaluate flag '{key}' ({where_}): confirm its deletion by naming it "
                    f"(--confirm-delete {key}); it is then killed everywhere first")
        used_by_kept = {c for f in self.desired.flags.values() for s in (f.get("environments") or {}).values()
                        for c in (*s.get("include_cohorts", []), *s.get("exclude_cohorts", []))}
        for key in self.now.cohorts:
            if key in self.desired.cohorts:
                continue
            change = self.change("cohort", key, "delete", nowhere, action=Action.COHORT_DELETED, stage="delete")
            _ruled(change, decide(self.actor, Action.COHORT_DELETED))
            if key in used_by_kept:
                change.ruling, change.why = str(Verdict.REFUSE), f"cohort '{key}' is still used by a flag in the files"
        kept_workloads = {f["workload"] for f in self.desired.flags.values()}
        for key in self.now.workloads:
            if key in self.desired.workloads:
                continue
            change = self.change("workload", key, "delete", nowhere, action=Action.WORKLOAD_DELETED, stage="delete")
            _ruled(change, decide(self.actor, Action.WORKLOAD_DELETED))
            if key in kept_workloads:
                change.ruling, change.why = (str(Verdict.REFUSE),
                                             f"workload '{key}' still has flags in the files")

    def run(self) -> Plan:
        self.environments()
        self.workloads()
        self.cohorts()
        self.flags()
        self.deletions()
        if self.problems:
            raise ConfigInvalid(self.problems)
        order = {name: i for i, name in enumerate(("environment", "workload", "cohort", "cohort_members", "flag",
                                                   "flag_state", "delete"))}
        changes = sorted(self.changes, key=lambda c: order[c.stage])  # stable: file order within a stage
        return Plan(changes=changes, versions=dict(sorted(self.now.versions.items())))


def _path(name: str) -> tuple[str | int, ...]:
    """``splits.1.percentage`` as a path into the block."""
    return tuple(int(part) if part.isdigit() else part for part in name.split(".") if part)


def _forward_step(cur: Config, new: Config) -> Config | None:
    """The next ``migration.stage_set`` from ``cur`` towards ``new`` (nobody behind ``cur``): ``new`` itself
    when it skips no stage, else everyone ``new`` puts further brought one stage beyond the furthest tier
    (the base one stage on). None when no such step exists."""
    if not skipped_stages(cur, new):
        return new
    limit = position(cur.furthest) + 1
    base = STAGES[min(position(new.stage), position(cur.stage) + 1)]
    last = min(limit, position(MigrationStage.RAMPDOWN))  # splits never name 'complete'
    splits = []
    for index in range(position(base) + 1, last + 1):
        share = max(new.reach(STAGES[index]), cur.reach(STAGES[index]))
        beyond = max(new.reach(STAGES[index + 1]), cur.reach(STAGES[index + 1])) if index < last else 0.0
        if share > beyond:
            splits.append({"stage": STAGES[index], "percentage": share})
    placed = {c["cohort"]: c["stage"] for c in cur.cohorts}
    cohorts = [{"cohort": c["cohort"], "stage": STAGES[min(position(c["stage"]), limit)]} for c in new.cohorts]
    cohorts += [{"cohort": name, "stage": stage} for name, stage in placed.items()
                if name not in {c["cohort"] for c in new.cohorts} and position(stage) > position(base)]
    try:
        nxt = clean_config(stage=base, splits=splits, cohorts=cohorts, known_cohorts=[c["cohort"] for c in cohorts])
    except ValidationFailed:
        return None
    if nxt == cur or backward_moves(cur, nxt) or skipped_stages(cur, nxt):
        return None
    return nxt


def _stage(stage: Mapping[str, Any]) -> dict[str, Any]:
    """A stage as the files give it, with the defaults the plan service fills in (for comparison)."""
    out = {"name": stage["name"], "percentage": stage.get("percentage", 0),
           "compare_percentage": stage.get("compare_percentage", 0),
           "include_cohorts": sorted(stage.get("include_cohorts", [])),
           "min_soak_seconds": stage.get("min_soak_seconds", 0), "gate": stage.get("gate", "manual"),
           "scheduled_at": stage.get("scheduled_at"), "retires_legacy": stage.get("retires_legacy", False)}
    if out["retires_legacy"]:
        out["compare_percentage"] = 0
    return out


def plan(*, actor: Actor, files: Any, delete: bool = False, create_environments: bool = False,
         confirm_delete: Any = ()) -> Plan:
    """What applying ``files`` would do now, with the policy's ruling for each change. Reads only."""
    desired = read_configuration(check_files(files))
    confirm = _confirm(confirm_delete)
    return _Planner(actor=actor, desired=desired, now=current(), delete=delete,
                    create_environments=create_environments, confirm_delete=confirm).run()


def _confirm(value: Any) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, list | tuple | frozenset | set) or not all(
            isinstance(v, str) for v in value):
        raise ValidationFailed.field("confirm_delete", "must be a list of flag keys")
    return frozenset(value)


# --- apply ---------------------------------------------------------------------------------------------


@dataclass
class Context:
    """Where the files came from, for the audit events' reason."""

    commit: str = ""
    path: str = ""
    reason: str = ""

    def reason_for(self, change: Change) -> str:
        origin = "/".join(p.strip("/") for p in (self.path, change.file) if p) or "configuration"
        if change.line:
            origin += f":{change.line}"
        parts = [self.reason.strip(), f"turnout apply of {origin}" + (f" at commit {self.commit}" if self.commit
                                                                       else "")]
        return "; ".join(p for p in parts if p)[:1000]


def _stale(expected: Any, plan_now: Plan) -> list[str]:
    if not isinstance(expected, Mapping):
        raise ValidationFailed.field("versions", "must be the `versions` object of the plan being applied")
    keys = set(expected) | {f"{c.kind}:{c.key}" for c in plan_now.pending}
    return sorted(k for k in keys if expected.get(k) != plan_now.versions.get(k))


def apply(*, actor: Actor, files: Any, versions: Any, delete: bool = False, create_environments: bool = False,
          confirm_delete: Any = (), context: Context | None = None) -> dict[str, Any]:
    """Carry out the plan of ``files`` read at ``versions`` (the plan's own ``versions``): refused whole when
    the installation moved since (409) or a change is refused (403); otherwise each change is submitted in
    order, one action and one transaction each, and the result says what became of every one."""
    context = context or Context()
    planned = plan(actor=actor, files=files, delete=delete, create_environments=create_environments,
                   confirm_delete=confirm_delete)
    stale = _stale(versions, planned)
    if stale:
        raise Conflict(f"the installation changed since the plan was made ({', '.join(stale[:10])}); nothing was "
                       "applied: plan again", fields={"versions": [f"{k} moved" for k in stale[:50]]})
    refused = [c for c in planned.pending if c.ruling == Verdict.REFUSE]
    if refused:
        first = refused[0]
        raise Forbidden(f"{len(refused)} change(s) refused, nothing was applied; first: {first.action} of "
                        f"{first.key}: {first.why}")
    results: list[dict[str, Any]] = []
    versions_now: dict[str, Any] = dict(planned.versions)
    failed = False
    pending = planned.pending
    index = 0
    while index < len(pending):
        group = pending[index:index + max(pending[index].together, 1)]
        index += len(group)
        entries = [{**change.as_json(), "result": "not_attempted"} for change in group]
        results.extend(entries)
        if failed:
            continue
        try:
            outcome = _perform(actor, group[0], versions_now, context) if len(group) == 1 else _together(
                actor, group, versions_now, context)
        except ServiceError as exc:
            failed = True
            outcome = {"result": "failed", "error": exc.as_body()["error"]}
        for entry in entries:
            entry.update(outcome)
    counts: dict[str, int] = {}
    for entry in results:
        counts[entry["result"]] = counts.get(entry["result"], 0) + 1
    return {"results": results, "summary": counts, "complete": not failed,
            "origin": {"commit": context.commit, "path": context.path}}


def _submitted(outcome: Any, versions: dict[str, Any], vkey: str) -> dict[str, Any]:
    if outcome.change_request is not None:
        cr = outcome.change_request
        return {"result": "change_request", "change_request": {
            "id": cr.pk, "summary": cr.summary, "url": f"/api/v1/change-requests/{cr.pk}/",
            "page": f"/changes/{cr.pk}/"}}
    versions[vkey] = getattr(outcome.target, "version", versions.get(vkey))
    return {"result": "applied"}


def _together(actor: Actor, group: list[Change], versions: dict[str, Any], context: Context) -> dict[str, Any]:
    """Consecutive changes of one flag state carried by one ``flag_state.configured`` (one change request)."""
    first = group[0]
    vkey = f"{first.kind}:{first.key}"
    steps = [{"action": str(c.action), "params": c.params} for c in group]
    outcome = submit(actor=actor, action=Action.FLAG_STATE_CONFIGURED, target=first.key, params={"steps": steps},
                     version=versions.get(vkey), reason=context.reason_for(first))
    return _submitted(outcome, versions, vkey)


def _perform(actor: Actor, change: Change, versions: dict[str, Any], context: Context) -> dict[str, Any]:
    reason = context.reason_for(change)
    vkey = f"{change.kind}:{change.key}"
    p = change.params
    if change.op == "create":
        if change.kind == "environment":
            environment_create(actor=actor, key=change.key, reason=reason, **p)
        elif change.kind == "workload":
            workload_create(actor=actor, key=change.key, reason=reason, **p)
        elif change.kind == "cohort":
            cohort_create(actor=actor, key=change.key, reason=reason, **p)
            versions[vkey] = 1
        elif change.kind == "flag":
            flag_create(actor=actor, key=change.key, reason=reason, **p)
            versions[vkey] = 1
            for state in FlagState.objects.filter(flag__key=change.key).select_related("environment"):
                versions[f"flag_state:{change.key}@{state.environment.key}"] = state.version
        return {"result": "applied"}
    if change.op == "delete":
        return _delete(actor, change, reason)
    if change.kind == "environment":
        environment_update(actor=actor, key=change.key, reason=reason, **p)
        return {"result": "applied"}
    outcome = submit(actor=actor, action=change.action, target=change.key, params=p, version=versions.get(vkey),
                     reason=reason)
    return _submitted(outcome, versions, vkey)


def _delete(actor: Actor, change: Change, reason: str) -> dict[str, Any]:
    if change.kind == "flag":
        for env in change.params.get("kill", []):
            state = FlagState.objects.filter(flag__key=change.key, environment__key=env, enabled=True).first()
            if state is not None:
                submit(actor=actor, action=Action.FLAG_STATE_KILLED, target=f"{change.key}@{env}", reason=reason)
        flag_delete(actor=actor, key=change.key, reason=reason)
    elif change.kind == "cohort":
        cohort_delete(actor=actor, key=change.key, version=change.version, reason=reason)
    elif change.kind == "workload":
        workload_delete(actor=actor, key=change.key, version=change.version, reason=reason)
    return {"result": "applied"}

