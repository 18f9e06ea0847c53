"""The web UI in a real browser: the flows admins, release managers, approvers, viewers and
compliance reviewers go through, each ending in what the user sees (and a screenshot)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import SCREENSHOTS, Site, screenshot

pytestmark = pytest.mark.browser
ROWS = 20_000


def _live_flag(*, percentage: int = 100, environment: str = "staging", risk: str = "high") -> None:
    from common.actors import Actor
    from rollout.services.flags import flag_create, flag_state_update
    from rollout.services.workloads import workload_create

    seed = Actor.system("test")
    workload_create(actor=seed, key="invoice-engine", name="Invoice engine", risk=risk, phase="transition",
                    owner="billing-team")
    flag_create(actor=seed, key="invoice-engine", workload="invoice-engine", bucket_by="tenant_id",
                description="Generate invoices with the new invoice service.")
    flag_state_update(actor=seed, flag="invoice-engine", environment=environment, version=None, enabled=True,
                      percentage_value=percentage, compare_percentage=10)


def _sdk_decision(site: Site, sdk_key: str, subject: str, attributes: dict[str, Any]) -> tuple[str, str]:
    """What an SDK decides — locally on the ruleset it downloads, and through the evaluation API;
    both must agree."""
    from turnout.engine import evaluate

    auth = {"Authorization": f"Bearer {sdk_key}"}
    response = httpx.get(f"{site.url}/api/v1/sdk/ruleset", headers=auth)
    assert response.status_code == 200
    local = evaluate(response.json(), "invoice-engine", subject, attributes)
    remote = httpx.post(f"{site.url}/api/v1/sdk/evaluate", headers=auth, json={
        "flag": "invoice-engine", "context": {"key": subject, "attributes": attributes}}).json()
    assert (remote["path"], remote["reason"]) == (str(local.path), str(local.reason))
    return str(local.path), str(local.reason)


def test_login__each_role__shell_shows_user_role_and_navigation(site: Site) -> None:
    page = site.login("ada")
    expect(page.locator(".who")).to_contain_text("ada")
    expect(page.locator(".who .badge")).to_have_text("admin")
    nav = page.get_by_role("navigation", name="Main")
    for link in ("Dashboard", "Cohorts", "Audit", "Keys"):
        expect(nav.get_by_role("link", name=link)).to_be_visible()
    expect(page.locator("#env-switch")).to_have_value("staging")
    expect(page.get_by_text("No workloads yet.")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "login")

    page = site.session_for("cora")
    expect(page.locator(".who .badge")).to_have_text("compliance")
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Audit")).to_be_visible()
    for link in ("Dashboard", "Cohorts", "Keys"):
        expect(nav.get_by_role("link", name=link)).to_have_count(0)
    expect(page.get_by_role("button", name="Export CSV")).to_be_visible()


def test_workload_and_flag__created_in_forms__flag_page_shows_a_card_per_environment(site: Site) -> None:
    page = site.session_for("eddie")
    page.get_by_role("link", name="New workload").click()
    page.get_by_label("Key").fill("Invoice Engine")
    page.get_by_label("Name").fill("Invoice engine")
    page.get_by_label("Risk").select_option("medium")
    page.get_by_role("button", name="Create workload").click()
    # The service's validation comes back as a friendly message next to the field.
    expect(page.locator(".errorlist")).to_contain_text("lowercase letters")
    page.get_by_label("Key").fill("invoice-engine")
    page.get_by_role("button", name="Create workload").click()
    expect(page.get_by_role("heading", name=re.compile("Invoice engine"))).to_be_visible()
    expect(page.get_by_text("No flag yet")).to_be_visible()

    page.get_by_label("Key").fill("invoice-engine")
    page.get_by_label("Bucket by").fill("tenant_id")
    page.get_by_role("button", name="Create flag").click()
    expect(page.get_by_role("heading", name="Flag invoice-engine")).to_be_visible()
    for env in ("staging", "production"):
        expect(page.locator(f"#state-{env}")).to_contain_text("off — everyone on legacy")

    # Start it in staging: the percentage form previews the impact before saving, and offers an undo.
    card = page.locator("#state-staging")
    card.get_by_role("button", name="Turn on").click()  # a brand-new flag is turned on, not "resumed at 0%"
    expect(card.locator(".state-status")).to_have_text("live")
    card.get_by_text("Change the percentage").click()
    card.get_by_label("Parallel percentage").fill("30")
    expect(card.locator(".impact")).to_contain_text("0% → 30%: about 30% of tenant_id values switch to parallel")
    card.get_by_role("button", name="Save percentage").click()
    expect(card.get_by_role("status")).to_contain_text("Parallel share 0% → 30%")
    expect(card.locator(".big")).to_have_text("30%")
    card.get_by_role("button", name="Undo (back to 0%)").click()
    expect(card.locator(".big")).to_have_text("0%")

    # Production needs approval: an editor's changes there become change requests.
    page.get_by_role("tab", name=re.compile("Production")).click()  # one environment at a time
    production = page.locator("#state-production")
    expect(production).to_contain_text("changes need approval")
    production.get_by_text("Change the percentage").click()
    expect(production.get_by_role("button", name="Request approval").first).to_be_visible()
    page.goto(f"{site.url}/")
    expect(page.get_by_role("row", name=re.compile("Invoice engine"))).to_contain_text("flag_state.updated")


def test_cohort__created_with_rules_and_uploaded_members__test_a_subject_explains(site: Site, tmp_path: Any) -> None:
    page = site.session_for("eddie")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Cohorts").click()
    expect(page.get_by_text("No cohorts yet.")).to_be_visible()
    page.get_by_role("link", name="New cohort").first.click()
    page.get_by_label("Key").fill("pilot-eu")
    page.get_by_label("Name").fill("EU pilot tenants")
    page.get_by_label("Match members on").fill("tenant_id")
    rules = page.get_by_label("Rules")
    rules.fill('{"all": [{"attr": "country", "op": "within", "values": ["DE"]}]}')
    expect(page.locator("#rules-feedback")).to_contain_text("rules.all[0]")
    rules.fill('{"all": [{"attr": "country", "op": "in", "values": ["DE", "FR"]}]}')
    expect(page.locator("#rules-feedback")).to_have_text("Rules are valid.")
    page.get_by_role("button", name="Create cohort").click()
    expect(page.get_by_role("heading", name=re.compile("EU pilot tenants"))).to_be_visible()

    # A file with bad rows imports nothing and names each bad line.
    bad = tmp_path / "bad.csv"
    bad.write_text("subject\ntenant-1\n\ntenant-2,extra\n" + "x" * 300 + "\n")
    page.get_by_label("CSV file").set_input_files(str(bad))
    page.get_by_role("button", name="Upload and import").click()
    upload = page.locator("#upload")
    expect(upload).to_contain_text("Nothing was imported")
    expect(upload).to_contain_text("line 4: more than one column")
    expect(upload).to_contain_text("line 5: longer than 255 characters")
    expect(page.locator("#members")).to_contain_text("0 included")

    # Many rows: upload progress, then all rows in one all-or-nothing import (100,000 rows: tests/cohorts).
    good = tmp_path / "members.csv"
    good.write_text("subject\n" + "".join(f"tenant-{n}\n" for n in range(ROWS)))
    page.get_by_label("CSV file").set_input_files(str(good))
    page.get_by_role("button", name="Upload and import").click()
    expect(upload).to_contain_text(f"Imported {ROWS} rows into include: {ROWS} added", timeout=60_000)
    expect(page.locator("#members")).to_contain_text(f"{ROWS} included")

    tester = page.locator("#test-subject")
    tester.get_by_label("Subject key").fill("user-1")
    tester.get_by_label("Attributes").fill('{"tenant_id": "tenant-77", "country": "US"}')
    tester.get_by_role("button", name="Test").click()
    expect(tester.get_by_role("status")).to_contain_text("In the cohort")
    expect(tester.get_by_role("status")).to_contain_text("tenant_id 'tenant-77' is listed in include")
    tester.get_by_label("Attributes").fill('{"tenant_id": "tenant-x", "country": "US"}')
    tester.get_by_role("button", name="Test").click()
    expect(tester.get_by_role("status")).to_contain_text("Not in the cohort")
    expect(tester.get_by_role("status")).to_contain_text("rules.all[0] (country in")
    screenshot(page, "cohort-upload")


def test_kill_switch__confirmed_with_the_keyboard__card_and_sdk_decision_change(site: Site) -> None:
    _live_flag(percentage=100)
    page = site.session_for("ada")

    # An SDK key for staging, shown once with a copy button.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Keys").click()
    page.locator("#sdk-title ~ form").get_by_label("Environment").select_option("staging")
    page.locator("#sdk-title ~ form").get_by_label("Name").fill("billing-api")
    page.get_by_role("button", name="Create SDK key").click()
    secret = page.locator("#new-secret")
    expect(secret).to_contain_text("sdk_")
    sdk_key = secret.inner_text().strip()
    expect(page.get_by_role("button", name="Copy")).to_be_visible()
    expect(page.get_by_role("cell", name="billing-api")).to_be_visible()
    screenshot(page, "keys")
    assert _sdk_decision(site, sdk_key, "user-1", {"tenant_id": "t-1"}) == ("parallel", "SPLIT")

    page.goto(f"{site.url}/flags/invoice-engine/")
    card = page.locator("#state-staging")
    expect(card.locator(".big")).to_have_text("100%")
    kill = card.get_by_role("button", name="Kill switch")
    kill.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Kill invoice-engine in Staging?")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Kill now")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    kill.focus()
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")

    expect(card.locator(".state-status")).to_have_text("off — everyone on legacy")
    expect(card.get_by_role("status")).to_contain_text("Killed: every subject takes legacy in Staging.")
    expect(card.get_by_role("button", name="Undo: resume")).to_be_visible()
    assert _sdk_decision(site, sdk_key, "user-1", {"tenant_id": "t-1"}) == ("legacy", "DISABLED")
    screenshot(page, "kill-switch")

    card.get_by_role("button", name="Undo: resume").click()
    expect(card.locator(".state-status")).to_have_text("live")
    assert _sdk_decision(site, sdk_key, "user-1", {"tenant_id": "t-1"}) == ("parallel", "SPLIT")


def test_state_card__changed_elsewhere__live_update_without_reload(site: Site) -> None:
    _live_flag(percentage=20)
    page = site.session_for("vic")
    page.goto(f"{site.url}/flags/invoice-engine/")
    card = page.locator("#state-staging")
    expect(card.locator(".big")).to_have_text("20%")

    from common.actors import Actor
    from rollout.services.flags import flag_state_kill

    flag_state_kill(actor=Actor.system("test"), flag="invoice-engine", environment="staging", reason="incident")
    expect(card.locator(".state-status")).to_have_text("off — everyone on legacy", timeout=15_000)


def test_viewer__any_page__sees_no_edit_controls_and_edits_get_403(site: Site) -> None:
    _live_flag(percentage=50)
    page = site.session_for("vic")
    expect(page.get_by_role("link", name="New workload")).to_have_count(0)
    page.goto(f"{site.url}/flags/invoice-engine/")
    expect(page.locator("#state-staging")).to_contain_text("Read only")
    expect(page.get_by_role("button", name="Kill switch")).to_have_count(0)
    expect(page.get_by_text("Change the percentage")).to_have_count(0)

    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    for url in ("/flags/invoice-engine/staging/kill/", "/flags/invoice-engine/staging/percentage/",
                "/workloads/new/", "/cohorts/new/", "/keys/sdk/"):
        response = page.request.post(f"{site.url}{url}", form={"percentage": "100", "version": "1"},
                                     headers={"X-CSRFToken": csrf})
        assert response.status == 403, url
    assert page.request.get(f"{site.url}/keys/").status == 403

    from rollout.models import FlagState

    assert FlagState.objects.get(flag__key="invoice-engine", environment__key="staging").enabled is True


def test_audit__filtered_by_action_and_actor__shows_diff_and_history(site: Site) -> None:
    _live_flag(percentage=25)
    page = site.session_for("cora")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    page.get_by_label("Action").select_option("flag_state.updated")
    rows = page.locator("#event-table tbody tr")
    expect(rows).to_have_count(1)
    expect(page).to_have_url(re.compile(r"action=flag_state.updated"))
    rows.first.get_by_text("Diff").click()
    diff = rows.first.locator("table.diff")
    expect(diff.locator("tr.changed", has_text="percentage").first).to_contain_text("25")
    page.get_by_label("Actor").select_option("system:test")
    expect(rows).to_have_count(1)
    page.get_by_label("From").fill("2999-01-01T00:00")
    expect(page.get_by_text("No event matches these filters.")).to_be_visible()
    page.get_by_role("link", name="Clear").click()
    expect(page.locator("#event-table tbody tr").first).to_be_visible()
    page.locator("#event-table").get_by_role("link", name="invoice-engine@staging").first.click()
    expect(page.get_by_role("heading", name="History of flag_state invoice-engine@staging")).to_be_visible()
    screenshot(page, "audit-history")


def _sdk_traffic(site: Site, environment: str = "staging", calls: int = 400) -> None:
    """Real traffic through the ``turnout`` SDK: decisions, shadow comparisons, failures on the
    parallel path, and the metrics batch it reports (then the roll-up beat would run)."""
    import turnout

    from common.actors import Actor
    from rollout.access.keys import sdk_key_create
    from rollout.telemetry.ingest import metrics_rollup

    _, secret = sdk_key_create(actor=Actor.system("test"), environment=environment, name="simulator")
    client = turnout.Turnout(site.url, secret, stream=False, flush_interval=3600)
    try:
        assert client.wait_until_ready(10)
        for n in range(calls):
            def parallel(n: int = n) -> int:
                if n % 25 == 0:
                    raise RuntimeError("the parallel path failed")
                return n + (1 if n % 40 == 1 else 0)

            client.run("invoice-engine", f"user-{n}", {"tenant_id": f"t-{n % 60}"}, legacy=lambda n=n: n,
                       parallel=parallel)
    finally:
        client.close()  # lets the shadow comparisons finish, then sends the last metrics batch
    metrics_rollup(include_open=True)


def test_impact_preview__traffic_reported_by_the_sdk__calls_that_would_switch(site: Site) -> None:
    _live_flag(percentage=20, risk="medium")
    _sdk_traffic(site)
    page = site.session_for("eddie")
    page.goto(f"{site.url}/flags/invoice-engine/")
    card = page.locator("#state-staging")
    card.get_by_text("Change the percentage").click()
    card.get_by_label("Parallel percentage").fill("60")
    impact = card.locator(".impact")
    expect(impact).to_contain_text("20% → 60%: about 40% of tenant_id values switch to parallel")
    expect(impact).to_contain_text(re.compile(r"In the last 24 h that is about \d+ of the 400 calls SDKs reported"))


def test_main_pages__demo_data__render_readable_and_screenshotted(site: Site) -> None:
    """The pages README shows, on the demo data set (rollouts at every phase)."""
    from rollout.demo import seed_demo

    seed_demo()
    page = site.session_for("ada")
    expect(page.get_by_role("row", name=re.compile("Invoice engine"))).to_contain_text("25%")
    expect(page.get_by_role("row", name=re.compile("Report export"))).to_contain_text("legacy retired")
    screenshot(page, "dashboard")
    page.goto(f"{site.url}/flags/invoice-engine/?env=production")
    expect(page.locator("#state-production .big")).to_have_text("25%")
    expect(page.locator("#readiness-production")).to_contain_text("Production:")
    screenshot(page, "flag")
    page.goto(f"{site.url}/cohorts/pilot-eu/")
    expect(page.locator("#members")).to_contain_text("2 included")
    screenshot(page, "cohort")
    page.goto(f"{site.url}/audit/")
    expect(page.locator("#event-table tbody tr").first).to_be_visible()
    screenshot(page, "audit")


def test_plan__built_from_a_template__advanced_stage_by_stage_and_rolled_back(site: Site) -> None:
    _live_flag(percentage=0, risk="medium")
    from cohorts.services import cohort_create
    from common.actors import Actor

    cohort_create(actor=Actor.system("test"), key="internal-staff", name="Internal staff",
                  rules={"all": [{"attr": "email", "op": "ends_with", "values": ["@example.com"]}]})
    page = site.session_for("eddie")
    page.goto(f"{site.url}/flags/invoice-engine/")
    card = page.locator("#state-staging")
    card.get_by_text("Build a rollout plan").click()
    card.get_by_role("group", name="Internal cohorts").get_by_label("Internal staff").check()
    card.get_by_label("Soak time per stage (seconds)").fill("0")
    card.get_by_role("button", name="Set the plan").click()
    expect(card.get_by_role("status")).to_contain_text("Plan set: 8 stages")
    timeline = card.get_by_role("list", name="Rollout stages")
    expect(timeline.get_by_role("listitem")).to_have_count(8)

    card.get_by_role("button", name="Start the plan: “validate”").click()
    expect(card.locator(".badge", has_text="stage 1 of 8")).to_be_visible()
    card.get_by_role("button", name="Advance to “internal”").click()
    expect(card.locator(".badge", has_text="stage 2 of 8")).to_be_visible()
    expect(timeline.locator("li[aria-current=step]")).to_contain_text("internal")
    expect(card).to_contain_text("Cohorts in")
    expect(card.locator(".chips .include")).to_contain_text("internal-staff")
    expect(page.locator("#readiness-staging")).to_contain_text("no guardrails configured")
    expect(page.locator("#readiness-staging")).not_to_contain_text("no rollout plan")
    screenshot(page, "rollout-plan")

    card.get_by_role("button", name="Roll back a stage").click()
    dialog = page.get_by_role("dialog", name="Roll back invoice-engine in Staging?")
    dialog.get_by_label("Reason").fill("mismatches in the internal pilot")
    dialog.get_by_role("button", name="Roll back now").click()
    expect(card.locator(".badge", has_text="stage 1 of 8")).to_be_visible()
    expect(card.locator("header .badge.paused")).to_be_visible()
    page.goto(f"{site.url}/")
    expect(page.get_by_role("row", name=re.compile("Invoice engine"))).to_contain_text("stage 1 of 8")

    # Issue 18: undoing the rollback puts the stage back, not only lifts the pause.
    page.goto(f"{site.url}/flags/invoice-engine/")
    card.get_by_role("button", name="Roll back a stage").click()
    dialog.get_by_role("button", name="Roll back now").click()
    card.get_by_role("button", name="Undo: resume at “validate”").click()
    expect(card.get_by_role("status")).to_contain_text("Rollback undone: back at “validate”")
    expect(card.locator(".badge", has_text="stage 1 of 8")).to_be_visible()
    expect(card.locator("header .badge.paused")).to_have_count(0)


def test_promote__staging_to_production__change_request_approved_then_the_card_shows_the_copy(site: Site) -> None:
    """The promote button on production's card copies staging's plan, guardrails and targeting — not the
    stage or percentage reached — as one change request; approved, production's card shows the copy."""
    _live_flag(percentage=0, risk="medium")
    from actions.submit import submit_state
    from cohorts.services import cohort_create
    from common.actors import Actor
    from rollout.plans.guardrails import guardrail_set
    from rollout.plans.stages import plan_set, plan_template

    seed = Actor.system("test")
    cohort_create(actor=seed, key="internal-staff", name="Internal staff",
                  rules={"all": [{"attr": "email", "op": "ends_with", "values": ["@example.com"]}]})
    plan_set(actor=seed, flag="invoice-engine", environment="staging", version=None,
             stages=plan_template(internal_cohorts=["internal-staff"], soak_seconds=0))
    guardrail_set(actor=seed, flag="invoice-engine", environment="staging", version=None, max_error_rate=2,
                  action="pause")
    for _ in range(4):  # staging is at 5%: production starts its own rollout from the beginning
        submit_state(actor=seed, flag="invoice-engine", environment="staging", action="flag_state.advanced")

    requester = site.session_for("eddie")
    requester.goto(f"{site.url}/flags/invoice-engine/?env=production")
    card = requester.locator("#state-production")
    expect(card.get_by_role("list", name="Rollout stages")).to_have_count(0)
    card.get_by_role("button", name="Request: Promote from Staging").click()
    expect(card.get_by_role("status")).to_contain_text("Waiting for approval: change request #")
    expect(card.locator(".msg-warning a", has_text="promote the plan, guardrails and targeting")).to_be_visible()
    expect(card.get_by_role("list", name="Rollout stages")).to_have_count(0)  # nothing copied yet

    approver = site.session_for("abby")
    approver.get_by_role("navigation", name="Main").get_by_role("link", name="Change requests").click()
    inbox = approver.get_by_role("region", name=re.compile("Waiting for you"))
    inbox.get_by_role("link", name=re.compile("promote the plan, guardrails and targeting of invoice-engine "
                                              "from staging to production")).click()
    expect(approver.locator("table.diff tr", has_text="plan")).to_contain_text("retire legacy")
    expect(approver.locator("table.diff tr", has_text="guardrails")).to_contain_text('"max_error_rate": 2.0')
    screenshot(approver, "promotion-change-request")
    approver.get_by_label("Comment").fill("same plan as staging")
    approver.get_by_role("button", name="Approve and apply").click()
    expect(approver.get_by_role("status")).to_contain_text("Approved and applied.")

    requester.goto(f"{site.url}/flags/invoice-engine/?env=production#state-production")
    timeline = card.get_by_role("list", name="Rollout stages")
    expect(timeline.get_by_role("listitem")).to_have_count(8)
    expect(card.locator(".badge", has_text="stage 0 of 8")).to_be_visible()
    expect(card.locator(".big")).to_have_text("0%")  # the percentage reached in staging is not promoted
    expect(card.locator(".chips .include")).to_contain_text("internal-staff")
    expect(card.get_by_role("link", name="flag_state.promoted")).to_be_visible()
    screenshot(requester, "promotion-applied")

    from rollout.models import Guardrail

    copied = Guardrail.objects.get(flag_state__flag__key="invoice-engine", flag_state__environment__key="production")
    assert (float(copied.max_error_rate or 0), copied.action) == (2.0, "pause")


