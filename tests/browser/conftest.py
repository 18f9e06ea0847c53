"""Browser tests: Playwright for Python driving the system's Chromium against a live Turnout server.

Playwright's own browser download is not used: tests launch ``TURNOUT_CHROMIUM`` (default
/usr/bin/chromium). Without it they skip — or fail under TURNOUT_REQUIRE_SERVICES=1, as in CI.
Screenshots go to test-artifacts/screenshots/ (ignored by git; docs/screenshots/ holds copies).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, service_missing

CHROMIUM = os.environ.get("TURNOUT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
PASSWORD = "a-long-test-passphrase-42"
VIEWPORT = {"width": 1366, "height": 900}  # a laptop screen


@pytest.fixture(scope="module")  # not the session: its event loop runs in this thread while it lives
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        service_missing(f"needs Chromium at {CHROMIUM} (apt-get install chromium)")
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are still sync.
    # Only while the browser lives: later tests' subprocesses (`check --deploy`) must not inherit it.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@dataclass
class Site:
    """The running server plus the people who use it."""

    url: str
    browser: Any

    def new_page(self) -> Any:
        context = self.browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        context.set_default_timeout(10_000)
        return context.new_page()

    def login(self, username: str) -> Any:
        """A fresh browser signed in through the login form; returns its page on the dashboard."""
        page = self.new_page()
        page.goto(f"{self.url}/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/login/" not in url)
        return page

    def session_for(self, username: str) -> Any:
        """A fresh browser already signed in as ``username`` (a server-side session, no password
        hashing), on the dashboard. The login form itself is covered by ``login``."""
        from importlib import import_module

        from django.conf import settings
        from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model

        user = get_user_model().objects.get(username=username)
        store = import_module(settings.SESSION_ENGINE).SessionStore()
        store[SESSION_KEY] = str(user.pk)
        store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.save()
        page = self.new_page()
        page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": store.session_key,
                                   "url": self.url}])
        page.goto(f"{self.url}/")
        return page


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def people(transactional_db: Any) -> dict[str, Any]:
    """Two environments and one user per role, committed so the server process sees them."""
    from common.actors import Actor
    from rollout.access.users import user_create
    from rollout.services.environments import environment_create

    seed = Actor.system("test")
    environment_create(actor=seed, key="staging", name="Staging", order=0)
    environment_create(actor=seed, key="production", name="Production", order=1, requires_approval=True)
    # Only ada signs in with a password (hashing is slow on purpose); the others get sessions.
    return {
        name: user_create(actor=seed, username=name, password=PASSWORD if name == "ada" else None, roles=[role])
        for name, role in (("ada", "admin"), ("eddie", "editor"), ("abby", "approver"), ("vic", "viewer"),
                           ("cora", "compliance"))
    }


@pytest.fixture
def site(browser: Any, live_server: Any, people: dict[str, Any]) -> Iterator[Site]:
    """pytest-django's live server (one for the session, threaded, static files served) on the
    test database; each test's data is committed (transactional) and flushed afterwards."""
    yield Site(url=live_server.url, browser=browser)
    for context in list(browser.contexts):
        context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    """On a failure, keep a screenshot of every open page (test-artifacts/failures/)."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed or "site" not in item.funcargs:
        return
    folder = ROOT / "test-artifacts" / "failures"
    folder.mkdir(parents=True, exist_ok=True)
    for c, context in enumerate(item.funcargs["site"].browser.contexts):
        for p, page in enumerate(context.pages):
            page.screenshot(path=str(folder / f"{item.name}-{c}-{p}.png"), full_page=True)
