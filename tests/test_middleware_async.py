"""The middleware chain under ASGI: every middleware async-capable, so an async view runs on the
event loop without a trip through a thread; WhiteNoise's static files served as before."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.test import RequestFactory

from common.middleware import WhiteNoiseMiddleware


def _on_a_fresh_loop(scenario: Callable[[], Awaitable[Any]]) -> Any:
    """Run the coroutine on its own event loop in its own thread: independent of whatever loop an
    earlier test (or a session fixture) may have left running in this one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(scenario())).result(timeout=30)


def test_middleware_chain__asgi__no_sync_only_middleware(caplog):
    with caplog.at_level(logging.DEBUG, logger="django.request"):
        ASGIHandler()
    assert not [r for r in caplog.records if "adapted" in r.getMessage()]


@pytest.mark.django_db  # closing a response sends request_finished, which tidies database connections
def test_whitenoise_async__static_file__same_response_as_sync(settings):
    settings.WHITENOISE_USE_FINDERS = True
    request = RequestFactory().get("/static/css/turnout.css")

    async def app(request: Any) -> Any:
        raise AssertionError("a static file never reaches the view")

    async def serve() -> Any:
        return await WhiteNoiseMiddleware(app)(request)

    answer = _on_a_fresh_loop(serve)
    expected = WhiteNoiseMiddleware(lambda request: None)(request)
    assert answer.status_code == expected.status_code == 200
    assert dict(answer.items()) == dict(expected.items())
    assert b"".join(answer.streaming_content) == b"".join(expected.streaming_content)
    answer.close()
    expected.close()


def test_whitenoise_async__other_path__passed_on(settings):
    settings.WHITENOISE_USE_FINDERS = True
    sentinel = object()

    async def app(request: Any) -> Any:
        return sentinel

    async def serve() -> Any:
        return await WhiteNoiseMiddleware(app)(RequestFactory().get("/api/v1/sdk/evaluate"))

    assert _on_a_fresh_loop(serve) is sentinel
