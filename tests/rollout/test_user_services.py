from __future__ import annotations

import pytest

from common.actors import Actor
from common.errors import Conflict, NotFound, ValidationFailed
from rollout.access.keys import api_token_create
from rollout.access.users import user_create, user_deactivate, user_roles, user_update_roles
from rollout.models import ApiToken

pytestmark = pytest.mark.django_db


def test_user_update_roles__new_roles__one_exact_audit_event(actor, audit_events):
    user_create(actor=actor, username="ana", password=None, roles=["viewer"])
    user = user_update_roles(actor=actor, username="ana", roles=["editor", "approver"], reason="joined release")
    assert user_roles(user) == ["approver", "editor"]
    event = audit_events()[-1]
    assert (event.action, event.object_type, event.object_key, event.actor) == (
        "user.roles_changed", "user", "ana", "system:test")
    assert (event.before, event.after, event.reason) == ({"roles": ["viewer"]}, {"roles": ["approver", "editor"]},
                                                         "joined release")


def test_user_update_roles__same_roles__no_event(actor, audit_events):
    user_create(actor=actor, username="ana", password=None, roles=["viewer"])
    user_update_roles(actor=actor, username="ana", roles=["viewer"])
    assert [e.action for e in audit_events()] == ["user.created"]


@pytest.mark.parametrize("roles", [["root"], "admin"])
def test_user_update_roles__bad_roles__rejected(actor, roles):
    user_create(actor=actor, username="ana", password=None, roles=["viewer"])
    with pytest.raises(ValidationFailed) as info:
        user_update_roles(actor=actor, username="ana", roles=roles)
    assert "roles" in info.value.fields


def test_user_update_roles__own_admin_role__refused(actor):
    admin = user_create(actor=actor, username="boss", password=None, roles=["admin"])
    with pytest.raises(ValidationFailed):
        user_update_roles(actor=Actor.for_user(admin), username="boss", roles=["viewer"])


def test_user_update_roles__unknown_user__not_found(actor):
    with pytest.raises(NotFound):
        user_update_roles(actor=actor, username="ghost", roles=[])


def test_user_deactivate__active_user__inactive_tokens_revoked_one_exact_event(actor, audit_events):
    user_create(actor=actor, username="ana", password=None, roles=["editor"])
    api_token_create(actor=actor, username="ana", name="a")
    api_token_create(actor=actor, username="ana", name="b")
    user = user_deactivate(actor=actor, username="ana", reason="left the team")
    assert user.is_active is False
    assert not ApiToken.objects.filter(revoked_at__isnull=True).exists()
    event = audit_events()[-1]
    assert (event.action, event.object_key, event.reason) == ("user.deactivated", "ana", "left the team")
    assert (event.before, event.after) == ({"is_active": True}, {"is_active": False, "tokens_revoked": 2})


def test_user_deactivate__self_or_twice__conflict(actor):
    admin = user_create(actor=actor, username="boss", password=None, roles=["admin"])
    with pytest.raises(Conflict):
        user_deactivate(actor=Actor.for_user(admin), username="boss")
    user_create(actor=actor, username="ana", password=None)
    user_deactivate(actor=actor, username="ana")
    with pytest.raises(Conflict):
        user_deactivate(actor=actor, username="ana")


def test_token_write__audit_actor__names_the_token(actor, audit_events):
    from rest_framework.test import APIClient

    user_create(actor=actor, username="deployer", password=None, roles=["editor"])
    token, secret = api_token_create(actor=actor, username="deployer", name="pipeline")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.post("/api/v1/workloads/", {"key": "w", "name": "W"}, format="json").status_code == 201
    event = audit_events()[-1]
    assert (event.action, event.actor_type) == ("workload.created", "token")
    assert event.actor == f"deployer via {token.prefix}"
