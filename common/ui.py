"""Small helpers every UI view shares: the request type, permission checks, the acting user, service errors.

The environment switcher (which environment a page shows) is the rollout app's: ``rollout/switcher.py``."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails

from common.actors import Actor
from common.errors import AuditUnavailable, Conflict, ServiceError
from common.permissions import Capability, denial

# Forms that fail validation answer 422 with the form and its messages; the page's htmx config swaps
# 409 and 422 like a 200 (400 stays an error: django-htmx's debug helper shows it as a page).
INVALID = 422


class HtmxHttpRequest(HttpRequest):
    """A request that went through ``HtmxMiddleware`` (every UI view's): it carries ``request.htmx``."""

    htmx: HtmxDetails


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
