"""People: created with roles (Django groups), audited like every other change."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError

from audit.services import audit_record, audited_atomic
from common.actors import Actor
from common.errors import ValidationFailed

ROLES = ("viewer", "editor", "approver", "admin", "compliance")


def _roles(roles: Iterable[str]) -> list[str]:
    clean = sorted(set(roles))
    bad = [r for r in clean if r not in ROLES]
    if bad:
        raise ValidationFailed.field("roles", f"unknown role '{bad[0]}' (one of {', '.join(ROLES)})")
    return clean


def user_create(*, actor: Actor, username: str, password: str | None, roles: Iterable[str] = (),
                email: str = "", is_superuser: bool = False):  # type: ignore[no-untyped-def]
    User = get_user_model()
    role_names = _roles(roles)
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
        audit_record(actor=actor, action="user.created", object_type="user", object_key=username,
                     after={"username": username, "roles": role_names, "is_superuser": is_superuser})
    return user
