"""Single sign-on's pure parts and the password switch (the browser flow: tests/browser/test_sso.py)."""

from __future__ import annotations

from typing import Any

import pytest

from rollout.access.oidc import parse_role_map, roles_from_claims, username_from_claims


def test_parse_role_map__pairs__group_to_roles() -> None:
    assert parse_role_map("ops=admin, reviewers=approver,reviewers=compliance") == {
        "ops": ["admin"], "reviewers": ["approver", "compliance"]}


@pytest.mark.parametrize("text", ["ops", "ops=owner", "=admin=x"])
def test_parse_role_map__bad_pair__names_it(text: str) -> None:
    with pytest.raises(ValueError, match="TURNOUT_OIDC_ROLE_MAP"):
        parse_role_map(text)


def test_roles_from_claims__mapped_groups_only(settings: Any) -> None:
    settings.TURNOUT_OIDC_ROLE_MAP = "ops=admin,dev=editor"
    assert roles_from_claims({"groups": ["dev", "ops", "lunch-club"]}) == ["admin", "editor"]
    assert roles_from_claims({"groups": "dev"}) == ["editor"]
    assert roles_from_claims({"groups": None}) == []
    assert roles_from_claims({}) == []


def test_username_from_claims__configured_claim_then_sub(settings: Any) -> None:
    assert username_from_claims({"preferred_username": "alice", "sub": "42"}) == "alice"
    assert username_from_claims({"sub": "42"}) == "42"
    settings.TURNOUT_OIDC_USERNAME_CLAIM = "email"
    assert username_from_claims({"email": "a@example.org", "preferred_username": "alice"}) == "a@example.org"


@pytest.mark.django_db
def test_login__password_sign_in_off__403_and_no_form(settings: Any, audit_events: Any) -> None:
    from django.test import Client

    settings.TURNOUT_PASSWORD_LOGIN = False
    client = Client()
    assert 'name="password"' not in client.get("/login/").content.decode()
    response = client.post("/login/", {"username": "root", "password": "whatever-it-is"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "password_login_disabled"
    assert audit_events() == []
