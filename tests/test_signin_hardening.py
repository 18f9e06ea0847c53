"""Sign-in hardening: client addresses, sign-in throttles, the failed sign-in audit flood, and the
throttles' decision when the cache (Redis) is down or hung.

The fault tests start their own redis-server on a free loopback port and kill (SIGKILL) or hang
(SIGSTOP) that one; the web server tests start the real servers the Procfiles run.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.utils import timezone

from tests.conftest import ROOT, free_port, service_missing, subprocess_env, wait_for_port

WRONG = {"password": "not-the-password"}


@pytest.fixture
def rates(settings: Any):  # type: ignore[no-untyped-def]
    def set_rates(**rates: str) -> None:
        base = dict(settings.REST_FRAMEWORK)
        base["DEFAULT_THROTTLE_RATES"] = {**base["DEFAULT_THROTTLE_RATES"], **rates}
        settings.REST_FRAMEWORK = base

    return set_rates


@pytest.fixture
def fast_hasher(settings: Any) -> None:
    """Failed sign-ins still hash a password (timing safety); a fast hasher keeps floods quick."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _sign_in(client: Any, username: str, address: str = "127.0.0.1", forwarded: str | None = None) -> Any:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return client.post("/login/", {"username": username, **WRONG}, REMOTE_ADDR=address, headers=headers)


# --- client address and the sign-in throttles ------------------------------------------------------------


