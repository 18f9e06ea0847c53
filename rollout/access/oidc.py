"""Single sign-on with OpenID Connect (mozilla-django-oidc): who a signed-in person is, and their roles.

People are matched by a username claim (``TURNOUT_OIDC_USERNAME_CLAIM``, default ``preferred_username``),
created at their first sign-in, and given the roles their groups map to (``TURNOUT_OIDC_ROLE_MAP``,
``group=role`` pairs, read from the ``TURNOUT_OIDC_GROUPS_CLAIM`` claim) — again at every sign-in, so a
change in the identity provider reaches Turnout the next time they sign in. Both go through the user
services, so both are audited (actor ``system:oidc``). A deactivated person is refused: the callback
signs in active users only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from common.actors import Actor
from common.conf import get_setting
from rollout.access.users import ROLES, user_create, user_roles, user_update_roles

if TYPE_CHECKING:
    from django.contrib.auth.models import User

ACTOR = Actor.system("oidc")


def parse_role_map(text: str) -> dict[str, list[str]]:
    """``"ops=admin,reviewers=approver,reviewers=compliance"`` → group → roles (unknown roles refused)."""
    mapping: dict[str, list[str]] = {}
    for pair in filter(None, (p.strip() for p in (text or "").split(","))):
        group, sep, role = pair.partition("=")
        if not sep or role.strip() not in ROLES:
            raise ValueError(f"TURNOUT_OIDC_ROLE_MAP: '{pair}' is not group=role with a role among {', '.join(ROLES)}")
        mapping.setdefault(group.strip(), []).append(role.strip())
    return mapping


def roles_from_claims(claims: Mapping[str, Any]) -> list[str]:
    groups = claims.get(get_setting("OIDC_GROUPS_CLAIM"))
    if isinstance(groups, str):
        groups = [groups]
    if not isinstance(groups, list):
        groups = []
    mapping = parse_role_map(get_setting("OIDC_ROLE_MAP"))
    return sorted({role for group in groups if isinstance(group, str) for role in mapping.get(group, [])})


def username_from_claims(claims: Mapping[str, Any]) -> str:
    value = claims.get(get_setting("OIDC_USERNAME_CLAIM")) or claims.get("sub") or ""
    return str(value)[:150]


class TurnoutOIDCBackend(OIDCAuthenticationBackend):  # type: ignore[misc]  # the library is untyped
    def get_user(self, user_id: Any) -> Any:
        """The session's person — none once deactivated (the library's own answer ignores it)."""
        user = super().get_user(user_id)
        return user if user is not None and user.is_active else None

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return bool(username_from_claims(claims))

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        return get_user_model().objects.filter(username=username_from_claims(claims))

    def create_user(self, claims: dict[str, Any]) -> User:
        email = str(claims.get("email") or "")[:254]
        return user_create(actor=ACTOR, username=username_from_claims(claims), password=None,
                           roles=roles_from_claims(claims), email=email)

    def update_user(self, user: User, claims: dict[str, Any]) -> User:
        if not user.is_active:
            return user  # refused by the callback; nothing about them changes
        roles = roles_from_claims(claims)
        if roles != user_roles(user):
            groups = claims.get(get_setting("OIDC_GROUPS_CLAIM"))
            user = user_update_roles(actor=ACTOR, username=user.get_username(), roles=roles,
                                     reason=f"signed in with groups {groups!r} from the identity provider")
        return user
