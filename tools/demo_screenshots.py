"""Screenshots of the first visit after `make run`, for docs/screenshots/.

    python tools/demo_screenshots.py [--url http://127.0.0.1:8000] [--var var] [--out docs/screenshots]
                                     [--chromium PATH]

Signs in as the demo people (their passwords are in var/dev-logins, written by `make run`) and takes:
the dashboard (admin), the mid-rollout flag page with its charts (admin), and the change request waiting
for the approver (april). Fails on any console error or failed request, like the browser tests.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent


def sign_in(browser: Any, url: str, username: str, password: str, problems: list[str]) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: problems.append(f"{username}: console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("requestfailed", lambda r: problems.append(f"{username}: request failed: {r.url}"))
    page.on("response", lambda r: problems.append(f"{username}: HTTP {r.status}: {r.url}")
            if r.status >= 400 else None)
    page.goto(f"{url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")
    return page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--var", type=Path, default=ROOT / "var")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = parser.parse_args()
    url = args.url.rstrip("/")
    passwords = dict(line.split() for line in (args.var / "dev-logins").read_text().splitlines() if line.strip())
    args.out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium) if args.chromium else p.chromium.launch()
        page = sign_in(browser, url, "admin", passwords["admin"], problems)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(args.out / "demo-dashboard.png"), full_page=True)
        page.goto(f"{url}/flags/invoice-engine/")
        page.wait_for_load_state("networkidle")
        page.locator("#state-production summary", has_text="Guardrails").first.click()  # limits and last figures
        page.locator("#readiness-production canvas").first.scroll_into_view_if_needed()
        page.wait_for_timeout(2500)  # Chart.js animates the first drawing
        page.screenshot(path=str(args.out / "demo-flag-mid-rollout.png"), full_page=True)
        april = sign_in(browser, url, "april", passwords["april"], problems)
        april.goto(f"{url}/changes/")
        april.get_by_role("link", name="advance invoice-engine@production").first.click()
        april.wait_for_load_state("networkidle")
        april.screenshot(path=str(args.out / "demo-change-request-for-april.png"), full_page=True)
        browser.close()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
