"""The installation as configuration files: what ``turnout export`` writes and what a plan compares against.

``current()`` reads every environment, workload, cohort (with its member lists) and flag (with its rollout in
each environment: split, cohorts, overrides, plan, guardrails) into the shape the files use; ``export_files``
lays it out as a repository would keep it::

    environments.yaml   workloads.yaml   cohorts.yaml   cohorts/<key>.include.csv   flags/<key>.yaml

Rollout *progress* — the stage a plan stands on, a pause — is written as a state's optional ``progress``
block (``{stage: <stage name>, paused: true}``) once a plan has started or the rollout is paused, so an
export applied to an empty installation stands where the original stands. Applying a file whose
``progress`` differs moves the rollout through the action layer, as the API's ``advance``, ``rollback``,
``pause`` and ``resume`` do — with the same policy (an advance in an environment that requires approval
is a change request; a rollback never waits). A file without the block leaves progress alone.

A migration flag's data-migration stages (docs/migrations.md) are a state's optional ``migration`` block
(``{stage, splits, cohorts, max_divergences}``, as the API's ``migration.stage_set`` takes them), written once
the migration has left ``off`` or holds splits, cohorts or a divergence limit. Applying a different block
moves the migration one allowed step at a time: forward by ``migration.stage_set``, back by
``migration.rolled_back`` — with the API's policy; ``complete`` is irreversible.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from actions.config.files import FORMAT
from cohorts.models import Cohort, CohortMember, MemberKind
from rollout.models import (
    Environment,
    Flag,
    FlagKind,
    FlagState,
    Guardrail,
    GuardrailQuery,
    MigrationStage,
    MigrationState,
    RolloutStage,
    Workload,
)
from rollout.snapshots import environment_snapshot, guardrail_snapshot, stage_snapshot, workload_snapshot

WORKLOAD_FIELDS = ("key", "name", "description", "owner", "risk", "phase", "reversibility", "legacy_system",
                   "parallel_system")
STATE_FIELDS = ("enabled", "retired", "percentage", "compare_percentage", "include_cohorts", "exclude_cohorts",
                "overrides", "plan", "guardrails", "prometheus")


@dataclass
class Current:
    """The installation in the files' shape, with each object's version (for optimistic concurrency) and the
    flag states' progress (stage, paused)."""

    environments: dict[str, dict[str, Any]] = field(default_factory=dict)
    workloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    cohorts: dict[str, dict[str, Any]] = field(default_factory=dict)
    flags: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    migrations: dict[str, dict[str, Any]] = field(default_factory=dict)  # "flag@env" of migration flags

    def section(self, name: str) -> dict[str, dict[str, Any]]:
        section: dict[str, dict[str, Any]] = getattr(self, name)
        return section


def environment_version(snapshot: dict[str, Any]) -> str:
    """Environments carry no version column: their fields stand in for one."""
    return "{name}|{order}|{requires_approval}|{description}".format(**snapshot)


def _members(cohort_ids: list[int]) -> dict[int, dict[str, list[str]]]:
    out: dict[int, dict[str, list[str]]] = {pk: {"include": [], "exclude": []} for pk in cohort_ids}
    rows = CohortMember.objects.order_by("cohort_id", "kind", "subject").values_list("cohort_id", "kind", "subject")
    for cohort_id, kind, subject in rows.iterator(chunk_size=10_000):
        out[cohort_id]["include" if kind == MemberKind.INCLUDE else "exclude"].append(subject)
    return out


def _plan(stages: list[RolloutStage]) -> list[dict[str, Any]]:
    plan: list[dict[str, Any]] = []
    for st in stages:
        snap = dict(stage_snapshot(st))
        snap.pop("position")
        plan.append(snap)
    return plan


def _guardrails(guardrail: Guardrail | None) -> dict[str, Any] | None:
    snap = guardrail_snapshot(guardrail)
    return dict(snap) if snap is not None else None


def migration_block(m: MigrationState | None) -> dict[str, Any]:
    """A migration state as the files write it: the stage, then splits, cohorts and the divergence limit
    when there are any (a block ``{stage: off}`` is what a migration flag state without a row stands at)."""
    if m is None:
        return {"stage": str(MigrationStage.OFF)}
    block: dict[str, Any] = {"stage": str(m.stage)}
    if m.splits:
        block["splits"] = [{"stage": s["stage"], "percentage": float(s["percentage"])} for s in m.splits]
    if m.cohort_stages:
        block["cohorts"] = [{"cohort": c["cohort"], "stage": c["stage"]} for c in m.cohort_stages]
    if m.max_divergences is not None:
        block["max_divergences"] = m.max_divergences
    return block


