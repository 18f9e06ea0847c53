"""The SDK suite runs with Django absent: the server suite's autouse fixtures do nothing here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    yield


@pytest.fixture(autouse=True)
def _eager_celery() -> Iterator[None]:
    yield


@pytest.fixture(autouse=True)
def _allow_flush_of_audit_table() -> Iterator[None]:
    yield
