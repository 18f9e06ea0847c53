from __future__ import annotations

from decimal import Decimal

import pytest

from audit.models import AuditEvent
from common.actors import Actor
from common.errors import Conflict, NotFound, ValidationFailed
from rollout.models import Environment, Flag, FlagState, Workload
from rollout.services.environments import environment_create
from rollout.services.flags import (
    flag_create,
    flag_delete,
    flag_state_kill,
    flag_state_resume,
    flag_state_retire,
    flag_state_update,
    flag_update,
)
from rollout.services.workloads import workload_create, workload_delete, workload_update

pytestmark = pytest.mark.django_db


def test_environment_create__valid__writes_one_exact_audit_event(actor, audit_events):
    env = environment_create(actor=actor, key="staging", name="Staging", order=2)
    [event] = audit_events()
    assert (event.action, event.object_type, event.object_key, event.environment) == (
        "environment.created", "environment", "staging", "staging")
    assert event.actor == "system:test" and event.actor_type == "system"
    assert event.before is None
    assert event.after == {"key": "staging", "name": "Staging", "order": 2, "requires_approval": False,
                           "description": ""}
    assert env.ruleset_version == 1


@pytest.mark.parametrize("key", ["", "Has Caps", "-leading", "x" * 64, "a b", "ünïcode"])
def test_environment_create__bad_key__rejected_naming_the_field(actor, audit_events, key):
    with pytest.raises(ValidationFailed) as info:
        environment_create(actor=actor, key=key, name="X")
    assert "key" in info.value.fields
    assert not Environment.objects.exists()
    assert audit_events() == []


def test_environment_create__duplicate_key__rejected(actor, envs):
    with pytest.raises(ValidationFailed) as info:
        environment_create(actor=actor, key="staging", name="Again")
    assert "key" in info.value.fields


def test_environment_create__existing_flags__gets_a_disabled_state_for_each(actor, flag):
    env = environment_create(actor=actor, key="qa", name="QA")
    state = FlagState.objects.get(flag=flag, environment=env)
    assert (state.enabled, state.percentage) == (False, Decimal("0"))


def test_workload_create__bad_risk__rejected_naming_risk(actor):
    with pytest.raises(ValidationFailed) as info:
        workload_create(actor=actor, key="w", name="W", risk="extreme")
    assert "risk" in info.value.fields
    assert not Workload.objects.exists()


def test_workload_update__stale_version__conflict_and_nothing_changes(actor, audit_events):
    workload_create(actor=actor, key="w", name="W")
    workload_update(actor=actor, key="w", version=1, name="W2")
    with pytest.raises(Conflict) as info:
        workload_update(actor=actor, key="w", version=1, name="W3")
    assert info.value.extra["current_version"] == 2
    assert Workload.objects.get(key="w").name == "W2"
    assert [e.action for e in audit_events()] == ["workload.created", "workload.updated"]


def test_workload_update__changes__audits_before_and_after(actor, audit_events):
    workload_create(actor=actor, key="w", name="W", risk="low")
    workload_update(actor=actor, key="w", version=1, risk="high", reason="handles money")
    event = audit_events()[-1]
    assert event.action == "workload.updated"
    assert (event.before["risk"], event.after["risk"]) == ("low", "high")
    assert (event.before["version"], event.after["version"]) == (1, 2)
    assert event.reason == "handles money"


def test_workload_update__no_change__writes_nothing(actor, audit_events):
    workload_create(actor=actor, key="w", name="W")
    workload_update(actor=actor, key="w", version=1, name="W")
    assert [e.action for e in audit_events()] == ["workload.created"]
    assert Workload.objects.get(key="w").version == 1


def test_workload_delete__with_flags__refused(actor, flag):
    with pytest.raises(Conflict):
        workload_delete(actor=actor, key="billing")
    assert Workload.objects.filter(key="billing").exists()


def test_flag_create__valid__states_everywhere_versions_bumped_one_event(actor, envs, audit_events):
    workload_create(actor=actor, key="billing", name="Billing")
    before = dict(Environment.objects.values_list("key", "ruleset_version"))
    flag = flag_create(actor=actor, key="invoice-engine", workload="billing")
    assert flag.salt == "invoice-engine"  # the salt defaults to the key
    assert FlagState.objects.filter(flag=flag).count() == 2
    after = dict(Environment.objects.values_list("key", "ruleset_version"))
    assert all(after[k] == before[k] + 1 for k in before)
    event = audit_events()[-1]
    assert (event.action, event.object_key, event.after["workload"]) == ("flag.created", "invoice-engine", "billing")


def test_flag_create__unknown_workload__rejected_naming_workload(actor, envs):
    with pytest.raises(ValidationFailed) as info:
        flag_create(actor=actor, key="f", workload="nope")
    assert "workload" in info.value.fields
    assert not Flag.objects.exists()


