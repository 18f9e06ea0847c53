"""Real processes: the ASGI web server, and a Celery worker on Redis."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from common.actors import Actor
from rollout.access.keys import sdk_key_create


def _get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_web_process__login_page_and_sdk_ruleset__200_etag_then_304(server_process, envs):
    secret = sdk_key_create(actor=Actor.system("test"), environment="staging", name="it")[1]
    server_process.start()
    status, _, body = _get(f"{server_process.url}/login/")
    assert status == 200 and b"Sign in" in body
    status, _, body = _get(f"{server_process.url}/static/css/turnout.css")
    assert status == 200 and b"--accent" in body
    status, headers, body = _get(f"{server_process.url}/api/v1/sdk/ruleset", Authorization=f"Bearer {secret}")
    assert status == 200 and b'"schema":1' in body
    status, _, body = _get(f"{server_process.url}/api/v1/sdk/ruleset", Authorization=f"Bearer {secret}",
                           **{"If-None-Match": headers["etag"]})
    assert (status, body) == (304, b"")
    status, headers, body = _get(f"{server_process.url}/api/v1/sdk/ruleset", Authorization="Bearer sdk_nope")
    assert status == 401 and b'"error"' in body


@pytest.mark.services
def test_celery_worker__task_sent_through_redis__effect_visible_in_shared_cache(celery_worker_process, envs):
    from django.core.cache import cache

    from rollout.tasks import warm_ruleset

    env = envs["staging"]
    assert cache.get(f"ruleset:staging:{env.ruleset_version}") is None
    result = warm_ruleset.delay(env.pk)
    assert result.get(timeout=30) == env.ruleset_version
    # The worker built the document in its own process; this process reads it from Redis.
    assert b'"environment":"staging"' in cache.get(f"ruleset:staging:{env.ruleset_version}")
