"""Sign-ins, failed sign-ins and sign-outs are audited; passwords never are."""

from __future__ import annotations

import json

import pytest

from audit.models import AuditEvent
from common.actors import Actor

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple 9"


@pytest.fixture
def dana(db):  # type: ignore[no-untyped-def]
    from rollout.access.users import user_create

    return user_create(actor=Actor.system("setup"), username="dana", password=PASSWORD, roles=["viewer"])


def test_login__right_password__auth_login_event_with_request_id(client, dana, audit_events):
    response = client.post("/login/", {"username": "dana", "password": PASSWORD}, headers={"X-Request-ID": "login-1"})
    assert response.status_code == 302
    [event] = audit_events()
    assert (event.action, event.actor, event.actor_type, event.object_key, event.request_id) == (
        "auth.login", "dana", "user", "dana", "login-1")
    assert event.after == {"remote_addr": "127.0.0.1"}


def test_login__wrong_password__failed_event_with_username_and_never_the_password(client, dana, audit_events):
    response = client.post("/login/", {"username": "dana", "password": "hunter2-guess"},
                           headers={"X-Request-ID": "login-2"})
    assert response.status_code == 200
    [event] = audit_events()
    assert (event.action, event.actor_type, event.object_key, event.request_id) == (
        "auth.login_failed", "anonymous", "dana", "login-2")
    row = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert "hunter2" not in row and PASSWORD not in row


def test_login__overlong_username__truncated_to_64(client, audit_events):
    client.post("/login/", {"username": "u" * 140, "password": "x"})
    [event] = audit_events()
    assert event.object_key == "u" * 64 and event.after["username_truncated"] is True


def test_logout__signed_in__auth_logout_event(client, dana, audit_events):
    client.post("/login/", {"username": "dana", "password": PASSWORD})
    client.post("/logout/")
    assert [e.action for e in audit_events()] == ["auth.login", "auth.logout"]


def test_force_login__test_helper__is_not_a_sign_in(client, dana, audit_events):
    client.force_login(dana)
    assert audit_events() == []


def test_role_change__through_the_admin__impossible(admin_client, dana):
    from django.contrib.auth.models import Group

    group = Group.objects.get_or_create(name="admin")[0]
    response = admin_client.post(f"/admin/auth/user/{dana.pk}/change/", {"username": "dana", "groups": [group.pk]})
    assert response.status_code == 403
    assert list(dana.groups.values_list("name", flat=True)) == ["viewer"]
