"""Streaming a database-backed generator from a view, under WSGI and ASGI alike.

Under ASGI, Django consumes a synchronous iterator given to ``StreamingHttpResponse`` whole, in a
thread, before the first byte goes out (and warns "StreamingHttpResponse must consume synchronous
iterators"). ``streamed`` hands it over chunk by chunk instead, each ``next()`` in the request's
thread (the one holding its database connection).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest

T = TypeVar("T")


def _next_chunk(chunks: Iterator[T]) -> T | None:
    return next(chunks, None)


async def _async_chunks(chunks: Iterator[T]) -> AsyncIterator[T]:
    pull = sync_to_async(_next_chunk, thread_sensitive=True)
    while (chunk := await pull(chunks)) is not None:
        yield chunk


def streamed(request: Any, chunks: Iterator[T]) -> Iterator[T] | AsyncIterator[T]:
    """``chunks`` as ``StreamingHttpResponse`` should get it for this request (Django's or DRF's)."""
    django_request = getattr(request, "_request", request)
    return _async_chunks(chunks) if isinstance(django_request, ASGIRequest) else chunks
