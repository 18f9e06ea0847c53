"""Evidence pack per cutover: everything a reviewer asks for about one workload or one flag state.

A pack is a zip holding ``events.jsonl`` and ``events.csv`` (every audit event about the subject,
in the export formats), ``summary.json`` (the subject and one entry per *evidence section*) and
``manifest.json`` (signed, listing each file's SHA-256), verifiable like any export.

Two small registries let other parts of Turnout add to every pack without touching this module:

- ``@evidence_events("name")``: a function ``(subject) -> Q`` selecting more audit events about the
  subject (e.g. its change requests or guardrail checks);
- ``@evidence_section("name")``: a function ``(subject, until_sequence) -> JSON-able`` adding a section
  to ``summary.json`` (e.g. approvals, stage history, guardrail results, readiness reports at each
  advance, mismatch groups). Sections read only what existed up to ``until_sequence`` where they can.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from django.db.models import Q, QuerySet

from audit.chain import format_time
from audit.models import AuditEvent, AuditExport
from common.errors import NotFound, ValidationFailed
from rollout.models import Flag, Workload

SUBJECT_TYPES = ("workload", "flag_state")
SUMMARY_FORMAT = "turnout.evidence-pack/1"
ROLLBACK_ACTIONS = frozenset({"flag_state.killed", "flag_state.rolled_back"})


@dataclass(frozen=True)
class EvidenceSubject:
    type: str
    key: str
    workload: str
    flags: tuple[str, ...]
    flag_states: tuple[str, ...]  # "flag@environment"; empty for a workload: all its flags' states
    environments: tuple[str, ...]
    cohorts: tuple[str, ...]

    def flag_state_q(self) -> Q:
        if self.flag_states:
            return Q(object_type="flag_state", object_key__in=self.flag_states)
        q = Q(pk__in=[])
        for flag in self.flags:
            q |= Q(object_type="flag_state", object_key__startswith=f"{flag}@")
        return q


EventSource = Callable[[EvidenceSubject], Q]
Section = Callable[[EvidenceSubject, int], Any]
EVENT_SOURCES: dict[str, EventSource] = {}
SECTIONS: dict[str, Section] = {}


def evidence_events(name: str) -> Callable[[EventSource], EventSource]:
    def register(fn: EventSource) -> EventSource:
        EVENT_SOURCES[name] = fn
        return fn

    return register


def evidence_section(name: str) -> Callable[[Section], Section]:
    def register(fn: Section) -> Section:
        SECTIONS[name] = fn
        return fn

    return register


def _flags_of_workload(workload: str, until_sequence: int) -> list[str]:
    flags = set(Flag.objects.filter(workload__key=workload).values_list("key", flat=True))
    history = AuditEvent.objects.filter(object_type="flag", sequence__lte=until_sequence).filter(
        Q(after__workload=workload) | Q(before__workload=workload))
    flags.update(history.values_list("object_key", flat=True))
    return sorted(flags)


def _state_events(flag_state_q: Q, until_sequence: int) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(flag_state_q, sequence__lte=until_sequence).order_by("sequence")


def resolve_subject(subject_type: str, key: str, *, until_sequence: int) -> EvidenceSubject:
    """Who and what the pack is about, including objects since deleted (found through the audit log)."""
    if subject_type not in SUBJECT_TYPES:
        raise ValidationFailed.field("subject_type", f"must be one of {', '.join(SUBJECT_TYPES)}")
    flags: tuple[str, ...]
    states: tuple[str, ...]
    if subject_type == "workload":
        known = Workload.objects.filter(key=key).exists() or AuditEvent.objects.filter(
            object_type="workload", object_key=key, sequence__lte=until_sequence).exists()
        if not known:
            raise NotFound(f"workload '{key}' has neither a row nor an audit history")
        workload, flags, states = key, tuple(_flags_of_workload(key, until_sequence)), ()
    else:
        flag_key, sep, env_key = key.partition("@")
        if not sep or not flag_key or not env_key:
            raise ValidationFailed.field("key", "a flag state is named 'flag@environment'")
        known = AuditEvent.objects.filter(object_type="flag_state", object_key=key,
                                          sequence__lte=until_sequence).exists()
        flag = Flag.objects.select_related("workload").filter(key=flag_key).first()
        if flag is None and not known:
            raise NotFound(f"flag state '{key}' has neither a row nor an audit history")
        if flag is not None:
            workload = flag.workload.key
        else:
            last = AuditEvent.objects.filter(object_type="flag", object_key=flag_key).order_by("-sequence").first()
            snap = (last.after or last.before or {}) if last else {}
            workload = str(snap.get("workload", ""))
        flags, states = (flag_key,), (key,)
    partial = EvidenceSubject(subject_type, key, workload, flags, states, (), ())
    environments: set[str] = set()
    cohorts: set[str] = set()
    for env, before, after in _state_events(partial.flag_state_q(), until_sequence).values_list(
            "environment", "before", "after"):
        environments.add(env)
        for snap in (before, after):
            if isinstance(snap, dict):
                cohorts.update(snap.get("include_cohorts") or [])
                cohorts.update(snap.get("exclude_cohorts") or [])
    if subject_type == "flag_state":
        environments.add(key.partition("@")[2])
    return EvidenceSubject(subject_type, key, workload, flags, states, tuple(sorted(environments)),
                           tuple(sorted(cohorts)))


def evidence_queryset(subject: EvidenceSubject) -> QuerySet[AuditEvent]:
    q = Q(object_type="workload", object_key=subject.workload) | Q(object_type="flag", object_key__in=subject.flags)
    q |= subject.flag_state_q()
    for source in EVENT_SOURCES.values():
        q |= source(subject)
    return AuditEvent.objects.filter(q)


# --- built-in event sources and sections -------------------------------------------------------


@evidence_events("sdk_keys")
def _sdk_key_events(subject: EvidenceSubject) -> Q:
    """Who could read the environments' rulesets: SDK keys created and revoked there."""
    return Q(object_type="sdk_key", environment__in=subject.environments)