def test_flag_update__salt_change_without_reason__rejected(actor, flag):
    with pytest.raises(ValidationFailed) as info:
        flag_update(actor=actor, key=flag.key, salt="other")
    assert "reason" in info.value.fields


def test_flag_state_update__percentage__bumps_versions_and_audits_exact_event(actor, flag, audit_events):
    env_version = Environment.objects.get(key="production").ruleset_version
    state = flag_state_update(actor=actor, flag=flag.key, environment="production", version=1,
                              enabled=True, percentage_value="12.5", reason="stage 2")
    assert (state.version, state.percentage, state.enabled) == (2, Decimal("12.5"), True)
    assert Environment.objects.get(key="production").ruleset_version == env_version + 1
    [event] = audit_events()
    assert (event.action, event.object_type, event.object_key, event.environment, event.reason) == (
        "flag_state.updated", "flag_state", "invoice-engine@production", "production", "stage 2")
    assert event.before == {"flag": "invoice-engine", "environment": "production", "enabled": False,
                            "retired": False, "percentage": 0.0, "compare_percentage": 0.0,
                            "include_cohorts": [], "exclude_cohorts": [], "overrides": {}, "stage": 0,
                            "paused": False, "version": 1}
    assert (event.after["percentage"], event.after["enabled"], event.after["version"]) == (12.5, True, 2)


@pytest.mark.parametrize(("value", "field"), [
    (101, "percentage"), (-1, "percentage"), ("abc", "percentage"), ("12.34567", "percentage"),
    (True, "percentage"), (float("nan"), "percentage"),
])
def test_flag_state_update__bad_percentage__rejected_and_nothing_saved(actor, flag, audit_events, value, field):
    with pytest.raises(ValidationFailed) as info:
        flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, percentage_value=value)
    assert field in info.value.fields
    assert FlagState.objects.get(flag=flag, environment__key="staging").version == 1
    assert audit_events() == []


def test_flag_state_update__bad_override_path__rejected_naming_the_subject(actor, flag):
    with pytest.raises(ValidationFailed) as info:
        flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1,
                          overrides={"user-1": "parallel", "user-2": "sideways"})
    assert "overrides.user-2" in info.value.fields


def test_flag_state_update__unknown_cohort__rejected(actor, flag):
    with pytest.raises(ValidationFailed) as info:
        flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, include_cohorts=["ghost"])
    assert "include_cohorts" in info.value.fields


def test_flag_state_update__stale_version__conflict(actor, flag):
    flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, percentage_value=5)
    with pytest.raises(Conflict) as info:
        flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, percentage_value=10)
    assert info.value.extra["current_version"] == 2
    assert FlagState.objects.get(flag=flag, environment__key="staging").percentage == Decimal(5)


def test_flag_state_update__unknown_environment__not_found(actor, flag):
    with pytest.raises(NotFound):
        flag_state_update(actor=actor, flag=flag.key, environment="moon", version=1, percentage_value=5)


def test_flag_state_kill__enabled__disables_with_one_event_without_version(actor, flag, audit_events):
    flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, enabled=True)
    state = flag_state_kill(actor=actor, flag=flag.key, environment="staging", reason="errors spiking")
    assert state.enabled is False
    event = audit_events()[-1]
    assert (event.action, event.before["enabled"], event.after["enabled"], event.reason) == (
        "flag_state.killed", True, False, "errors spiking")


def test_flag_state_resume__killed__enables(actor, flag):
    flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, enabled=True)
    flag_state_kill(actor=actor, flag=flag.key, environment="staging")
    assert flag_state_resume(actor=actor, flag=flag.key, environment="staging").enabled is True


def test_flag_state_retire__below_full_rollout__refused(actor, flag):
    flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, enabled=True,
                      percentage_value=50)
    with pytest.raises(Conflict):
        flag_state_retire(actor=actor, flag=flag.key, environment="staging")


def test_flag_delete__enabled_somewhere__refused(actor, flag):
    flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, enabled=True)
    with pytest.raises(Conflict):
        flag_delete(actor=actor, key=flag.key)
    assert Flag.objects.filter(key=flag.key).exists()


def test_service__failure_after_audit__leaves_no_event(actor, flag, monkeypatch):
    import rollout.services.flags as flags_module

    def boom(**kwargs):
        raise RuntimeError("after the audit row")

    count = AuditEvent.objects.count()
    monkeypatch.setattr(flags_module, "ruleset_changed", boom)
    with pytest.raises(RuntimeError):
        flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, percentage_value=5)
    assert AuditEvent.objects.count() == count
    assert FlagState.objects.get(flag=flag, environment__key="staging").percentage == 0


def test_actor_for_user__user__labels_event_with_username(django_user_model, flag, audit_events):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user("alice")
    user.groups.add(Group.objects.get_or_create(name="editor")[0])  # services refuse a person without the role
    flag_state_update(actor=Actor.for_user(user), flag=flag.key, environment="staging", version=1,
                      percentage_value=1)
    assert audit_events()[-1].actor == "alice"
