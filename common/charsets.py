"""Charsets named by clients: only text encodings are ever used to decode what they send.

Python's codec registry also holds codecs that are not text encodings (``rot13`` turns str into
str, ``hex`` and ``bz2`` bytes into bytes). Django adopts any charset ``codecs.lookup`` knows
from a request's ``Content-Type``, so ``multipart/form-data; charset=rot13`` made every form
field decode with ``rot13`` and the request an HTML 500 (before the view, in the CSRF check).
``UnsupportedCharsetMiddleware`` answers such a request with a JSON 400 before anything reads
its body; ``text_encoding`` is the check, also used for a CSV body's or an uploaded file's
declared charset.
"""

from __future__ import annotations

import codecs
from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse

from common.errors import error_body

__all__ = ["UnsupportedCharsetMiddleware", "declared_charset", "text_encoding"]


def text_encoding(name: str) -> str | None:
    """The codec's canonical name when ``name`` is a text encoding Python has, else None."""
    try:
        "".encode(name)  # LookupError for unknown names and for codecs that are not text encodings
        return codecs.lookup(name).name
    except (LookupError, ValueError, TypeError):
        return None


def declared_charset(upload: object) -> str | None:
    """The charset an uploaded file's multipart part declares (Django keeps it as bytes), if any."""
    charset = getattr(upload, "charset", None)
    if isinstance(charset, bytes):
        charset = charset.decode("latin-1")
    return charset if isinstance(charset, str) and charset else None


def _refused(request: HttpRequest) -> HttpResponse | None:
    charset = getattr(request, "content_params", None) or {}
    name = charset.get("charset") if isinstance(charset, dict) else None
    if not name:
        return None
    try:
        codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return None  # a charset Python does not know: Django ignores it and reads the default
    if text_encoding(name) is not None:
        return None
    message = f'Unsupported charset "{name[:40]}" in the request Content-Type: it is not a text encoding.'
    return JsonResponse(error_body("parse_error", message, {"Content-Type": [message]}), status=400)


class UnsupportedCharsetMiddleware:
    """A request whose ``Content-Type`` names a codec that is not a text encoding gets a JSON 400."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):  # type: ignore[no-untyped-def]
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return _refused(request) or self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        return _refused(request) or await self.get_response(request)  # type: ignore[misc]
