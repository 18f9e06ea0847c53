"""The base of every management API view: who may call it, how fast, and how a write names its version."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import generics
from rest_framework.mixins import ListModelMixin
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from common.actors import Actor
from common.errors import NotFound, PreconditionRequired, ValidationFailed
from common.permissions import HasCapability
from common.schema import documented_query_parameters
from common.throttling import ApiThrottle

if TYPE_CHECKING:
    from rest_framework.permissions import _PermissionClass  # the stubs' name for a permission class or operand

_IF_MATCH = re.compile(r'^\s*(?:W/)?"?(\d{1,18})"?\s*$')
MAX_VERSION = 2**31 - 1
# Reads and deletes take all their input from the query string; writes' query parameters are their own business.
QUERY_CHECKED_METHODS = frozenset({"GET", "HEAD", "DELETE"})
_accepted_query: dict[tuple[type, str], frozenset[str]] = {}


def list_query_parameters(view: generics.GenericAPIView[Any]) -> set[str]:
    """A list view's filter, ordering and pagination parameters, as its backends and paginator name them."""
    names: set[str] = set()
    for backend_class in view.filter_backends:
        backend: Any = backend_class()
        if isinstance(backend, DjangoFilterBackend):
            filterset = backend.get_filterset_class(view)
            names.update(filterset.base_filters if filterset else getattr(view, "filterset_fields", None) or ())
        else:
            names.update(p["name"] for p in backend.get_schema_operation_parameters(view))
    if view.paginator is not None:
        names.update(p["name"] for p in view.paginator.get_schema_operation_parameters(view))
    return names


def accepted_query_parameters(view: APIView, method: str) -> frozenset[str]:
    """Every query parameter ``method`` on ``view`` takes: the documented ones, a list's filters and pages,
    and DRF's ``format``. The same names the OpenAPI document lists for the operation."""
    key = (type(view), method)
    if key not in _accepted_query:
        names = set(documented_query_parameters(view, method))
        if api_settings.URL_FORMAT_OVERRIDE:
            names.add(api_settings.URL_FORMAT_OVERRIDE)
        if method in {"GET", "HEAD"} and isinstance(view, ListModelMixin) and isinstance(view, generics.GenericAPIView):
            names |= list_query_parameters(view)
        _accepted_query[key] = frozenset(names)
    return _accepted_query[key]


if TYPE_CHECKING:  # the mixins below always sit in front of an APIView; this lets mypy check them as one
    _ViewBase = APIView
else:
    _ViewBase = object


class StrictQueryMixin(_ViewBase):
    """Reads and deletes refuse a query parameter they do not take, with a 400 naming it.

    Ignored, a misspelled filter (``?acton=flag_state.killed``) would list or export everything.
    Checked after authentication and permissions, so only a caller allowed in learns the names.
    """

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if request.method not in QUERY_CHECKED_METHODS:
            return
        accepted = accepted_query_parameters(self, request.method)
        unknown = [name for name in request.query_params if name not in accepted]
        if unknown:
            takes = ", ".join(sorted(accepted - {api_settings.URL_FORMAT_OVERRIDE})) or "none"
            message = f"unknown query parameter; this endpoint takes {takes}"
            raise ValidationFailed(f"{unknown[0]}: {message}", fields={name: [message] for name in unknown})


def object_id(value: str, what: str) -> int:
    """A path id: digits only (anything else is simply not found, in the one error body)."""
    if not value.isdigit() or len(value) > 18:
        raise NotFound(f"{what} {value!r} does not exist")
    return int(value)


# Token or session authentication, the one permission layer, the API throttle, strict query parameters.
class ManagementMixin(StrictQueryMixin):

    # Authentication is the settings' DEFAULT_AUTHENTICATION_CLASSES (APIView's default): an API token, then
    # the session. Session authentication enforces CSRF on writes; bearer tokens need none.
    permission_classes: Sequence[_PermissionClass] = [HasCapability]
    throttle_classes: Sequence[type[BaseThrottle]] = [ApiThrottle]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Path keys never hold control characters; answer 404 before any lookup sees one.
        for value in kwargs.values():
            if isinstance(value, str) and (len(value) > 255 or any(ord(ch) < 32 for ch in value)):
                raise NotFound("no such object")
        super().initial(request, *args, **kwargs)

    def actor(self) -> Actor:
        return Actor.from_request(self.request)


class ManagementView(ManagementMixin, APIView):
    pass


# A list with pagination, django-filter filters and ordering; subclasses add ``post`` for create.
class ManagementListView(ManagementMixin, generics.ListAPIView[Any]):
    pass


def requested_version(request: Request, body_version: int | None = None, *, required: bool = True) -> int | None:
    """The version a write is based on: the body's ``version``, else ``If-Match`` (``"3"``, ``W/"3"`` or ``3``)."""
    header = request.headers.get("If-Match")
    header_version: int | None = None
    if header is not None and header.strip():
        match = _IF_MATCH.match(header)
        if match is None:
            raise ValidationFailed.field("If-Match", 'must be a version number, like "3"')
        header_version = int(match.group(1))
    if body_version is not None and header_version is not None and body_version != header_version:
        raise ValidationFailed.field("version", f"is {body_version} but If-Match says {header_version}")
    version = body_version if body_version is not None else header_version
    if version is None:
        query = request.query_params.get("version")
        if query is not None:
            if not query.isdigit() or len(query) > 10:
                raise ValidationFailed.field("version", "must be a whole number")
            version = int(query)
    if version is None and required:
        raise PreconditionRequired(
            "this write must name the version it is based on: send the `version` you read "
            "(body field or If-Match header)"
        )
    return version


def etag(version: int) -> str:
    return f'"{version}"'


def query_reason(request: Request) -> str:
    """The optional ``reason`` query parameter of a DELETE (bodies on DELETE are not portable)."""
    reason = request.query_params.get("reason", "")
    if len(reason) > 1000 or "\x00" in reason:
        raise ValidationFailed.field("reason", "at most 1000 characters, no NUL")
    return reason