@pytest.mark.django_db
def test_login_throttle__x_forwarded_for_rotated__still_throttled_per_connection_address(rates, client, fast_hasher):
    rates(auth="3/min", auth_username="1000/min")
    statuses = [_sign_in(client, "dana", forwarded=f"198.51.100.{n}").status_code for n in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


@pytest.mark.django_db
def test_login_throttle__addresses_rotated_for_one_username__throttled_per_username(rates, client, fast_hasher):
    rates(auth="1000/min", auth_username="3/min")
    statuses = [_sign_in(client, "dana", address=f"198.51.100.{n}").status_code for n in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    assert _sign_in(client, "DANA ", address="198.51.100.99").status_code == 429  # the same account
    assert _sign_in(client, "erin", address="198.51.100.99").status_code == 200  # another one is not


@pytest.mark.django_db
def test_login_throttle__right_password__not_counted_against_the_username(rates, client, fast_hasher):
    from common.actors import Actor
    from rollout.access.users import user_create

    user_create(actor=Actor.system("test"), username="dana", password="correct horse battery 9", roles=["viewer"])
    rates(auth="1000/min", auth_username="2/min")
    for _ in range(3):
        response = client.post("/login/", {"username": "dana", "password": "correct horse battery 9"})
        assert response.status_code == 302
        client.post("/logout/")


@pytest.mark.django_db
def test_client_address__one_trusted_proxy__the_entry_that_proxy_appended(rates, client, settings, fast_hasher,
                                                                         audit_events):
    settings.TURNOUT_TRUSTED_PROXIES = 1
    rates(auth="2/min", auth_username="1000/min")
    # The proxy (127.0.0.1) appends the address it saw; what the client sent before it is not trusted.
    statuses = [_sign_in(client, f"user{n}", forwarded=f"10.9.9.{n}, 203.0.113.7").status_code for n in range(3)]
    assert statuses == [200, 200, 429]
    assert _sign_in(client, "user9", forwarded="10.9.9.9, 203.0.113.8").status_code == 200  # another client
    assert [e.after["remote_addr"] for e in audit_events()] == ["203.0.113.7", "203.0.113.7", "203.0.113.8"]


@pytest.mark.django_db
def test_admin_login__password_posted__refused_never_checked_and_get_goes_to_the_throttled_login(
        client, audit_events):
    assert client.post("/admin/login/?next=/admin/", {"username": "root", **WRONG}).status_code == 405
    assert audit_events() == []  # no password was checked
    response = client.get("/admin/login/?next=/admin/")
    assert (response.status_code, response["Location"]) == (302, "/login/?next=/admin/")
    assert client.get("/admin/").status_code == 302  # the admin sends signed-out people there too


@pytest.mark.django_db
def test_admin_login__staff_signed_in_through_the_app__admin_opens(client):
    from common.actors import Actor
    from rollout.access.users import user_create

    user_create(actor=Actor.system("test"), username="ada", password="correct horse battery 9", roles=["admin"])
    response = client.post("/login/?next=/admin/", {"username": "ada", "password": "correct horse battery 9",
                                                    "next": "/admin/"})
    assert (response.status_code, response["Location"]) == (302, "/admin/")


# --- the web servers agree: no forwarded header is trusted unless TURNOUT_TRUSTED_PROXIES says so ---------


def _procfile_command(name: str, procfile: str) -> str:
    for line in (ROOT / procfile).read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} line in {procfile}")


def _rotating_sign_ins(url: str, count: int) -> list[int]:
    """Sign-in attempts through a real server, each claiming another X-Forwarded-For."""
    statuses = []
    with httpx.Client(base_url=url, timeout=30) as http:
        page = http.get("/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, page.text[:500]
        for n in range(count):
            response = http.post("/login/", data={"username": f"user{n}", **WRONG,
                                                  "csrfmiddlewaretoken": token.group(1)},
                                 headers={"X-Forwarded-For": f"198.51.100.{n}", "Referer": f"{url}/login/"})
            statuses.append(response.status_code)
    return statuses


def _run_server(command: str, port: int, **env: str) -> Iterator[str]:
    from django.core.cache import cache

    cache.clear()
    proc = subprocess.Popen(["/bin/sh", "-c", f"exec {command}"], cwd=ROOT, start_new_session=True,
                            env=subprocess_env(TURNOUT_THROTTLE_AUTH="2/min", WEB_CONCURRENCY="1",
                                               WEB_GRACEFUL_TIMEOUT="1", BIND=f"127.0.0.1:{port}", **env))
    try:
        wait_for_port(port, proc, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def gunicorn_web(transactional_db: Any) -> Iterator[str]:
    """The production ``web`` process (Procfile: gunicorn with config/gunicorn.py), unmodified."""
    if shutil.which("gunicorn", path=os.path.dirname(sys.executable)) is None:
        pytest.fail("gunicorn is a dependency of the server and must be installed")
    command = _procfile_command("web", "Procfile").replace("gunicorn", f"{os.path.dirname(sys.executable)}/gunicorn", 1)
    yield from _run_server(command, free_port())


@pytest.fixture
def dev_web(transactional_db: Any) -> Iterator[str]:
    """The development ``web`` process (Procfile.dev: uvicorn), on a free port."""
    port = free_port()
    command = _procfile_command("web", "Procfile.dev")
    command = command.replace(".venv/bin/uvicorn", shlex.quote(f"{os.path.dirname(sys.executable)}/uvicorn"))
    yield from _run_server(command, port, PORT=str(port), HOST="127.0.0.1")


def test_gunicorn_web__x_forwarded_for_rotated_from_this_host__throttled(gunicorn_web):
    assert _rotating_sign_ins(gunicorn_web, 4) == [200, 200, 429, 429]


def test_uvicorn_dev_web__x_forwarded_for_rotated_from_this_host__throttled(dev_web):
    assert _rotating_sign_ins(dev_web, 4) == [200, 200, 429, 429]


def test_gunicorn_config__trusted_proxies_set__forwarded_headers_from_the_listed_proxies_only(monkeypatch):
    import importlib

    import config.gunicorn

    monkeypatch.delenv("TURNOUT_TRUSTED_PROXIES", raising=False)
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.5")
    assert importlib.reload(config.gunicorn).forwarded_allow_ips == ""
    monkeypatch.setenv("TURNOUT_TRUSTED_PROXIES", "1")
    assert importlib.reload(config.gunicorn).forwarded_allow_ips == "10.0.0.5"
    monkeypatch.delenv("FORWARDED_ALLOW_IPS")
    assert importlib.reload(config.gunicorn).forwarded_allow_ips == "127.0.0.1"


# --- the audit flood --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_failed_signins__flood_of_rotating_usernames_and_addresses__bounded_events_with_the_whole_count(
        rates, client, settings, fast_hasher, audit_events):
    settings.TURNOUT_LOGIN_AUDIT_INDIVIDUAL = 2
    settings.TURNOUT_LOGIN_AUDIT_INDIVIDUAL_MAX = 5
    rates(auth="1000/min", auth_username="1000/min")
    flood = 60
    for n in range(flood):
        assert _sign_in(client, f"user{n % 7}", address=f"198.51.100.{n % 11}").status_code == 200
    during = audit_events()
    assert [e.action for e in during] == ["auth.login_failed"] * 5

    # The window ends; the periodic task (or the next sign-in event) closes it.
    from audit.services import auth_login_failed_burst_recorded
    from common.actors import Actor

    later = timezone.now() + timedelta(seconds=settings.TURNOUT_LOGIN_AUDIT_WINDOW + 1)
    auth_login_failed_burst_recorded(actor=Actor.anonymous(), now=later)
    events = audit_events()
    assert [e.action for e in events] == ["auth.login_failed"] * 5 + ["auth.login_failed_burst"]
    burst = events[-1].after
    assert (burst["count"], burst["total"], burst["recorded_individually"]) == (flood - 5, flood, 5)
    assert sum(burst["usernames"].values()) + burst["other_usernames"] == flood
    assert burst["usernames"]["user0"] == 9 and burst["addresses"]["198.51.100.0"] == 6
    assert burst["window_seconds"] == settings.TURNOUT_LOGIN_AUDIT_WINDOW
    assert auth_login_failed_burst_recorded(actor=Actor.anonymous(), now=later) == []  # counted once


@pytest.mark.django_db
def test_failed_signins__next_failure_after_the_window__closes_the_burst_first(settings, audit_events):
    from audit.services import auth_login_failed_recorded
    from common.actors import Actor

    settings.TURNOUT_LOGIN_AUDIT_INDIVIDUAL = 1
    earlier = timezone.now() - timedelta(seconds=settings.TURNOUT_LOGIN_AUDIT_WINDOW + 1)
    for _ in range(4):
        auth_login_failed_recorded(actor=Actor.anonymous(), username="dana", remote_addr="192.0.2.1", now=earlier)
    assert [e.action for e in audit_events()] == ["auth.login_failed"]
    from django.test import Client

    Client().post("/login/", {"username": "dana", **WRONG})
    events = audit_events()
    assert [e.action for e in events] == ["auth.login_failed", "auth.login_failed_burst", "auth.login_failed"]
    assert events[1].after["count"] == 3


@pytest.mark.django_db
def test_failed_signins__many_usernames__tallies_bounded_and_the_rest_counted_as_other(settings, audit_events):
    from audit.models import LoginFailureWindow
    from audit.services import LOGIN_FAILURE_TALLY_KEYS, auth_login_failed_recorded
    from common.actors import Actor

    for n in range(LOGIN_FAILURE_TALLY_KEYS + 30):
        auth_login_failed_recorded(actor=Actor.anonymous(), username=f"u{n}", remote_addr="192.0.2.1")
    window = LoginFailureWindow.objects.get()
    assert len(window.usernames) == LOGIN_FAILURE_TALLY_KEYS and window.other_usernames == 30
    assert window.total == LOGIN_FAILURE_TALLY_KEYS + 30
    assert len(audit_events()) == settings.TURNOUT_LOGIN_AUDIT_INDIVIDUAL  # one address: its first few


# --- the cache down or hung: open for signed-in people, closed for anonymous sign-in attempts -------------


class OwnRedis:
    """A redis-server of this test's own, on a free loopback port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            service_missing("needs redis-server on PATH")
        self.port = free_port()
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)  # type: ignore[arg-type]
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def hang(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def own_redis(settings: Any) -> Iterator[OwnRedis]:
    """The cache on a Redis of our own, with a short client timeout (a hung server answers nothing)."""
    redis = OwnRedis()
    settings.CACHES = {"default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis.url, "KEY_PREFIX": "turnout",
        "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}}}
    yield redis
    redis.close()


def _within_deadline(call: Any, deadline: float = 30.0) -> Any:
    """Run ``call`` in a thread; a hang past ``deadline`` fails the test (a guard, not a timing)."""
    result: dict[str, Any] = {}

    def run() -> None:
        from django.db import connections

        try:
            result["value"] = call()
        except BaseException as exc:  # the test thread re-raises it
            result["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(deadline)
    assert not thread.is_alive(), f"still waiting on the cache after {deadline}s"
    if "error" in result:
        raise result["error"]
    return result["value"]


def _assert_cache_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "redis_unavailable"


@pytest.fixture
def signed_in(transactional_db: Any) -> Any:
    from django.test import Client

    from common.actors import Actor
    from rollout.access.users import user_create

    client = Client(raise_request_exception=False)
    client.force_login(user_create(actor=Actor.system("test"), username="eddie", password=None, roles=["editor"]))
    return client


@pytest.mark.parametrize("fault", ["kill", "hang"])
def test_signin__cache_down_or_hung__refused_with_json_503_naming_the_cache(own_redis, fault, transactional_db,
                                                                           audit_events):
    from django.test import Client

    client = Client(raise_request_exception=False)
    assert _sign_in(client, "dana").status_code == 200  # the cache answers: counted
    getattr(own_redis, fault)()
    _assert_cache_unavailable(_within_deadline(lambda: _sign_in(client, "dana")))
    assert [e.action for e in audit_events()] == ["auth.login_failed"]  # the refused one never checked


@pytest.mark.parametrize("fault", ["kill", "hang"])
def test_api__cache_down_or_hung__signed_in_staff_not_throttled(own_redis, fault, signed_in, rates):
    rates(api="1000/min")
    assert signed_in.get("/api/v1/environments/").status_code == 200
    getattr(own_redis, fault)()
    response = _within_deadline(lambda: signed_in.get("/api/v1/environments/"))
    assert response.status_code == 200, response.content[:300]


@pytest.mark.parametrize("fault", ["kill", "hang"])
def test_token_issuing__cache_down_or_hung__signed_in_staff_not_throttled(own_redis, fault, signed_in):
    getattr(own_redis, fault)()
    response = _within_deadline(lambda: signed_in.post("/api/v1/tokens/", {"name": "ops"},
                                                       content_type="application/json"))
    assert response.status_code == 201, response.content[:300]
