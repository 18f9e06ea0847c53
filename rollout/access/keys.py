"""SDK keys and API tokens: created (shown once), stored hashed, revoked — all audited."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from audit.names import Action
from audit.services import audit_record, audited_atomic
from common.actors import Actor
from common.errors import Conflict, NotFound, ValidationFailed
from common.redis import degrade
from common.secrets import new_secret
from rollout.access.auth import api_token_cache_key, forget_sdk_key, sdk_key_cache_key
from rollout.models import ApiToken, Environment, SdkKey
from rollout.policy import enforce


def _name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationFailed.field("name", "is required")
    if len(name) > 100:
        raise ValidationFailed.field("name", "is at most 100 characters")
    return name


def sdk_key_create(*, actor: Actor, environment: str, name: str) -> tuple[SdkKey, str]:
    """Returns the key row and the secret, which is never stored and cannot be shown again."""
    name = _name(name)
    enforce(actor, Action.SDK_KEY_CREATED)
    with audited_atomic():
        env = Environment.objects.filter(key=environment).first()
        if env is None:
            raise ValidationFailed.field("environment", f"environment '{environment}' does not exist")
        secret = new_secret("sdk")
        key = SdkKey.objects.create(environment=env, name=name, prefix=secret.prefix, secret_hash=secret.digest,
                                    created_by=actor.label)
        audit_record(actor=actor, action=Action.SDK_KEY_CREATED, object_type="sdk_key", object_key=key.prefix,
                     environment=env.key, after={"name": name, "prefix": key.prefix, "environment": env.key})
    return key, secret.value


def sdk_key_revoke(*, actor: Actor, prefix: str, reason: str = "") -> SdkKey:
    enforce(actor, Action.SDK_KEY_REVOKED)
    with audited_atomic():
        key = SdkKey.objects.select_for_update().select_related("environment").filter(prefix=prefix).first()
        if key is None:
            raise NotFound(f"SDK key '{prefix}' does not exist")
        if key.revoked_at is not None:
            raise Conflict(f"SDK key '{prefix}' is already revoked")
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        digest = key.secret_hash

        def forget() -> None:
            # Committed already: Redis away must not turn it into an error (the entry expires).
            degrade(lambda: cache.delete(sdk_key_cache_key(digest)), None, what="sdk_key")
            forget_sdk_key(digest)

        transaction.on_commit(forget)
        audit_record(actor=actor, action=Action.SDK_KEY_REVOKED, object_type="sdk_key", object_key=key.prefix,
                     environment=key.environment.key, before={"revoked": False}, after={"revoked": True},
                     reason=reason)
    return key


def api_token_create(*, actor: Actor, username: str, name: str) -> tuple[ApiToken, str]:
    name = _name(name)
    with audited_atomic():
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None or user.pk != actor.user_id:  # anyone may hold tokens of their own; others': admins
            enforce(actor, Action.API_TOKEN_CREATED)
        if user is None:
            raise ValidationFailed.field("username", f"no active user '{username}'")
        secret = new_secret("tok")
        token = ApiToken.objects.create(user=user, name=name, prefix=secret.prefix, secret_hash=secret.digest)
        audit_record(actor=actor, action=Action.API_TOKEN_CREATED, object_type="api_token", object_key=token.prefix,
                     after={"name": name, "prefix": token.prefix, "user": username})
    return token, secret.value


def api_token_revoke(*, actor: Actor, prefix: str, reason: str = "") -> ApiToken:
    with audited_atomic():
        token = ApiToken.objects.select_for_update().select_related("user").filter(prefix=prefix).first()
        if token is None:
            raise NotFound(f"API token '{prefix}' does not exist")
        if token.user_id != actor.user_id:  # anyone may revoke their own tokens; others': admins
            enforce(actor, Action.API_TOKEN_REVOKED)
        if token.revoked_at is not None:
            raise Conflict(f"API token '{prefix}' is already revoked")
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        digest = token.secret_hash
        transaction.on_commit(lambda: degrade(lambda: cache.delete(api_token_cache_key(digest)), None,
                                              what="api_token"))
        audit_record(actor=actor, action=Action.API_TOKEN_REVOKED, object_type="api_token", object_key=token.prefix,
                     before={"revoked": False}, after={"revoked": True, "user": token.user.get_username()},
                     reason=reason)
    return token
