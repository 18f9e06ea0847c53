"""Reads for the API and the UI, with their joins applied."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from common.errors import NotFound
from rollout.models import ApiToken, Environment, Flag, FlagState, SdkKey, Workload

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser, User


def environment_list() -> QuerySet[Environment]:
    return Environment.objects.order_by("order", "key")


def environment_get(key: str) -> Environment:
    env = Environment.objects.filter(key=key).first()
    if env is None:
        raise NotFound(f"environment '{key}' does not exist")
    return env


def workload_list() -> QuerySet[Workload]:
    return Workload.objects.order_by("key")


def workload_get(key: str) -> Workload:
    workload = Workload.objects.filter(key=key).first()
    if workload is None:
        raise NotFound(f"workload '{key}' does not exist")
    return workload


def flag_list() -> QuerySet[Flag]:
    return Flag.objects.select_related("workload").order_by("key")


def flag_get(key: str) -> Flag:
    flag = flag_list().filter(key=key).first()
    if flag is None:
        raise NotFound(f"flag '{key}' does not exist")
    return flag


def flag_state_list(flag: str) -> QuerySet[FlagState]:
    flag_get(flag)
    return (FlagState.objects.for_ruleset().select_related("environment").filter(flag__key=flag)
            .order_by("environment__order", "environment__key"))


def flag_state_get(flag: str, environment: str, *, for_update: bool = False) -> FlagState:
    """The one read of a flag state (its flag, workload and environment joined), with the one set of
    errors: ``NotFound`` naming the flag or the environment that does not exist. ``for_update``: locked
    for the rest of the caller's transaction (the services' writes)."""
    states = FlagState.objects.select_related("flag__workload", "environment")
    if for_update:
        states = states.select_for_update(of=("self",))
    else:
        states = states.prefetch_related("include_cohorts", "exclude_cohorts")
    state = states.filter(flag__key=flag, environment__key=environment).first()
    if state is None:
        if not Flag.objects.filter(key=flag).exists():
            raise NotFound(f"flag '{flag}' does not exist")
        raise NotFound(f"environment '{environment}' does not exist")
    return state


def flag_live_environments(flag: Flag) -> list[Environment]:
    """Environments where the flag's split decides something (enabled, legacy not retired)."""
    return list(Environment.objects.filter(flag_states__flag=flag, flag_states__enabled=True,
                                           flag_states__retired=False))


def sdk_key_list() -> QuerySet[SdkKey]:
    return SdkKey.objects.select_related("environment").order_by("-created_at", "prefix")


def sdk_key_get(prefix: str) -> SdkKey:
    key = sdk_key_list().filter(prefix=prefix).first()
    if key is None:
        raise NotFound(f"SDK key '{prefix}' does not exist")
    return key


def api_token_list(*, user: AbstractBaseUser | AnonymousUser | None = None) -> QuerySet[ApiToken]:
    """All tokens (``user=None``) or one user's (none for an anonymous one)."""
    qs = ApiToken.objects.select_related("user").order_by("-created_at", "prefix")
    if user is None:
        return qs
    return qs.filter(user_id=user.pk) if user.is_authenticated else qs.none()


def api_token_get(prefix: str, *, user: AbstractBaseUser | AnonymousUser | None = None) -> ApiToken:
    token = api_token_list(user=user).filter(prefix=prefix).first()
    if token is None:
        raise NotFound(f"API token '{prefix}' does not exist")
    return token


def user_list() -> QuerySet[User]:
    return get_user_model().objects.prefetch_related("groups").order_by("username")


def user_get(username: str) -> User:
    user = user_list().filter(username=username).first()
    if user is None:
        raise NotFound(f"user '{username}' does not exist")
    return user
