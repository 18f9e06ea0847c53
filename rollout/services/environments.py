from __future__ import annotations

from django.db import IntegrityError

from audit.names import Action
from audit.services import audit_record, audited_atomic
from common.actors import Actor
from common.errors import NotFound, ValidationFailed
from common.services import UNSET, Unset, full_clean
from rollout.models import Environment, Flag, FlagState
from rollout.policy import enforce
from rollout.snapshots import environment_snapshot

DESCRIPTION_MAX = 2000


def _description(value: str | Unset) -> str | Unset:
    if isinstance(value, str) and len(value) > DESCRIPTION_MAX:
        raise ValidationFailed.field("description", f"is at most {DESCRIPTION_MAX} characters")
    return value


def environment_create(
    *, actor: Actor, key: str, name: str, order: int = 0, requires_approval: bool = False, description: str = "",
    reason: str = "",
) -> Environment:
    enforce(actor, Action.ENVIRONMENT_CREATED)
    _description(description)
    with audited_atomic():
        env = Environment(key=key, name=name, order=order, requires_approval=requires_approval,
                          description=description)
        full_clean(env)
        try:
            env.save(force_insert=True)
        except IntegrityError:
            raise ValidationFailed.field("key", f"an environment '{key}' already exists") from None
        # Every flag gets a (disabled, 0%) state; no SDK has seen this environment, so version 1 stands.
        FlagState.objects.bulk_create([FlagState(flag=f, environment=env) for f in Flag.objects.all()])
        audit_record(actor=actor, action=Action.ENVIRONMENT_CREATED, object_type="environment", object_key=env.key,
                     environment=env.key, after=environment_snapshot(env), reason=reason)
    return env


def environment_update(
    *, actor: Actor, key: str, name: str | Unset = UNSET, order: int | Unset = UNSET,
    requires_approval: bool | Unset = UNSET, description: str | Unset = UNSET, reason: str = "",
) -> Environment:
    enforce(actor, Action.ENVIRONMENT_UPDATED)
    _description(description)
    with audited_atomic():
        env = Environment.objects.select_for_update().filter(key=key).first()
        if env is None:
            raise NotFound(f"environment '{key}' does not exist")
        before = environment_snapshot(env)
        for field, value in (("name", name), ("order", order), ("requires_approval", requires_approval),
                             ("description", description)):
            if value is not UNSET:
                setattr(env, field, value)
        full_clean(env, validate_unique=False)
        if environment_snapshot(env) == before:
            return env
        env.save(update_fields=["name", "order", "requires_approval", "description", "updated_at"])
        audit_record(actor=actor, action=Action.ENVIRONMENT_UPDATED, object_type="environment", object_key=env.key,
                     environment=env.key, before=before, after=environment_snapshot(env), reason=reason)
    return env
