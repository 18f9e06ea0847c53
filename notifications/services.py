"""Subscriptions: a person chooses what to hear about and where — audited like every other change.

E-mail goes to any address; webhook channels (Slack, Teams, signed JSON) make the server POST to a URL,
so only admins add them (a URL inside the network is theirs to allow). Webhook URLs carry secrets: the
audit log and the pages show their scheme and host only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import EmailValidator, URLValidator
from django.db import IntegrityError

from audit.models import AuditEvent
from audit.names import Action
from audit.services import audit_record, audited_atomic
from common.actors import Actor
from common.conf import get_setting
from common.errors import Conflict, Forbidden, NotFound, ValidationFailed
from common.permissions import Capability, can
from notifications.channels import HTTP_CHANNELS, shown_address
from notifications.kinds import Kind
from notifications.models import Channel, Subscription
from rollout.policy import enforce


def _kinds(kinds: Iterable[str]) -> list[str]:
    if isinstance(kinds, str | bytes):
        raise ValidationFailed.field("kinds", "must be a list of notification kinds")
    clean = sorted(set(kinds))
    bad = [k for k in clean if k not in Kind.__members__.values()]
    if bad:
        raise ValidationFailed.field("kinds", f"unknown kind '{bad[0]}' (one of {', '.join(Kind)})")
    if not clean:
        raise ValidationFailed.field("kinds", "choose at least one")
    return clean


def _person(actor: Actor) -> Any:
    user = get_user_model().objects.filter(pk=actor.user_id, is_active=True).first() if actor.user_id else None
    if user is None:
        raise Forbidden("subscriptions belong to a signed-in person")
    return user


def _snapshot(sub: Subscription) -> dict[str, object]:
    return {"user": sub.user.get_username(), "channel": sub.channel,
            "address": shown_address(sub.channel, sub.address), "kinds": list(sub.kinds)}


def subscription_create(*, actor: Actor, channel: str, address: str, kinds: Iterable[str]) -> Subscription:
    kind_list = _kinds(kinds)
    address = (address or "").strip()
    if channel not in Channel.values:
        raise ValidationFailed.field("channel", f"unknown channel '{channel}' (one of {', '.join(Channel.values)})")
    try:
        if channel == Channel.EMAIL:
            EmailValidator()(address)
        else:
            URLValidator(schemes=["http", "https"])(address)
    except DjangoValidationError:
        what = "an e-mail address" if channel == Channel.EMAIL else "an http(s) URL"
        raise ValidationFailed.field("address", f"must be {what}") from None
    with audited_atomic():
        user = _person(actor)
        if channel in HTTP_CHANNELS and not can(user, Capability.ADMINISTER):
            raise Forbidden("webhook channels make the server call a URL: an admin adds them")
        try:
            sub = Subscription.objects.create(user=user, channel=channel, address=address, kinds=kind_list)
        except IntegrityError:
            raise ValidationFailed.field("address", "you already have this destination; change its kinds") from None
        audit_record(actor=actor, action=Action.NOTIFICATION_SUBSCRIBED, object_type="subscription",
                     object_key=str(sub.pk), after=_snapshot(sub))
    return sub


def _own(actor: Actor, subscription: int) -> Subscription:
    sub = Subscription.objects.select_for_update().select_related("user").filter(pk=subscription).first()
    if sub is None or sub.user_id != actor.user_id:  # another person's subscriptions are not even seen
        raise NotFound(f"subscription {subscription} does not exist")
    return sub


def subscription_update(*, actor: Actor, subscription: int, kinds: Iterable[str]) -> Subscription:
    kind_list = _kinds(kinds)
    with audited_atomic():
        sub = _own(actor, subscription)
        before = _snapshot(sub)
        if list(sub.kinds) == kind_list:
            return sub
        sub.kinds = kind_list
        sub.save(update_fields=["kinds", "updated_at"])
        audit_record(actor=actor, action=Action.NOTIFICATION_SUBSCRIPTION_CHANGED, object_type="subscription",
                     object_key=str(sub.pk), before=before, after=_snapshot(sub))
    return sub


def subscription_delete(*, actor: Actor, subscription: int) -> None:
    with audited_atomic():
        sub = _own(actor, subscription)
        before = _snapshot(sub)
        sub.delete()
        audit_record(actor=actor, action=Action.NOTIFICATION_UNSUBSCRIBED, object_type="subscription",
                     object_key=str(subscription), before=before)


# -- invitations: an e-mail with a one-time set-password link (or the single sign-on link) -----------------


def _base_url(base_url: str) -> str:
    base = (get_setting("PUBLIC_URL") or base_url or "").strip().rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:  # any host name: internal ones have no TLD
        raise ValidationFailed.field("base_url", "must be the http(s) address people reach Turnout at")
    return base


def invitation_send(*, actor: Actor, username: str, base_url: str = "") -> AuditEvent:
    """E-mail ``username`` an invitation (``user.invited``): a one-time link to set their password, or the
    single sign-on link where password sign-in is off. Sent by the notification worker after commit, through
    the outbox, retried and logged like any notice; the link is made when it is sent and stored nowhere.
    ``base_url``: where the inviting request came from, unless ``TURNOUT_PUBLIC_URL`` says otherwise."""
    base = _base_url(base_url)
    enforce(actor, Action.USER_INVITED)
    with audited_atomic():
        user = get_user_model().objects.select_for_update().filter(username=username).first()
        if user is None:
            raise NotFound(f"user '{username}' does not exist")
        if not user.is_active:
            raise Conflict(f"'{username}' is deactivated: nobody invites them")
        if not user.email:
            raise ValidationFailed.field("email", f"'{username}' has no e-mail address to send the invitation to")
        return audit_record(actor=actor, action=Action.USER_INVITED, object_type="user", object_key=username,
                            after={"email": user.email, "sign_in": "password" if get_setting("PASSWORD_LOGIN")
                                   else "single sign-on", "url": base})


def invitation_accept(*, actor: Actor, username: str, password: str) -> Any:
    """The invited person sets their password (``user.password_set``); the caller has checked the one-time
    token, which this change spends (the token is made from the password it replaces)."""
    with audited_atomic():
        user = get_user_model().objects.select_for_update().filter(username=username, is_active=True).first()
        if user is None:
            raise NotFound(f"user '{username}' does not exist")
        try:
            validate_password(password, user)
        except DjangoValidationError as exc:
            raise ValidationFailed.field("new_password1", " ".join(exc.messages)) from None
        had_password = user.has_usable_password()
        user.set_password(password)
        user.save(update_fields=["password"])
        audit_record(actor=actor, action=Action.USER_PASSWORD_SET, object_type="user", object_key=username,
                     before={"password": had_password}, after={"password": True, "via": "invitation"})
    return user
