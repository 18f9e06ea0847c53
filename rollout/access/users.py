"""People: created with roles (Django groups), audited like every other change."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone

from audit.names import Action
from audit.services import audit_record, audited_atomic
from common.actors import Actor
from common.errors import Conflict, NotFound, ValidationFailed
from rollout.models import ApiToken
from rollout.policy import enforce

if TYPE_CHECKING:
    from django.contrib.auth.models import User

ROLES = ("viewer", "editor", "approver", "admin", "compliance")


def _roles(roles: Iterable[str]) -> list[str]:
    if isinstance(roles, str | bytes):
        raise ValidationFailed.field("roles", "must be a list of role names")
    clean = sorted(set(roles))
    bad = [r for r in clean if r not in ROLES]
    if bad:
        raise ValidationFailed.field("roles", f"unknown role '{bad[0]}' (one of {', '.join(ROLES)})")
    return clean


def user_create(*, actor: Actor, username: str, password: str | None, roles: Iterable[str] = (),
                email: str = "", is_superuser: bool = False) -> User:
    User = get_user_model()
    role_names = _roles(roles)
    enforce(actor, Action.USER_CREATED)
    with audited_atomic():
        if User.objects.filter(username=username).exists():
            raise ValidationFailed.field("username", f"a user '{username}' already exists")
        user = User(username=username, email=email, is_superuser=is_superuser, is_staff=is_superuser)
        if password:
            try:
                validate_password(password, user)
            except DjangoValidationError as exc:
                raise ValidationFailed.field("password", " ".join(exc.messages)) from None
            user.set_password(password)
        else:
            user.set_unusable_password()
        try:
            user.full_clean()
        except DjangoValidationError as exc:
            raise ValidationFailed.from_django(exc) from None
        user.save()
        groups = [Group.objects.get_or_create(name=name)[0] for name in role_names]
        user.groups.set(groups)
        audit_record(actor=actor, action=Action.USER_CREATED, object_type="user", object_key=username,
                     after={"username": username, "roles": role_names, "is_superuser": is_superuser})
    return user


def _get_user_for_update(username: str) -> User:
    user = get_user_model().objects.select_for_update().filter(username=username).first()
    if user is None:
        raise NotFound(f"user '{username}' does not exist")
    return user


def user_roles(user: User) -> list[str]:
    return sorted(n for n in user.groups.values_list("name", flat=True) if n in ROLES)


def user_update_roles(*, actor: Actor, username: str, roles: Iterable[str], reason: str = "") -> User:
    """Replace a user's roles. Nobody removes their own admin role (so an admin cannot lock everyone out)."""
    role_names = _roles(roles)
    enforce(actor, Action.USER_ROLES_CHANGED)
    with audited_atomic():
        user = _get_user_for_update(username)
        before = user_roles(user)
        if actor.user_id == user.pk and "admin" in before and "admin" not in role_names and not user.is_superuser:
            raise ValidationFailed.field("roles", "you cannot remove your own admin role")
        if before == role_names:
            return user
        user.groups.set([Group.objects.get_or_create(name=name)[0] for name in role_names])
        audit_record(actor=actor, action=Action.USER_ROLES_CHANGED, object_type="user", object_key=username,
                     before={"roles": before}, after={"roles": role_names}, reason=reason)
    return user


def user_deactivate(*, actor: Actor, username: str, reason: str = "") -> User:
    """Sign a user out of everything: inactive (no login, no token works) and every token revoked."""
    enforce(actor, Action.USER_DEACTIVATED)
    with audited_atomic():
        user = _get_user_for_update(username)
        if actor.user_id == user.pk:
            raise Conflict("you cannot deactivate yourself")
        if not user.is_active:
            raise Conflict(f"user '{username}' is already inactive")
        user.is_active = False
        user.save(update_fields=["is_active"])
        revoked = ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())
        audit_record(actor=actor, action=Action.USER_DEACTIVATED, object_type="user", object_key=username,
                     before={"is_active": True}, after={"is_active": False, "tokens_revoked": revoked},
                     reason=reason)
    return user