def current() -> Current:
    """Everything the files describe, as it stands (a handful of queries, whatever the size)."""
    now = Current()
    for env in Environment.objects.order_by("order", "key"):
        snap = environment_snapshot(env)
        now.environments[env.key] = snap
        now.versions[f"environment:{env.key}"] = environment_version(snap)
    for workload in Workload.objects.order_by("key"):
        wsnap = workload_snapshot(workload)
        now.workloads[workload.key] = {f: wsnap[f] for f in WORKLOAD_FIELDS}
        now.versions[f"workload:{workload.key}"] = workload.version
    cohorts = list(Cohort.objects.order_by("key"))
    members = _members([c.pk for c in cohorts])
    for cohort in cohorts:
        now.cohorts[cohort.key] = {"key": cohort.key, "name": cohort.name, "description": cohort.description,
                                   "match_on": cohort.match_on, "rules": cohort.rules, "members": members[cohort.pk]}
        now.versions[f"cohort:{cohort.key}"] = cohort.version
    stages: dict[int, list[RolloutStage]] = {}
    for st in RolloutStage.objects.prefetch_related("include_cohorts").order_by("flag_state_id", "position"):
        stages.setdefault(st.flag_state_id, []).append(st)
    guardrails = {g.flag_state_id: g for g in Guardrail.objects.all()}
    queries: dict[int, list[dict[str, Any]]] = {}
    for q in GuardrailQuery.objects.select_related("guardrail").order_by("guardrail_id", "name"):
        queries.setdefault(q.guardrail.flag_state_id, []).append(
            {"name": q.name, "query": q.query, "max_value": q.max_value})
    for flag in Flag.objects.select_related("workload").order_by("key"):
        now.flags[flag.key] = {"key": flag.key, "workload": flag.workload.key, "description": flag.description,
                               "salt": flag.salt, "bucket_by": flag.bucket_by, "environments": {}}
        if flag.kind != FlagKind.RELEASE:  # release is the default: files of release flags stay as they were
            now.flags[flag.key]["kind"] = flag.kind
        now.versions[f"flag:{flag.key}"] = flag.version
    states = (FlagState.objects.select_related("flag", "environment")
              .prefetch_related("include_cohorts", "exclude_cohorts").order_by("flag__key", "environment__order",
                                                                                "environment__key"))
    migrations = {m.flag_state_id: m for m in MigrationState.objects.all()}
    for state in states:
        key = f"{state.flag.key}@{state.environment.key}"
        now.flags[state.flag.key]["environments"][state.environment.key] = {
            "enabled": state.enabled,
            "retired": state.retired,
            "percentage": float(state.percentage),
            "compare_percentage": float(state.compare_percentage),
            "include_cohorts": sorted(c.key for c in state.include_cohorts.all()),
            "exclude_cohorts": sorted(c.key for c in state.exclude_cohorts.all()),
            "overrides": dict(sorted(state.overrides.items())),
            "plan": _plan(stages.get(state.pk, [])),
            "guardrails": _guardrails(guardrails.get(state.pk)),
            "prometheus": queries.get(state.pk, []),
        }
        now.versions[f"flag_state:{key}"] = state.version
        if state.flag.kind == FlagKind.MIGRATION:
            block = migration_block(migrations.get(state.pk))
            now.migrations[key] = block
            if block != {"stage": MigrationStage.OFF}:
                now.flags[state.flag.key]["environments"][state.environment.key]["migration"] = block
        now.progress[key] = {"stage": state.stage, "paused": state.paused_at is not None}
        if state.stage or state.paused_at is not None:
            plan = stages.get(state.pk, [])
            name = plan[state.stage - 1].name if 0 < state.stage <= len(plan) else None
            now.flags[state.flag.key]["environments"][state.environment.key]["progress"] = {
                "stage": name, "paused": state.paused_at is not None}
    return now


# --- files ---------------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style, keys in the order written, long text as literal blocks."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def dump(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False,
                     width=120)


def _csv(subjects: list[str]) -> str:
    # One subject per row; a key holding a comma or a quote is quoted as CSV quotes it.
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["subject"])
    for subject in subjects:
        writer.writerow([subject])
    return out.getvalue()


def export_files(now: Current | None = None) -> Iterator[tuple[str, str]]:
    """(path, text) of every file of the configuration, in a stable order (exports of the same installation
    are byte-equal)."""
    now = now or current()
    yield "environments.yaml", dump({"turnout": FORMAT, "environments": list(now.environments.values())})
    yield "workloads.yaml", dump({"turnout": FORMAT, "workloads": list(now.workloads.values())})
    cohorts: list[dict[str, Any]] = []
    lists: list[tuple[str, str]] = []
    for key, cohort in now.cohorts.items():
        item = {k: v for k, v in cohort.items() if k != "members"}
        refs: dict[str, str] = {}
        for kind in ("include", "exclude"):
            path = f"cohorts/{key}.{kind}.csv"
            refs[kind] = path
            lists.append((path, _csv(cohort["members"][kind])))
        item["members"] = refs
        cohorts.append(item)
    yield "cohorts.yaml", dump({"turnout": FORMAT, "cohorts": cohorts})
    yield from lists
    for key, flag in now.flags.items():
        flag = {**flag, "environments": {env: _without_stage_split(state) for env, state in
                                         flag["environments"].items()}}
        yield f"flags/{key}.yaml", dump({"turnout": FORMAT, "flags": [flag]})


STAGE_SPLIT = ("enabled", "retired", "percentage", "compare_percentage", "include_cohorts")


def _without_stage_split(state: dict[str, Any]) -> dict[str, Any]:
    """A started rollout's file names its stage (``progress.stage``) and leaves out the fields that stage
    sets — on, retired, percentages, included cohorts — unless the state differs from the stage (killed, or
    a field changed since): moving ``progress.stage`` in the file then moves them with it, and a plan of the
    file after the apply is empty."""
    name = (state.get("progress") or {}).get("stage")
    stage = next((s for s in state["plan"] if s["name"] == name), None) if name is not None else None
    if stage is None:
        return state
    split = {"enabled": True, "retired": stage["retires_legacy"], "percentage": float(stage["percentage"]),
             "compare_percentage": float(stage["compare_percentage"]),
             "include_cohorts": sorted(stage["include_cohorts"])}
    return {k: v for k, v in state.items() if not (k in STAGE_SPLIT and v == split[k])}
