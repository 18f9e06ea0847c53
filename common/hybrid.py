"""The base of our middleware: one class that Django runs on the sync and the async path alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

GetResponse = Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]


class HybridMiddleware:
    """Sync- and async-capable: under ASGI the chain stays on the event loop (no thread per request).

    A subclass's ``__call__`` returns ``self.__acall__(request)`` when ``self.is_async``.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)  # type: ignore[type-var]  # callable: every subclass defines __call__

    def respond(self, request: HttpRequest) -> HttpResponse:
        """The rest of the chain on the sync path, where ``get_response`` returns a response."""
        return cast(HttpResponse, self.get_response(request))

    async def arespond(self, request: HttpRequest) -> HttpResponse:
        """The rest of the chain on the async path, where ``get_response`` is a coroutine function."""
        return await cast(Awaitable[HttpResponse], self.get_response(request))
