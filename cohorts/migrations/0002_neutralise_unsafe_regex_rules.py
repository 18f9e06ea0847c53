"""Stored ``matches`` patterns the tightened validator refuses are neutralised, audited (issue 13).

Since ``turnout.engine.validate_rules`` refuses patterns RE2 cannot compile and patterns that
could backtrack catastrophically under Python's ``re`` (``turnout._regex``), rules saved before
may hold such a pattern. An SDK without RE2 would then treat that condition as false on its own,
and an editor could no longer save the cohort unchanged. This migration settles each one, in the
direction that keeps subjects on the legacy path, and records it as one audit event per cohort:

- the offending values are dropped from their condition when that narrows what the cohort
  matches; a condition left with no value, or one whose narrowing would *widen* the cohort (it
  sits under an odd number of ``not``), becomes a constant (``exists`` and ``not exists`` of its
  attribute: false; ``not`` of that: true);
- "narrow" for a cohort only flags include (it then moves nobody new onto the parallel path);
  "widen" for a cohort some flag excludes (everyone it excluded stays excluded, on legacy).

The cohort's version and the ruleset version of every environment using it go up, so the cache
rebuilds and SDKs pick the change up on their next poll. The audit event is written as
``audit.services.audit_record`` writes one (same fields, same hash chain, the head row locked),
through the historical models; ``audit.chain`` holds pure functions only.
"""

import json
from typing import Any

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.models import F, Q
from django.utils import timezone

from audit.chain import event_hash

ACTION = "cohort.rules_neutralised"
ACTOR = "system:migration"


def _false(attr: str) -> dict[str, Any]:
    return {"all": [{"attr": attr, "op": "exists"}, {"not": {"attr": attr, "op": "exists"}}]}


def _constant(attr: str, value: bool) -> dict[str, Any]:
    return {"not": _false(attr)} if value else _false(attr)


def _refused(attr: str, pattern: object) -> str | None:
    from turnout.engine import RuleError, validate_rules

    if not isinstance(pattern, str):
        return None
    try:
        validate_rules({"attr": attr, "op": "matches", "values": [pattern]})
    except RuleError as exc:
        return str(exc).split(": ", 1)[-1]
    return None


def _neutralise(node: Any, path: str, positive: bool, widen: bool, found: list[dict[str, Any]]) -> Any:
    """The node with refused patterns settled; ``found`` collects what was changed."""
    if not isinstance(node, dict):
        return node
    if "attr" in node:
        if node.get("op") != "matches" or not isinstance(node.get("values"), list):
            return node
        attr = node["attr"]
        bad = [(i, v, _refused(attr, v)) for i, v in enumerate(node["values"])]
        bad = [(i, v, why) for i, v, why in bad if why]
        if not bad:
            return node
        for i, value, why in bad:
            found.append({"path": f"{path}.values[{i}]", "pattern": value, "problem": why})
        # Truth value that moves the whole rule the chosen way, given the negations above it.
        make_true = widen == positive
        refused = {i for i, _, _ in bad}
        kept = [v for i, v in enumerate(node["values"]) if i not in refused]
        if not make_true and kept:
            return {**node, "values": kept}  # fewer alternatives: the condition only narrows
        return _constant(attr, make_true)
    if "not" in node:
        return {"not": _neutralise(node["not"], f"{path}.not", not positive, widen, found)}
    for kind in ("all", "any"):
        if isinstance(node.get(kind), list):
            return {kind: [_neutralise(sub, f"{path}.{kind}[{i}]", positive, widen, found)
                           for i, sub in enumerate(node[kind])]}
    return node


def _first_attr(node: Any) -> str:
    if isinstance(node, dict):
        if isinstance(node.get("attr"), str):
            attr: str = node["attr"]
            return attr
        for child in (node.get("not"), *(node.get("all") or ()), *(node.get("any") or ())):
            found = _first_attr(child)
            if found:
                return found
    return "attribute"


def _snapshot(cohort: Any) -> dict[str, Any]:
    return {"key": cohort.key, "name": cohort.name, "description": cohort.description,
            "match_on": cohort.match_on, "rules": cohort.rules, "version": cohort.version}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, allow_nan=False))


def _audit(apps: Apps, *, object_key: str, before: dict[str, Any], after: dict[str, Any], reason: str) -> None:
    """One event appended to the chain, as audit.services.audit_record appends it."""
    AuditChainHead = apps.get_model("audit", "AuditChainHead")
    AuditEvent = apps.get_model("audit", "AuditEvent")
    head = AuditChainHead.objects.select_for_update().get(pk=1)
    event = AuditEvent(
        sequence=head.sequence + 1, occurred_at=timezone.now(), actor_type="system", actor=ACTOR,
        action=ACTION, object_type="cohort", object_key=object_key[:255], environment="",
        before=_jsonable(before), after=_jsonable(after), reason=reason, request_id="", prev_hash=head.hash,
    )
    event.hash = event_hash(head.hash, vars(event))
    event.save(force_insert=True)
    AuditChainHead.objects.filter(pk=1).update(sequence=event.sequence, hash=event.hash)


def neutralise_unsafe_patterns(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    from turnout.engine import RuleError, validate_rules

    Cohort = apps.get_model("cohorts", "Cohort")
    FlagState = apps.get_model("rollout", "FlagState")
    Environment = apps.get_model("rollout", "Environment")
    for cohort in Cohort.objects.select_for_update().exclude(rules=None).order_by("pk"):
        found: list[dict[str, Any]] = []
        excluded = FlagState.objects.filter(exclude_cohorts=cohort).exists()
        rules = _neutralise(cohort.rules, "rules", True, excluded, found)
        if not found:
            continue
        try:
            validate_rules(rules)
        except RuleError:  # e.g. the constants pushed a deep rule past the nesting limit
            rules = _constant(_first_attr(cohort.rules), excluded)
        before = _snapshot(cohort)
        cohort.rules = rules
        cohort.version += 1
        cohort.save(update_fields=["rules", "version", "updated_at"])
        env_ids = set(FlagState.objects.filter(Q(include_cohorts=cohort) | Q(exclude_cohorts=cohort))
                      .values_list("environment_id", flat=True))
        Environment.objects.filter(pk__in=env_ids).update(ruleset_version=F("ruleset_version") + 1)
        direction = "widened (a flag excludes it)" if excluded else "narrowed"
        problems = "; ".join(f"{f['path']}: {f['problem']}" for f in found)
        _audit(apps, object_key=cohort.key, before=before, after={**_snapshot(cohort), "neutralised": found,
                                                                     "direction": "widen" if excluded else "narrow"},
               reason=f"'matches' patterns refused by the validator were neutralised; the cohort was {direction} "
                      f"so that no subject leaves the legacy path because of it: {problems}")


class Migration(migrations.Migration):
    dependencies = [
        ("cohorts", "0001_initial"),
        ("rollout", "0003_rollouts"),
        ("audit", "0004_verification"),
    ]

    operations = [
        migrations.RunPython(neutralise_unsafe_patterns, migrations.RunPython.noop),
    ]
