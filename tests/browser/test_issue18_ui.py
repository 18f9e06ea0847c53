"""Issue 18's browser-visible papercuts, each as a user met it: the audit page's filter-as-you-type (and its
htmx:syntax:error), the help text, the flag page's height, the dashboard at 390 px, the API docs' way
back, and the stage editor."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Site, screenshot

pytestmark = pytest.mark.browser


def _watch(page: Any) -> list[str]:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{page.url}: console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"{page.url}: page error: {e}"))
    page.on("response", lambda r: problems.append(f"{page.url}: HTTP {r.status} for {r.url}")
            if r.status >= 400 else None)
    return problems


def _demo() -> None:
    from rollout.demo import seed_demo

    seed_demo()


def test_audit_page__filter_as_you_type__swaps_the_table_without_a_console_error(site: Site) -> None:
    _demo()
    page = site.session_for("cora")
    problems = _watch(page)
    page.goto(f"{site.url}/audit/")
    page.wait_for_load_state("networkidle")
    with page.expect_response(re.compile(r"/audit/\?.*object_key=invoice-engine")):
        page.get_by_label("Object key").press_sequentially("invoice-engine", delay=20)  # typed, never submitted
    table = page.locator("#event-table")
    expect(table.locator("tbody tr").first).to_be_visible()
    keys = table.locator("tbody tr td:nth-child(5) code").all_inner_texts()
    assert keys and set(keys) == {"invoice-engine"}, keys
    assert "object_key=invoice-engine" in page.url  # the URL follows (hx-push-url)
    assert not problems, problems


def test_flag_form__help_text__shows_the_placeholder(site: Site) -> None:
    _demo()
    page = site.session_for("eddie")
    page.goto(f"{site.url}/flags/new/")
    expect(page.get_by_text('What services ask for: client.decide("<key>", ...).')).to_be_visible()


def test_flag_page__every_panel_opened__stays_compact(site: Site) -> None:
    """It was ~5,400 px tall with its panels open: now one environment at a time (tabs) and one panel open
    at a time in a card."""
    _demo()
    page = site.session_for("ada")
    problems = _watch(page)
    page.goto(f"{site.url}/flags/invoice-engine/")
    page.wait_for_load_state("networkidle")
    card = page.locator("[role=tabpanel]:not([hidden]) .statecard")
    summaries = card.locator("details > summary")
    for n in range(summaries.count()):
        summaries.nth(n).click()
    assert card.locator("details[open]").count() == 1  # opening one closes the others
    height = page.evaluate("document.documentElement.scrollHeight")
    screenshot(page, "flag-compact")
    assert height < 2600, height
    page.get_by_role("tab", name=re.compile("Production")).click()
    expect(page.locator("#state-production")).to_be_visible()
    expect(page.locator("#state-staging")).to_be_hidden()
    assert "env=production" in page.url
    assert not problems, problems


def test_dashboard__390px__rollout_columns_say_they_scroll(site: Site) -> None:
    _demo()
    page = site.session_for("ada")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{site.url}/")
    expect(page.get_by_text("Swipe sideways to see every environment →")).to_be_visible()
    region = page.get_by_role("region", name="Workloads per environment")
    assert region.evaluate("el => el.scrollWidth > el.clientWidth")  # it does scroll sideways...
    first = page.locator("table.workloads tbody th[scope=row]").first
    assert first.evaluate("el => getComputedStyle(el).position") == "sticky"  # ...with the workload kept in view
    region.evaluate("el => el.scrollLeft = el.scrollWidth")
    assert first.evaluate("el => el.getBoundingClientRect().left") >= 0
    screenshot(page, "dashboard-390px")
    page.set_viewport_size({"width": 1366, "height": 900})
    expect(page.get_by_text("Swipe sideways to see every environment →")).to_be_hidden()


def test_api_menu__swagger__has_a_way_back(site: Site) -> None:
    page = site.session_for("ada")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API").click()
    expect(page.locator(".opblock").first).to_be_visible(timeout=20_000)
    page.get_by_role("link", name="← Back to the dashboard").click()
    expect(page.get_by_role("heading", name=re.compile("Workloads"))).to_be_visible()


def test_stage_editor__custom_plan__errors_next_to_the_stage_then_set(site: Site) -> None:
    from common.actors import Actor
    from rollout.services.flags import flag_create
    from rollout.services.workloads import workload_create

    seed = Actor.system("test")
    workload_create(actor=seed, key="invoice-engine", name="Invoice engine", risk="medium")
    flag_create(actor=seed, key="invoice-engine", workload="invoice-engine")
    page = site.session_for("eddie")
    problems = _watch(page)
    page.goto(f"{site.url}/flags/invoice-engine/")
    card = page.locator("#state-staging")
    card.get_by_text("Build a rollout plan", exact=True).click()
    card.get_by_role("link", name="Design custom stages").click()
    expect(page.get_by_role("heading", name=re.compile("Rollout plan"))).to_be_visible()
    rows = page.locator("table.stage-editor tbody tr")
    expect(rows).to_have_count(8)  # the standard template to start from

    # Shorter: remove the pilot stages; then the first stage soaks 30 minutes and advances by itself.
    for _ in range(2):
        page.get_by_role("button", name="Remove stage 2").click()
    expect(rows).to_have_count(6)
    page.get_by_label("Stage 1 name").fill("shadow")
    page.get_by_label("Stage 1 soak time").fill("30")
    page.get_by_label("Stage 1 soak unit").select_option("minutes")
    page.get_by_label("Stage 1 gate").select_option("auto")
    page.get_by_label("Stage 4 parallel percentage").fill("3")  # below the 5% before it
    page.get_by_label("Stage 3 not before (UTC)").fill("2031-01-05T09:30")
    page.get_by_role("button", name="Set the plan").click()
    row4 = page.locator("#stage-3")
    expect(row4).to_contain_text("cannot be lower than the stage before")
    expect(page.get_by_label("Stage 4 parallel percentage")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Stage 1 name")).to_have_value("shadow")  # what was typed is kept
    screenshot(page, "stage-editor")

    page.get_by_label("Stage 4 parallel percentage").fill("30")
    page.get_by_label("Reason").fill("a shorter plan for this service")
    page.get_by_role("button", name="Set the plan").click()
    expect(page.get_by_role("status").first).to_contain_text("Plan set: 6 stages")
    timeline = page.locator("#state-staging").get_by_role("list", name="Rollout stages")
    expect(timeline.get_by_role("listitem")).to_have_count(6)
    expect(timeline.get_by_role("listitem").first).to_have_attribute("title", re.compile("soak 1800 s, auto gate"))
    screenshot(page, "stage-editor-result")
    assert [p for p in problems if "422" not in p] == [], problems  # the 422 is the form with its errors