def test_change_request__approved_by_a_second_user__applied_and_requester_sees_it(site: Site) -> None:
    _live_flag(percentage=10, environment="production", risk="medium")
    requester = site.session_for("eddie")
    requester.goto(f"{site.url}/flags/invoice-engine/?env=production")
    card = requester.locator("#state-production")
    card.get_by_text("Change the percentage").click()
    card.get_by_label("Parallel percentage").fill("25")
    card.get_by_label("Reason").first.fill("pilot went well")
    card.get_by_role("button", name="Request approval").first.click()
    expect(card.get_by_role("status")).to_contain_text("Waiting for approval: change request #")
    expect(card.locator(".big")).to_have_text("10%")

    approver = site.session_for("abby")
    approver.get_by_role("navigation", name="Main").get_by_role("link", name="Change requests").click()
    inbox = approver.get_by_role("region", name=re.compile("Waiting for you"))
    inbox.get_by_role("link", name=re.compile("change percentage")).click()
    expect(approver.locator("table.diff tr.changed", has_text="percentage")).to_contain_text("25")
    screenshot(approver, "change-request")
    approver.get_by_label("Comment").fill("looks healthy")
    approver.get_by_role("button", name="Approve and apply").click()
    expect(approver.get_by_role("status")).to_contain_text("Approved and applied.")

    requester.goto(f"{site.url}/changes/")
    mine = requester.get_by_role("region", name="Your requests")
    expect(mine).to_contain_text("Approved and applied")
    expect(mine).to_contain_text("looks healthy")
    requester.goto(f"{site.url}/flags/invoice-engine/#state-production")  # the dashboard's links open the tab
    expect(requester.locator("#state-production .big")).to_have_text("25%")

    # Four eyes: the requester cannot approve their own request.
    from rollout.models import ChangeRequest

    csrf = next(c["value"] for c in requester.context.cookies() if c["name"] == "csrftoken")
    response = requester.request.post(f"{site.url}/changes/{ChangeRequest.objects.get().pk}/approve/",
                                      headers={"X-CSRFToken": csrf})
    assert response.status == 403


