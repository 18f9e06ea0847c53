"""The lean chain's Django middleware, with their hooks called on the event loop.

Django's ``MiddlewareMixin`` runs a middleware's ``process_request`` / ``process_response`` in a
thread (``sync_to_async``) when the chain is async, because in general they may block. These do not:
they read headers and settings and set headers, nothing else. Under load a thread hop is not just
its own cost: the event loop waits for the thread to get the interpreter lock, up to its switch
interval (5 ms) each time; two hooks of two middleware were four such waits per SDK request. Here
the hooks run on the loop, in the same order and with the same results (the tests compare the lean
chain's answers with the full chain's).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.middleware.common import CommonMiddleware as DjangoCommonMiddleware
from django.middleware.security import SecurityMiddleware as DjangoSecurityMiddleware

from common.errors import ServiceUnavailableMiddleware as _ServiceUnavailableMiddleware


class _OnTheLoop:
    get_response: Any

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response: HttpResponseBase | None = None
        process_request = getattr(self, "process_request", None)
        if process_request is not None:
            response = process_request(request)
        if response is None:
            response = await self.get_response(request)
        process_response = getattr(self, "process_response", None)
        if process_response is not None:
            response = process_response(request, response)
        assert response is not None
        return response


class SecurityMiddleware(_OnTheLoop, DjangoSecurityMiddleware):
    """Django's ``SecurityMiddleware`` (HSTS, nosniff, referrer policy, HTTPS redirect), on the loop."""


class CommonMiddleware(_OnTheLoop, DjangoCommonMiddleware):
    """Django's ``CommonMiddleware`` (``Content-Length``, slash redirects), on the loop."""


class ServiceUnavailableMiddleware(_OnTheLoop, _ServiceUnavailableMiddleware):
    """``common.errors.ServiceUnavailableMiddleware`` (it only has ``process_exception``)."""
