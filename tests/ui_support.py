"""Helpers for the web UI's view tests (Django's test client, htmx requests)."""

from __future__ import annotations

from typing import Any

from django.test import Client

HTMX = {"HTTP_HX_REQUEST": "true"}


def signed_in(role: str, username: str | None = None) -> Client:
    """A test client signed in as a new user with ``role``."""
    from common.actors import Actor
    from rollout.access.users import user_create

    user = user_create(actor=Actor.system("test"), username=username or role, password=None, roles=[role])
    client = Client()
    client.force_login(user)
    return client


def text(response: Any) -> str:
    return response.content.decode()


def changes(audit_events: Any) -> list[Any]:
    """The audit events a test's request wrote (leaving out the signing-in user's creation)."""
    return [e for e in audit_events() if e.action != "user.created"]
