"""Invitations: an admin adds a person (page or API) and they get an e-mail — received by a local SMTP server
the test starts — with a one-time link to choose their password (Django's reset token), or the single sign-on
link where password sign-in is off. Each step is audited; the link is made when sent and stored nowhere."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from tests.api.conftest import bearer_client, make_user
from tests.team.conftest import Mailbox
from tests.ui_support import HTMX, signed_in, text

pytestmark = pytest.mark.django_db

LINK = re.compile(r"http://testserver(/password/set/[^/\s]+/[^/\s]+/)")


def test_invite__person_added_on_the_page__sets_password_through_the_link_once__then_signs_in(
        envs: Any, mailbox: Mailbox, audit_events: Any, django_capture_on_commit_callbacks: Any) -> None:
    from django.contrib.auth import get_user_model

    from notifications.models import Delivery

    admin = signed_in("admin", "root")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post("/people/new/", {"username": "nia", "email": "nia@example.org", "roles": ["editor"],
                                               "invite": "on"}, **HTMX)
    assert response.status_code == 200
    assert "An invitation is on its way to nia@example.org." in text(response)
    [message] = mailbox.messages
    assert (message["To"], message["Subject"]) == ("nia@example.org", "[Turnout] You are invited to Turnout")
    body = message.get_payload()
    assert "root invited you to Turnout" in body and "Your roles: editor" in body
    assert "Then sign in at http://testserver/login/" in body
    path = LINK.search(body).group(1)  # type: ignore[union-attr]
    token = path.rstrip("/").rsplit("/", 1)[1]
    [delivery] = Delivery.objects.filter(kind="user.invitation")
    assert (delivery.username, delivery.status, delivery.subscription) == ("nia", "sent", None)
    assert token not in delivery.text  # the log never holds the link

    person = Client()
    form_page = person.get(path, follow=True)
    assert "Choose your password" in text(form_page) and "For <strong>nia</strong>" in text(form_page)
    done = person.post(form_page.redirect_chain[-1][0], {"new_password1": "long enough passphrase 7",
                                                         "new_password2": "long enough passphrase 7"})
    assert (done.status_code, done["Location"]) == (302, "/login/")
    assert get_user_model().objects.get(username="nia").check_password("long enough passphrase 7")
    assert "This link is not valid any more" in text(Client().get(path, follow=True))  # spent

    events = [(e.actor, e.action, e.object_key, e.before, e.after) for e in audit_events()
              if e.object_key == "nia"]
    assert events == [
        ("root", "user.created", "nia", None, {"username": "nia", "roles": ["editor"], "is_superuser": False}),
        ("root", "user.invited", "nia", None, {"email": "nia@example.org", "sign_in": "password",
                                               "url": "http://testserver"}),
        ("nia", "user.password_set", "nia", {"password": False}, {"password": True, "via": "invitation"}),
    ]


def test_invite__password_sign_in_off__api_invite_carries_the_sso_link__set_password_page_404(
        envs: Any, mailbox: Mailbox, settings: Any, django_capture_on_commit_callbacks: Any) -> None:
    settings.TURNOUT_PASSWORD_LOGIN = False
    _, secret = make_user("root", ["admin"])
    with django_capture_on_commit_callbacks(execute=True):
        response = bearer_client(secret).post("/api/v1/users/", {"username": "sam", "email": "sam@example.org",
                                                                 "roles": ["viewer"], "invite": True}, format="json")
    assert response.status_code == 201, response.content
    [message] = mailbox.messages
    body = message.get_payload().replace("\r\n", "\n")
    assert body.startswith("root invited you to Turnout")
    assert "Sign in with single sign-on:\nhttp://testserver/oidc/authenticate/" in body
    assert "/password/set/" not in body
    assert Client().get("/password/set/MQ/abc-def/").status_code == 404


def test_invite__without_an_email__422_and_nobody_added(envs: Any) -> None:
    from django.contrib.auth import get_user_model

    response = signed_in("admin", "root").post("/people/new/", {"username": "nia", "invite": "on"}, **HTMX)
    assert response.status_code == 422
    assert "An invitation needs their e-mail address." in text(response)
    assert not get_user_model().objects.filter(username="nia").exists()


def test_invite__again_after_deactivation__409__and_an_old_link_invalid(
        envs: Any, mailbox: Mailbox, actor: Any, django_capture_on_commit_callbacks: Any) -> None:
    from rollout.access.users import user_create, user_deactivate

    user_create(actor=actor, username="nia", password=None, roles=["viewer"], email="nia@example.org")
    admin = signed_in("admin", "root")
    with django_capture_on_commit_callbacks(execute=True):
        assert admin.post("/people/nia/invite/", **HTMX).status_code == 200
    path = LINK.search(mailbox.messages[0].get_payload()).group(1)  # type: ignore[union-attr]
    user_deactivate(actor=actor, username="nia", reason="left")
    assert "This link is not valid any more" in text(Client().get(path, follow=True))
    response = admin.post("/people/nia/invite/", **HTMX)
    assert response.status_code == 409 and "is deactivated" in text(response)


def test_invite__api__non_admin_403(envs: Any) -> None:
    _, secret = make_user("ed", ["editor"])
    assert bearer_client(secret).post("/api/v1/users/ed/invite/").status_code == 403