@evidence_events("cohorts")
def _cohort_events(subject: EvidenceSubject) -> Q:
    """Changes to the cohorts the subject's flag states ever included or excluded (who was in the pilot)."""
    return Q(object_type="cohort", object_key__in=subject.cohorts)


def _state_change(event: AuditEvent) -> dict[str, Any]:
    before = event.before if isinstance(event.before, dict) else {}
    after = event.after if isinstance(event.after, dict) else {}
    return {
        "sequence": event.sequence, "occurred_at": format_time(event.occurred_at), "actor": event.actor,
        "action": event.action, "flag_state": event.object_key, "reason": event.reason,
        "request_id": event.request_id,
        "changes": {k: {"before": before.get(k), "after": after.get(k)}
                    for k in ("enabled", "retired", "percentage", "compare_percentage", "stage")
                    if before.get(k) != after.get(k)},
    }


@evidence_section("rollout_history")
def _rollout_history(subject: EvidenceSubject, until_sequence: int) -> list[dict[str, Any]]:
    """Every change to the flag states, in order, with what moved (enabled, percentage, stage...)."""
    return [_state_change(e) for e in _state_events(subject.flag_state_q(), until_sequence).iterator()]


@evidence_section("rollbacks")
def _rollbacks(subject: EvidenceSubject, until_sequence: int) -> list[dict[str, Any]]:
    """Kills and rollbacks: who sent everyone back to legacy, when and why."""
    events = _state_events(subject.flag_state_q(), until_sequence).filter(action__in=ROLLBACK_ACTIONS)
    return [_state_change(e) for e in events.iterator()]


def summary(subject: EvidenceSubject, export: AuditExport, actions: Counter[str]) -> dict[str, Any]:
    return {
        "format": SUMMARY_FORMAT,
        "subject": asdict(subject),
        "until_sequence": export.until_sequence,
        "generated_at": format_time(export.created_at),
        "generated_by": export.requested_by,
        "events": {"count": sum(actions.values()), "by_action": dict(sorted(actions.items()))},
        "sections": {name: build(subject, export.until_sequence) for name, build in sorted(SECTIONS.items())},
    }
