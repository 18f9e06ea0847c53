"""One error vocabulary for services, and one JSON error body for every API.

Every API error looks like ``{"error": {"code": ..., "message": ..., "fields": {...}}}``.
Services raise the ``ServiceError`` subclasses below; views never build error bodies by hand.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.deprecation import MiddlewareMixin
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger("turnout.errors")


class ServiceError(Exception):
    status_code: int = status.HTTP_400_BAD_REQUEST
    code = "invalid"

    def __init__(self, message: str, *, fields: dict[str, list[str]] | None = None, **extra: Any):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        self.extra = extra

    def as_body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.fields, **self.extra)


class ValidationFailed(ServiceError):
    """Input that breaks a rule; ``fields`` names each bad field."""

    @classmethod
    def field(cls, name: str, message: str) -> ValidationFailed:
        return cls(f"{name}: {message}", fields={name: [message]})

    @classmethod
    def from_django(cls, exc: DjangoValidationError) -> ValidationFailed:
        if hasattr(exc, "error_dict"):
            fields = {name: [str(m) for e in errors for m in e.messages] for name, errors in exc.error_dict.items()}
            first = next(iter(fields.items()))
            label = first[0] if first[0] != "__all__" else "invalid"
            return cls(f"{label}: {first[1][0]}" if label != "invalid" else first[1][0], fields=fields)
        return cls("; ".join(exc.messages))


class NotFound(ServiceError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(ServiceError):
    """A write based on a stale version, or one that clashes with the current state."""

    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class PreconditionRequired(ServiceError):
    """A write that must name the version it read (body ``version`` or ``If-Match``) but did not."""

    status_code = status.HTTP_428_PRECONDITION_REQUIRED
    code = "version_required"


class Forbidden(ServiceError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "forbidden"


class AuditUnavailable(ServiceError):
    """No change can be recorded, so none is made: the audit chain cannot take its next event."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "audit_unavailable"


UNAVAILABLE_MESSAGES = {
    "redis_unavailable": "Redis is unavailable; this request needs it. Try again shortly.",
    "broker_unavailable": "The task broker is unavailable; this request needs it. Try again shortly.",
}
RETRY_AFTER_SECONDS = 5


def service_unavailable(exc: BaseException) -> str | None:
    """The code naming the service behind an exception, or None: ``redis_unavailable`` for Redis
    (the cache, pub/sub, counters — or Celery's broker when it is Redis, which kombu reports as its
    own ``OperationalError``), ``broker_unavailable`` for another broker."""
    import redis
    from django.conf import settings
    from kombu.exceptions import OperationalError

    if isinstance(exc, redis.RedisError):
        return "redis_unavailable"
    if isinstance(exc, OperationalError):
        return "redis_unavailable" if getattr(settings, "REDIS_URL", None) else "broker_unavailable"
    return None


def error_body(code: str, message: str, fields: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message, "fields": fields or {}}
    body.update(extra)
    return {"error": body}


def json_error(status_code: int, code: str, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse(error_body(code, message, **extra), status=status_code)


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "non_field_errors":  # the object's own error: named by its path (the body's: __all__)
                name = prefix or "__all__"
            out.update(_flatten(value, name))
    elif isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            out[prefix or "__all__"] = [str(item) for item in detail]
        else:
            for index, item in enumerate(detail):
                out.update(_flatten(item, f"{prefix}[{index}]"))
    else:
        out[prefix or "__all__"] = [str(detail)]
    return out


_DRF_CODES = {
    drf_exceptions.NotAuthenticated: "not_authenticated",
    drf_exceptions.AuthenticationFailed: "authentication_failed",
    drf_exceptions.PermissionDenied: "forbidden",
    drf_exceptions.NotFound: "not_found",
    drf_exceptions.MethodNotAllowed: "method_not_allowed",
    drf_exceptions.NotAcceptable: "not_acceptable",
    drf_exceptions.UnsupportedMediaType: "unsupported_media_type",
    drf_exceptions.Throttled: "throttled",
    drf_exceptions.ParseError: "parse_error",
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, then our one error body for everything it knows and everything services raise."""
    if isinstance(exc, ServiceError):
        return Response(exc.as_body(), status=exc.status_code)
    code = service_unavailable(exc)
    if code:
        return Response(error_body(code, UNAVAILABLE_MESSAGES[code]),
                        status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    if isinstance(exc, DjangoValidationError):
        err = ValidationFailed.from_django(exc)
        return Response(err.as_body(), status=err.status_code)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, drf_exceptions.ValidationError):
        fields = _flatten(exc.detail)
        name, messages = next(iter(fields.items()), ("__all__", ["Invalid input."]))
        message = messages[0] if name == "__all__" else f"{name}: {messages[0]}"
        response.data = error_body("invalid", message, fields)
    else:
        code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
        detail = getattr(exc, "detail", str(exc))
        extra: dict[str, Any] = {}
        wait = getattr(exc, "wait", None)
        if isinstance(exc, drf_exceptions.Throttled) and wait is not None:
            extra["retry_after"] = max(1, math.ceil(wait))
            response["Retry-After"] = str(extra["retry_after"])  # whole seconds, the same as the body says
        response.data = error_body(code, str(detail), **extra)
    return response


class ServiceUnavailableMiddleware(MiddlewareMixin):
    """A view outside DRF (the lean SDK views, OFREP, the UI) that fails because Redis is away answers
    503 naming it — JSON for the APIs, a page for the UI — never a 500. DRF views get the same from
    ``exception_handler``."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        code = service_unavailable(exception)
        if code is None:
            return None
        logger.warning("http.service_unavailable", extra={"code": code, "error": type(exception).__name__})
        response: HttpResponse
        if request.path.startswith(("/api/", "/ofrep/")) or "json" in request.headers.get("Accept", ""):
            response = json_error(503, code, UNAVAILABLE_MESSAGES[code])
        else:
            response = render(request, "503.html", {"code": code}, status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
