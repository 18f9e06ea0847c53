"""The base of our middleware: one class that Django runs on the sync and the async path alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

GetResponse = Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]


class HybridMiddleware:
    """Sync- and async-capable: under ASGI the chain stays on the event loop (no thread per request).

    A subclass's ``__call__`` returns ``self.__acall__(request)`` when ``iscoroutinefunction(self)``.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)  # type: ignore[type-var]  # callable: every subclass defines __call__
