"""Turnout's own settings, with their defaults in one place (read through ``get_setting``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Seconds a built ruleset stays cached (it is keyed by version, so this only bounds memory).
    "RULESET_CACHE_TIMEOUT": 24 * 3600,
    # Seconds an SDK key lookup is cached (revocation clears it at once on commit).
    "SDK_KEY_CACHE_TIMEOUT": 60,
    # Minimum seconds between "last used" writes for one key or token.
    "KEY_LAST_USED_RESOLUTION": 60,
    # Fail instead of skipping tests that need PostgreSQL / Redis / a Celery worker.
    "REQUIRE_SERVICES": False,
}


def get_setting(name: str) -> Any:
    return getattr(settings, f"TURNOUT_{name}", DEFAULTS[name])
