"""Migration cohorts 0002: stored evil ``matches`` patterns are neutralised, audited, and the chain verifies.

The cohorts are written in the schema state before the migration (Django's MigrationExecutor
migrates back to 0001, the rows are inserted through that state's historical models, as rules
saved before the validator tightened would be), then the migration runs forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from turnout.engine import compile_ruleset, validate_rules

BEFORE = [("cohorts", "0001_initial")]
AFTER = [("cohorts", "0002_neutralise_unsafe_regex_rules")]
EVIL = {"attr": "ua", "op": "matches", "values": ["ok$", r"(a+)+$"]}
WORSE = {"attr": "ua", "op": "matches", "values": [r"(.*a){20}"]}
PRO = {"attr": "plan", "op": "eq", "values": ["pro"]}
FALSE_UA = {"all": [{"attr": "ua", "op": "exists"}, {"not": {"attr": "ua", "op": "exists"}}]}

pytestmark = [pytest.mark.django_db(transaction=True)]


def _migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def old_schema(envs: Any, flag: Any) -> Iterator[Any]:
    """The apps registry of the state before the migration; the database is migrated forward after."""
    old = _migrate(BEFORE)
    try:
        yield old
    finally:
        _migrate([("cohorts", leaf) for app, leaf in MigrationExecutor(connection).loader.graph.leaf_nodes()
                  if app == "cohorts"])


def test_migration__stored_evil_patterns__neutralised_audited_and_chain_verifies(
    old_schema: Any, flag: Any, actor: Any
) -> None:
    from audit.models import AuditEvent
    from audit.verify import verify_chain
    from cohorts.models import Cohort
    from rollout.delivery.ruleset import get_ruleset
    from rollout.models import Environment
    from rollout.services.flags import flag_state_update

    OldCohort = old_schema.get_model("cohorts", "Cohort")
    OldCohort.objects.create(key="pilot", name="Pilot", rules={"any": [PRO, EVIL, {"not": WORSE}]})
    OldCohort.objects.create(key="regulated", name="Regulated", rules={"all": [PRO, {"not": EVIL}]})
    OldCohort.objects.create(key="fine", name="Fine", rules={"all": [PRO, {"attr": "ua", "op": "matches",
                                                                          "values": [r"^user-\d+$"]}]})
    flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, enabled=True,
                      percentage_value=10, include_cohorts=["pilot"], exclude_cohorts=["regulated"])
    versions = dict(Environment.objects.values_list("key", "ruleset_version"))
    last = AuditEvent.objects.order_by("-sequence").first()

    _migrate(AFTER)

    pilot, regulated, fine = (Cohort.objects.get(key=k) for k in ("pilot", "regulated", "fine"))
    # Included only: narrowed. The refused value goes, the safe one stays; under `not`, true.
    assert pilot.rules == {"any": [PRO, {**EVIL, "values": ["ok$"]}, {"not": {"not": FALSE_UA}}]}
    # Excluded by a flag: widened. Under `not`, the condition narrows (its safe value stays).
    assert regulated.rules == {"all": [PRO, {"not": {**EVIL, "values": ["ok$"]}}]}
    assert fine.version == 1 and (pilot.version, regulated.version) == (2, 2)
    for cohort in (pilot, regulated):
        validate_rules(cohort.rules)  # what the service would now accept
    assert Environment.objects.get(key="staging").ruleset_version == versions["staging"] + 2
    assert Environment.objects.get(key="production").ruleset_version == versions["production"]
    ruleset = compile_ruleset(get_ruleset(Environment.objects.get(key="staging").pk).document())
    assert ruleset.warnings == ()

    events = list(AuditEvent.objects.filter(sequence__gt=last.sequence).order_by("sequence"))
    assert [(e.action, e.actor_type, e.actor, e.object_type, e.object_key) for e in events] == [
        ("cohort.rules_neutralised", "system", "system:migration", "cohort", "pilot"),
        ("cohort.rules_neutralised", "system", "system:migration", "cohort", "regulated"),
    ]
    first = events[0]
    assert first.before == {"key": "pilot", "name": "Pilot", "description": "", "match_on": "",
                            "rules": {"any": [PRO, EVIL, {"not": WORSE}]}, "version": 1}
    assert first.after["rules"] == pilot.rules and first.after["version"] == 2
    assert first.after["direction"] == "narrow" and events[1].after["direction"] == "widen"
    assert [f["path"] for f in first.after["neutralised"]] == ["rules.any[1].values[1]", "rules.any[2].not.values[0]"]
    assert "rules.any[1].values[1]: 'matches' pattern '(a+)+$' could take time" in first.reason
    report = verify_chain()
    assert report.ok and report.head_sequence == events[-1].sequence


def test_migration__no_unsafe_patterns__changes_nothing(old_schema: Any) -> None:
    from audit.models import AuditEvent
    from cohorts.models import Cohort

    old_schema.get_model("cohorts", "Cohort").objects.create(key="fine", name="Fine", rules={"all": [PRO]})
    head = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()

    _migrate(AFTER)

    assert Cohort.objects.get(key="fine").rules == {"all": [PRO]}
    assert AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() == head