def test_audit__export_of_the_filtered_log__downloads_and_verifies(site: Site, tmp_path: Any) -> None:
    _live_flag(percentage=25)
    page = site.session_for("cora")
    page.goto(f"{site.url}/audit/?action=flag_state.updated")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Export CSV").click()
    assert download_info.value.suggested_filename.endswith(".csv.zip")
    path = tmp_path / "export.csv.zip"
    download_info.value.save_as(path)
    import zipfile

    with zipfile.ZipFile(path) as zf:  # the file and its signed manifest, together (issue 18)
        [name] = [n for n in zf.namelist() if n != "manifest.json"]
        lines = zf.read(name).decode().strip().splitlines()
        assert "manifest.json" in zf.namelist()
    assert len(lines) == 2 and "flag_state.updated" in lines[1]

    # The offline verifier and the public key, from the page itself; the zip verifies with nothing else.
    import subprocess
    import sys

    page.get_by_text("Verify an export offline").click()
    with page.expect_download() as verifier_info:
        page.get_by_role("link", name="offline verifier (verify_export.py)").click()
    verifier_info.value.save_as(tmp_path / "verify_export.py")
    with page.expect_download() as key_info:
        page.get_by_role("link", name="signing public key").click()
    key_info.value.save_as(tmp_path / "key.json")
    run = subprocess.run([sys.executable, str(tmp_path / "verify_export.py"), str(path), "--public-key",
                          str(tmp_path / "key.json")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    page.get_by_role("button", name="Verify the chain now").click()
    expect(page.locator("#verify-result")).to_contain_text("Verified: all")
    screenshot(page, "audit-tools")


def test_audit__verify_a_long_chain__background_job_polled_until_its_report(site: Site, settings: Any) -> None:
    settings.TURNOUT_AUDIT_VERIFY_SYNC_MAX = 3  # the people and the flag make a longer chain than this
    _live_flag(percentage=25)
    page = site.session_for("cora")
    page.goto(f"{site.url}/audit/")
    page.get_by_role("button", name="Verify the chain now").click()
    result = page.locator("#verify-result")
    expect(result).to_contain_text("runs in the background")
    expect(result.get_by_role("progressbar")).to_be_visible()
    expect(result).to_contain_text("Verified: all")
    expect(result).to_contain_text("Recorded in the audit log as event #")
    screenshot(page, "audit-verify-background")
    result.get_by_role("link", name="its own page").click()
    expect(page.get_by_role("heading", name="Chain verification")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("Verified: all")


def test_flag_page__readiness_swapped_in_by_htmx__its_charts_are_drawn(site: Site) -> None:
    """The flag page loads each readiness report with htmx, which drops <script> elements from swapped
    content: the charts' data used to ride in json_script elements, so the flag page showed empty charts."""
    _live_flag(percentage=50, risk="medium")
    _sdk_traffic(site)
    page = site.session_for("ada")
    page.goto(f"{site.url}/flags/invoice-engine/")
    expect(page.locator("#readiness-staging canvas")).to_have_count(3)
    page.wait_for_function("[...document.querySelectorAll('#readiness-staging canvas[data-chart]')]"
                           ".every(c => Chart.getChart(c))")


def test_readiness__traffic_reported_by_the_sdk__charts_legacy_against_parallel(site: Site) -> None:
    from rollout.telemetry.mismatches import mismatch_groups_refresh

    _live_flag(percentage=50, risk="medium")
    _sdk_traffic(site)
    mismatch_groups_refresh()  # what the beat does every minute
    page = site.session_for("ada")
    page.goto(f"{site.url}/flags/invoice-engine/staging/readiness/")
    report = page.locator("#readiness-staging")
    traffic = report.get_by_role("table", name="Legacy and parallel over the window")
    parallel = traffic.get_by_role("row", name=re.compile(r"^parallel"))
    expect(parallel.get_by_role("cell").first).not_to_have_text("0")
    expect(parallel).to_contain_text("%")  # an error rate: the parallel path failed now and then
    expect(report.locator("canvas")).to_have_count(3)
    expect(report).to_contain_text("kind of difference")
    page.wait_for_function("document.querySelectorAll('canvas[data-chart]').length === 3 && "
                           "[...document.querySelectorAll('canvas[data-chart]')].every(c => Chart.getChart(c))")
    screenshot(page, "readiness")


def _migration_traffic(site: Site, *, calls: int = 120, sdk_key: str | None = None) -> str:
    """Reads and writes of ``accounts-store`` through ``client.migration()``: every 10th write fails on the
    non-authoritative store (a divergence, identified by the account), every 20th compared read disagrees."""
    import turnout

    from common.actors import Actor
    from rollout.access.keys import sdk_key_create

    secret = sdk_key or sdk_key_create(actor=Actor.system("test"), environment="staging", name="accounts-svc")[1]
    stores: dict[str, dict[str, int]] = {"legacy": {}, "parallel": {}}
    client = turnout.Turnout(site.url, secret, stream=False, flush_interval=3600)
    try:
        assert client.wait_until_ready(10)
        accounts = client.migration("accounts-store", budget=2.0, identify=lambda saved: saved[0])
        for n in range(calls):
            key, attrs, account = f"user-{n}", {"tenant_id": f"tenant-{n % 30}"}, f"acct-{n % 40}"
            authoritative = accounts.stage(key, attrs).authoritative.value

            def save(side: str, n: int = n, account: str = account, authoritative: str = authoritative
                     ) -> tuple[str, int]:
                if side != authoritative and n % 20 == 0:
                    raise OSError(f"{side} store refused the write")
                stores[side][account] = n
                return account, n

            def load(side: str, n: int = n, account: str = account) -> int:
                return stores[side].get(account, 0) + (1 if side == "parallel" and n % 40 == 1 else 0)

            if n % 2 == 0:
                accounts.write(key, attrs, legacy=lambda: save("legacy"), parallel=lambda: save("parallel"))
            else:
                accounts.read(key, attrs, legacy=lambda: load("legacy"), parallel=lambda: load("parallel"))
    finally:
        client.close()  # waits for the other origins, then sends the last metrics batch
    return secret


def _migration_history(minutes: int = 20) -> None:
    """Earlier minutes of accounts-store reports, as the SDK's batches leave them (the charts' history)."""
    from datetime import timedelta

    from common import clock
    from rollout.models import Environment, MigrationMinute

    staging = Environment.objects.get(key="staging")
    now = clock.now().replace(second=0, microsecond=0)
    for m in range(minutes, 0, -1):
        for origin, operation, calls, bucket, extra in (
                ("legacy", "read", 60 + m % 7 * 5, 8, {"checks": 60 + m % 7 * 5, "inconsistent": m % 3}),
                ("parallel", "read", 60 + m % 7 * 5, 6, {}),
                ("legacy", "write", 20 + m % 5, 9, {}),
                ("parallel", "write", 20 + m % 5, 7, {"errors": m % 4 // 3, "divergences": m % 4 // 3})):
            latency = [0] * 16
            latency[bucket] = calls
            MigrationMinute.objects.create(environment=staging, flag_key="accounts-store", stage="shadow",
                                           origin=origin, operation=operation, minute=now - timedelta(minutes=m),
                                           calls=calls, latency_ms=latency, **extra)


def test_migration_card__advance_rollback_with_reason_resolve__charts_and_divergence_list(site: Site) -> None:
    """The data migration on the flag page: per-origin charts and the divergence list from real SDK traffic;
    the editor moves everyone to live, rolls back with a reason (seeing the divergences written since parallel
    became authoritative) and marks a divergence resolved."""
    from rollout.datamigration.demo import seed_migration_demo

    seed_migration_demo()  # accounts-store in shadow in staging
    _migration_history()
    sdk_key = _migration_traffic(site)
    page = site.session_for("eddie")
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(f"{site.url}/flags/accounts-store/?env=staging")
    card = page.locator("#migration-staging")
    expect(card.locator("header .badge").first).to_have_text("shadow")
    expect(card.locator("canvas[data-chart]")).to_have_count(4)
    page.wait_for_function("[...document.querySelectorAll('#migration-staging canvas[data-chart]')]"
                           ".every(c => Chart.getChart(c))")
    expect(card.locator("table.divergences")).to_contain_text("parallel")

    card.get_by_text("Move forward").click()
    card.get_by_role("button", name="Move everyone to live").click()
    expect(page.locator("#state-staging .msg-success")).to_contain_text("Everyone in Staging moved to 'live'.")
    expect(card.locator("header .badge").first).to_have_text("live")

    _migration_traffic(site, calls=40, sdk_key=sdk_key)  # in live legacy is the other origin: its failed writes
    page.reload()
    card.get_by_text("Roll back one stage").click()
    panel = card.locator("details.migration-rollback")
    expect(panel).to_contain_text("since parallel became authoritative")
    expect(panel.locator("table.at-risk")).to_contain_text("legacy")
    reason = panel.get_by_label("Reason")
    expect(reason).to_have_attribute("required", "")
    reason.fill("legacy writes failing: reconcile before live again")
    panel.get_by_role("button", name="Roll back now").click()
    expect(page.locator("#state-staging .msg-success")).to_contain_text("Rolled back one stage in Staging.")
    expect(card.locator("header .badge").first).to_have_text("shadow")

    listed = card.locator("details.migration-divergences summary")
    before = int(re.search(r"\((\d+)\)", listed.inner_text()).group(1))  # type: ignore[union-attr]
    listed.click()
    card.locator("table.divergence-list input[type=checkbox]").first.check()
    card.get_by_label("How were they reconciled?").fill("copied by the backfill job")
    card.get_by_role("button", name="Mark resolved").click()
    expect(page.locator("#state-staging .msg-success")).to_contain_text("Marked 1 divergence(s) resolved")
    expect(card.locator("details.migration-divergences summary")).to_have_text(
        f"Unresolved divergences ({before - 1})")
    card.locator("details.migration-divergences summary").click()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    card.screenshot(path=str(SCREENSHOTS / "migration.png"))
    assert not problems, problems
