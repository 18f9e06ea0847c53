"""Small helpers every UI view shares: the current environment, permission checks, service errors."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails

from common.actors import Actor
from common.errors import AuditUnavailable, Conflict, ServiceError
from common.permissions import Capability, denial

SESSION_ENV = "turnout_environment"
# Forms that fail validation answer 422 with the form and its messages; the page's htmx config swaps
# 409 and 422 like a 200 (400 stays an error: django-htmx's debug helper shows it as a page).
INVALID = 422


class HtmxHttpRequest(HttpRequest):
    """A request that went through ``HtmxMiddleware`` (every UI view's): it carries ``request.htmx``."""

    htmx: HtmxDetails


def environments() -> list[Any]:
    from rollout.models import Environment

    return list(Environment.objects.all())


def current_environment(request: HttpRequest, envs: list[Any] | None = None) -> Any | None:
    """The environment picked in the switcher (kept in the session), else the first one."""
    envs = environments() if envs is None else envs
    wanted = request.session.get(SESSION_ENV) if hasattr(request, "session") else None
    return next((e for e in envs if e.key == wanted), envs[0] if envs else None)


def require(request: HttpRequest, capability: Capability, *, environment: Any = None) -> None:
    """403 unless the signed-in user has ``capability``: the API's permission layer, and its words."""
    reason = denial(request.user, capability, environment=environment)
    if reason is not None:
        raise PermissionDenied(reason)


def actor(request: HttpRequest) -> Actor:
    return Actor.for_user(request.user)


def error_status(exc: ServiceError) -> int:
    """The status an htmx form swap gets for a service error: 409 for a conflict, 503 when the audit log
    cannot record the change (nothing was made; not the user's input), else 422."""
    if isinstance(exc, AuditUnavailable):
        return exc.status_code
    return 409 if isinstance(exc, Conflict) else INVALID


def field_errors(exc: ServiceError) -> dict[str, list[str]]:
    """Service errors as form errors: per field, plus ``__all__`` for the message itself."""
    fields = {name: list(messages) for name, messages in exc.fields.items()}
    if not fields:
        fields["__all__"] = [exc.message]
    return fields
