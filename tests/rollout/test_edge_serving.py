"""Edge-speed serving: the lean ASGI chain of the SDK routes, and the ruleset endpoint's fast paths
(constant-cost 304, gzip per version, keys checked in the process).

The lean-chain tests call the real ``config.asgi.application`` (Django's ASGI handler, with the SDK
routes on the lean chain) through httpx's ASGI transport. Django's handler runs each request's
database work in a thread of its own, so those tests commit their data (``transaction=True``).
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync

from common import redis as turnout_redis
from common.actors import Actor
from common.secrets import digest
from rollout.access import auth
from rollout.access.keys import sdk_key_create, sdk_key_revoke
from rollout.delivery import ruleset as ruleset_module
from rollout.delivery import serving
from rollout.models import SdkKey
from rollout.services.flags import flag_state_update

pytestmark = pytest.mark.django_db
URL = "/api/v1/sdk/ruleset"


@pytest.fixture
def key(flag, actor):  # type: ignore[no-untyped-def]
    flag_state_update(actor=actor, flag=flag.key, environment="staging", version=1, enabled=True,
                      percentage_value=25, compare_percentage=10, overrides={"user-1": "parallel"})
    return sdk_key_create(actor=actor, environment="staging", name="svc")[1]


@pytest.fixture(params=["redis", "embedded"])
def mode(request, settings):  # type: ignore[no-untyped-def]
    settings.REDIS_URL = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return request.param


@pytest.fixture
def asgi() -> Iterator[Any]:
    """``asgi(method, path, **kwargs)`` → an httpx response from ``config.asgi.application``."""
    from config.asgi import application

    def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def run() -> httpx.Response:
            try:
                transport = httpx.ASGITransport(app=application)
                async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                    return await client.request(method, path, **kwargs)
            finally:
                await turnout_redis.close_async_redis()

        return async_to_sync(run)()

    yield call


def _auth(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


# -- the lean chain ---------------------------------------------------------------------------------


def test_lean_chain__sdk_routes__only_the_sdk_middleware(settings):
    from config.asgi import application  # noqa: F401  (the handlers are made on import)
    from rollout.delivery.asgi import LeanASGIHandler

    handler = LeanASGIHandler()
    chain = []
    layer: Any = handler._middleware_chain
    while layer is not None:
        inner = getattr(layer, "__wrapped__", layer)
        if type(inner).__module__.startswith(("django.core.handlers", "functools", "builtins")):
            layer = getattr(inner, "get_response", None)
            if layer is None:
                break
            continue
        chain.append(f"{type(inner).__module__}.{type(inner).__name__}")
        layer = getattr(inner, "get_response", None)
    assert chain == settings.SDK_MIDDLEWARE
    assert settings.MIDDLEWARE != settings.SDK_MIDDLEWARE  # the full chain is left as it was


@pytest.mark.django_db(transaction=True)
def test_lean_chain__ruleset__same_answer_as_the_full_chain(asgi, client, key, mode):
    full = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}")
    lean = asgi("GET", URL, headers=_auth(key, **{"Accept-Encoding": "identity"}))
    assert lean.status_code == full.status_code == 200
    assert lean.content == full.content
    assert lean.headers["etag"] == full["ETag"]
    assert lean.headers["x-request-id"]  # the request id stays
    assert lean.headers["content-length"] == str(len(lean.content))  # clients check a body against it
    assert "set-cookie" not in lean.headers and "content-security-policy" not in lean.headers
    again = asgi("GET", URL, headers=_auth(key, **{"If-None-Match": lean.headers["etag"], "Accept-Encoding": "identity"}))
    assert again.status_code == 304 and again.content == b""


@pytest.mark.django_db(transaction=True)
def test_lean_chain__ui__keeps_the_full_chain(asgi):
    response = asgi("GET", "/login/")
    assert response.status_code == 200
    assert "content-security-policy" in response.headers
    assert "x-frame-options" in response.headers


@pytest.mark.django_db(transaction=True)
def test_lean_chain__bad_key__401_error_body(asgi, key, mode):
    for headers in ({}, {"Authorization": "Bearer sdk_nope"}):
        response = asgi("GET", URL, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "authentication_failed"
        assert response.headers["www-authenticate"] == 'Bearer realm="sdk"'


@pytest.mark.django_db(transaction=True)
def test_lean_chain__refused_charset__400_before_the_body(asgi, key):
    response = asgi("POST", "/api/v1/sdk/evaluate", content=b'{"flag":"invoice-engine","context":{}}',
                    headers=_auth(key, **{"Content-Type": "application/json; charset=rot13"}))
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.django_db(transaction=True)
def test_lean_chain__over_the_rate__429(asgi, key, mode, settings):
    base = dict(settings.REST_FRAMEWORK)
    base["DEFAULT_THROTTLE_RATES"] = {**base["DEFAULT_THROTTLE_RATES"], "sdk": "3/min"}
    settings.REST_FRAMEWORK = base
    statuses = [asgi("GET", URL, headers=_auth(key)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


@pytest.mark.django_db(transaction=True)
def test_lean_chain__wrong_environment__never_sees_it(asgi, key, flag, actor):
    flag_state_update(actor=actor, flag=flag.key, environment="production", version=None, enabled=True,
                      percentage_value=77)
    prod = sdk_key_create(actor=actor, environment="production", name="prod")[1]
    staging = asgi("GET", URL, headers=_auth(key)).json()
    production = asgi("GET", URL, headers=_auth(prod)).json()
    assert staging["environment"] == "staging" and production["environment"] == "production"
    assert staging["flags"]["invoice-engine"]["percentage"] == 25.0
    assert production["flags"]["invoice-engine"]["percentage"] == 77.0


# -- the ruleset endpoint's fast paths ------------------------------------------------------------


def test_ruleset_304__never_reads_the_body(client, key, mode, monkeypatch):
    """The ETag is known without the document: a matching If-None-Match reads neither the body nor
    the database, and hashes nothing (the cost does not grow with the document)."""
    etag = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}")["ETag"]
    serving.clear_served()  # as a process meeting the version for the first time

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a 304 read the document")

    monkeypatch.setattr(ruleset_module, "get_ruleset", forbidden)
    monkeypatch.setattr(serving, "get_ruleset", forbidden)
    monkeypatch.setattr(ruleset_module, "make_etag", forbidden)
    for _ in range(3):
        response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_IF_NONE_MATCH=etag)
        assert response.status_code == 304
        assert response["ETag"] == etag


@pytest.mark.parametrize("header", ['"nope"', "garbage, ,,", 'W/"x", "y"', '"' + "x" * 5000 + '"', "W/", ","])
def test_ruleset__malformed_or_foreign_etag__full_document(client, key, header):
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_IF_NONE_MATCH=header)
    assert response.status_code == 200
    assert json.loads(response.content)["environment"] == "staging"


def test_ruleset__weak_and_listed_etags__304(client, key):
    etag = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}")["ETag"]
    for header in (f"W/{etag}", f'"other", {etag}', "*"):
        assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_IF_NONE_MATCH=header).status_code == 304


@pytest.mark.parametrize("accept", ["gzip", "gzip, deflate, br", "br;q=1.0, gzip;q=0.5", "*"])
def test_ruleset__gzip__same_document_after_decoding(client, key, mode, accept):
    plain = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}")
    packed = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_ACCEPT_ENCODING=accept)
    assert packed.status_code == 200
    assert packed["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in packed["Vary"] and "Accept-Encoding" in plain["Vary"]
    assert gzip.decompress(packed.content) == plain.content
    assert packed["ETag"] != plain["ETag"] and packed["ETag"].startswith(plain["ETag"][:-1])
    # Either representation's ETag of the current version answers 304.
    for etag in (plain["ETag"], packed["ETag"]):
        again = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_ACCEPT_ENCODING=accept,
                           HTTP_IF_NONE_MATCH=etag)
        assert again.status_code == 304


@pytest.mark.parametrize("accept", ["", "identity", "gzip;q=0", "deflate", "*;q=0", "*, gzip;q=0"])
def test_ruleset__gzip_not_accepted__plain(client, key, accept):
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_ACCEPT_ENCODING=accept)
    assert response.status_code == 200
    assert not response.has_header("Content-Encoding")
    assert json.loads(response.content)["environment"] == "staging"


def test_ruleset__gzip__compressed_once_per_version(client, key, monkeypatch, redis_url, settings):
    settings.REDIS_URL = redis_url
    client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}")  # builds: body, ETag and gzip into the cache
    calls = []
    real = ruleset_module.compress
    monkeypatch.setattr(ruleset_module, "compress", lambda body: calls.append(1) or real(body))
    for _ in range(3):
        serving.clear_served()  # a new process each time: the compressed bytes come from the cache
        assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}",
                          HTTP_ACCEPT_ENCODING="gzip")["Content-Encoding"] == "gzip"
    assert calls == []


def test_ruleset__revoked_elsewhere__refused_within_the_local_staleness(
        client, key, mode, settings, django_capture_on_commit_callbacks):
    """A key revoked by another process stops working here within ``SDK_KEY_LOCAL_SECONDS`` (this
    process's copy of the lookup, the documented staleness); revoked here, at once."""
    settings.TURNOUT_SDK_KEY_LOCAL_SECONDS = 1
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200
    row = SdkKey.objects.get(secret_hash=digest(key))
    # Revoked "elsewhere": the row and the shared cache change on commit; this process's own copy
    # of the lookup is put back as another process would still hold it.
    kept = dict(auth._local_keys)
    with django_capture_on_commit_callbacks(execute=True):
        sdk_key_revoke(actor=Actor.system("test"), prefix=row.prefix)
    auth._local_keys.update(kept)
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200  # the local copy, < 1 s old
    time.sleep(1.05)
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_ruleset__revoked_here__refused_at_once(client, key, settings, django_capture_on_commit_callbacks):
    settings.TURNOUT_SDK_KEY_LOCAL_SECONDS = 60
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        sdk_key_revoke(actor=Actor.system("test"), prefix=SdkKey.objects.get(secret_hash=digest(key)).prefix)
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 401
