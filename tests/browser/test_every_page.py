"""Every UI page in a real browser, as an admin and as a viewer (issue 18): a crawler starts at the
dashboard and follows every link the pages offer (one page per route), and the test fails on any console
error, uncaught page error, failed request or HTTP error on any page it visits — the kind of problem
(``htmx:syntax:error`` on the audit page) that no test caught before. The pages it visited are written
to test-artifacts/ui-pages-<role>.txt, and the routes it must reach are listed here.
"""

from __future__ import annotations

from collections import deque
from typing import Any
from urllib.parse import urljoin, urlparse

import pytest

from tests.browser.conftest import ROOT, Site

pytestmark = pytest.mark.browser

# Not pages of the web UI: sign-out, the read-only admin (tests/browser/test_csp.py visits it), static
# files, JSON and metrics endpoints. The API docs page is a UI page (the "API" menu item).
NOT_PAGES = ("/logout/", "/admin/", "/static/", "/metrics", "/healthz", "/readyz", "/ofrep/")
API_PAGES = ("/api/v1/docs/",)
MAX_PAGES = 150
PER_ROUTE = 5  # up to five pages of each route (every demo flag, workload, cohort; five events, ...)

# The routes (config/ui_urls.py patterns) each role must reach by following links from the dashboard.
VIEWER_ROUTES = {
    "", "workloads/<str:key>/", "flags/<str:key>/", "flags/<str:key>/history/",
    "flags/<str:key>/<str:env>/readiness/", "changes/", "changes/<int:pk>/", "cohorts/", "cohorts/<str:key>/",
    "audit/", "audit/events/<int:sequence>/", "audit/history/<str:object_type>/<path:object_key>/",
    "api/v1/docs/",
}
ADMIN_ROUTES = VIEWER_ROUTES | {
    "workloads/new/", "flags/new/", "cohorts/new/", "flags/<str:key>/<str:env>/plan/edit/", "keys/",
    "audit/exports/<uuid:pk>/", "audit/verifications/<uuid:pk>/",
}

# Runs before any page script: links offered by the page, ignoring downloads and in-page anchors.
LINKS = """[...document.querySelectorAll('a[href]:not([download])')].map(a => a.href)"""


class Crawler:
    def __init__(self, site: Site, page: Any) -> None:
        self.site, self.page = site, page
        self.problems: list[str] = []
        self.visited: dict[str, list[str]] = {}  # route -> the URLs visited for it
        self.seen: set[str] = set()
        page.on("console", lambda m: self.problems.append(f"{page.url}: console {m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"{page.url}: page error: {e}"))
        page.on("response", lambda r: self.problems.append(f"{page.url}: HTTP {r.status} for {r.url}")
                if r.status >= 400 else None)
        # A poll cut short by leaving the page is the browser's doing (net::ERR_ABORTED), not a failure.
        page.on("requestfailed", lambda r: self.problems.append(f"{page.url}: request failed: {r.url} {r.failure}")
                if "ERR_ABORTED" not in (r.failure or "") else None)

    def route(self, path: str) -> str | None:
        from django.urls import Resolver404, resolve

        if any(path.startswith(p) for p in NOT_PAGES):
            return None
        if path.startswith("/api/") and path not in API_PAGES:
            return None
        try:
            match = resolve(path)
        except Resolver404:
            self.problems.append(f"a link leads nowhere: {path}")
            return None
        return str(match.route)

    def crawl(self, *starts: str) -> None:
        queue = deque(starts)
        while queue and len(self.seen) < MAX_PAGES:
            url = urljoin(self.site.url, queue.popleft())
            parsed = urlparse(url)
            if parsed.netloc != urlparse(self.site.url).netloc:
                continue
            route = self.route(parsed.path)
            where = parsed.path + (f"?{parsed.query}" if parsed.query else "")
            if route is None or parsed.path in self.seen or len(self.visited.get(route, [])) >= PER_ROUTE:
                continue
            self.seen.add(parsed.path)
            self.visited.setdefault(route, []).append(where)
            response = self.page.goto(url)
            if response is None or response.status >= 400:
                self.problems.append(f"{url}: page answered {response and response.status}")
                continue
            self.page.wait_for_load_state("networkidle")
            if route != "api/v1/docs/":
                queue.extend(self.page.evaluate(LINKS))
            else:  # Swagger UI renders the schema's operations without an error
                self.page.locator(".opblock").first.wait_for(timeout=20_000)

    def record(self, role: str) -> None:
        folder = ROOT / "test-artifacts"
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"{route or '(dashboard)'}\t{url}" for route, urls in sorted(self.visited.items()) for url in urls]
        (folder / f"ui-pages-{role}.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def lived(site: Site) -> dict[str, str]:
    """The demo data plus what only a lived-in installation has: a pending change request, a finished
    background export and a background chain verification (their pages are reached from redirects)."""
    from django.contrib.auth import get_user_model

    from actions.submit import submit_state
    from audit.services import audit_export_create, audit_verification_start
    from common.actors import Actor
    from rollout.demo import seed_demo
    from rollout.models import FlagState

    seed_demo()
    eddie = Actor.for_user(get_user_model().objects.get(username="eddie"))
    state = FlagState.objects.filter(environment__key="production", retired=False).select_related("flag").first()
    assert state is not None
    submit_state(actor=eddie, flag=state.flag.key, environment="production", action="flag_state.updated",
                 params={"compare_percentage": "7"}, reason="more shadow traffic")
    cora = Actor.system("test")
    export = audit_export_create(actor=cora, format="csv", background=True)
    verification = audit_verification_start(actor=cora)
    return {"export": f"/audit/exports/{export.pk}/", "verification": f"/audit/verifications/{verification.pk}/"}


def test_every_page__admin__no_console_error_and_no_failed_request(site: Site, lived: dict[str, str]) -> None:
    crawler = Crawler(site, site.session_for("ada"))
    # The flag form's own page is reached by URL (a workload's page embeds the form); the export and
    # verification pages by the redirect after starting one.
    crawler.crawl("/", "/flags/new/", lived["export"], lived["verification"])
    crawler.record("admin")
    assert not crawler.problems, "\n".join(crawler.problems)
    missing = ADMIN_ROUTES - set(crawler.visited)
    assert not missing, f"pages no link led to: {sorted(missing)}"


def test_every_page__viewer__no_console_error_and_no_failed_request(site: Site, lived: dict[str, str]) -> None:
    crawler = Crawler(site, site.session_for("vic"))
    crawler.crawl("/")
    crawler.record("viewer")
    assert not crawler.problems, "\n".join(crawler.problems)  # no link a viewer is offered answers 403
    missing = VIEWER_ROUTES - set(crawler.visited)
    assert not missing, f"pages no link led to: {sorted(missing)}"
    assert not {"keys/", "workloads/new/", "flags/new/"} & set(crawler.visited)
