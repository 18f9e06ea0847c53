"""The Content-Security-Policy in a real browser: every UI page (and the API docs and the admin) loads,
runs its scripts and swaps htmx partials without a single violation or console error."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Site

pytestmark = pytest.mark.browser

# Runs before any page script (Playwright injects it; the page's policy does not apply to it).
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`);
});
"""


class Watched:
    """A signed-in page that remembers every CSP violation and console error, on every page it opens."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        page.context.add_init_script(WATCH)
        page.on("console", lambda m: self.problems.append(f"{page.url}: console {m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"{page.url}: page error: {e}"))

    def visit(self, url: str, ready: str = "main") -> None:
        response = self.page.goto(url)
        assert response is not None and response.status < 400, f"{url}: {response and response.status}"
        policy = response.header_value("content-security-policy") or ""
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("style-src-attr")[0], policy
        expect(self.page.locator(ready).first).to_be_visible()
        self.settle(url)

    def settle(self, where: str) -> None:
        self.page.wait_for_load_state("networkidle")
        found = self.page.evaluate("window.__violations")
        self.problems += [f"{where}: {v}" for v in found]
        self.page.evaluate("window.__violations = []")


def test_csp__every_ui_page_api_docs_and_admin__no_violation_and_no_console_error(site: Site) -> None:
    from audit.models import AuditEvent
    from rollout.demo import seed_demo
    from rollout.models import ChangeRequest

    seed_demo()
    anonymous = Watched(site.new_page())
    anonymous.visit(f"{site.url}/login/", "form")
    assert not anonymous.problems, anonymous.problems

    watched = Watched(site.session_for("ada"))
    page = watched.page
    pages = ["/", "/workloads/new/", "/workloads/invoice-engine/", "/flags/new/", "/flags/invoice-engine/",
             "/flags/invoice-engine/production/readiness/", "/changes/", "/cohorts/", "/cohorts/new/",
             "/cohorts/pilot-eu/", "/audit/", f"/audit/events/{AuditEvent.objects.order_by('sequence').last().sequence}/",
             "/audit/history/flag/invoice-engine/", "/keys/"]
    change = ChangeRequest.objects.order_by("pk").first()
    if change is not None:
        pages.append(f"/changes/{change.pk}/")
    for path in pages:
        watched.visit(f"{site.url}{path}")

    # Charts drawn by the vendored Chart.js (canvas styles set from script, which the policy allows).
    watched.visit(f"{site.url}/flags/invoice-engine/production/readiness/")
    page.wait_for_function("[...document.querySelectorAll('canvas[data-chart]')].every(c => Chart.getChart(c))")
    watched.settle("readiness charts")

    # htmx at work: a live search swaps the cohort table (and would inject indicator styles if allowed).
    watched.visit(f"{site.url}/cohorts/")
    with page.expect_response(re.compile(r"/cohorts/\?")):
        page.get_by_role("searchbox").first.fill("pilot")
    watched.settle("cohort search swap")

    # A 404 page is a UI page too.
    response = page.goto(f"{site.url}/flags/no-such-flag/")
    assert response is not None and response.status == 404
    watched.settle("404")
    watched.problems = [p for p in watched.problems if "404 (Not Found)" not in p]  # the page's own status

    # So is the 403 page a viewer gets on an admin page.
    viewer = Watched(site.session_for("vic"))
    response = viewer.page.goto(f"{site.url}/keys/")
    assert response is not None and response.status == 403
    viewer.settle("403")
    assert [p for p in viewer.problems if "403 (Forbidden)" not in p] == [], viewer.problems

    # The API docs (Swagger UI from drf-spectacular-sidecar) render the schema's operations.
    watched.visit(f"{site.url}/api/v1/docs/", "#swagger-ui")
    expect(page.locator(".opblock").first).to_be_visible(timeout=20_000)
    watched.settle("api docs")

    # The admin (read-only, for admins) under the same policy.
    watched.visit(f"{site.url}/admin/", "#content")

    assert not watched.problems, "\n".join(watched.problems)
