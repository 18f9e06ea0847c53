"""Single sign-on end to end: Chromium, a real Turnout server process and a real OpenID provider
(django-oauth-toolkit, tests/oidc_provider) in its own process on loopback — no token is mocked.

Covers: Turnout configured by the issuer alone (the provider's discovery document); first sign-in creates the
person with the roles their groups map to; sign-out ends the provider's session too (RP-initiated logout);
a group change at the provider becomes a role change at the next sign-in (audited); a deactivated person is
refused.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import VIEWPORT, screenshot
from tests.conftest import ROOT, ServerProcess, free_port, wait_for_port

CLIENT_ID, CLIENT_SECRET = "turnout-test", "test-client-secret-" + "s" * 30
ROLE_MAP = "turnout-admins=admin,turnout-approvers=approver,turnout-viewers=viewer"
OP_PASSWORD = "provider-password-1"


@dataclass
class Provider:
    url: str
    env: dict[str, str]

    def cli(self, *args: str) -> None:
        subprocess.run([sys.executable, "-m", "tests.oidc_provider.admin_cli", *args], cwd=ROOT, env=self.env,
                       check=True, capture_output=True)


def _rsa_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[Provider]:
    import os

    port = free_port()
    # "localhost" for the provider, 127.0.0.1 for Turnout: two sites, two sets of cookies.
    url = f"http://localhost:{port}"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}}
    env.update(DJANGO_SETTINGS_MODULE="tests.oidc_provider.settings", OP_DATABASE=str(tmp_path / "op.sqlite3"),
               OP_RSA_KEY=_rsa_pem(), OP_ISSUER=f"{url}/o", PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "django", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "django", "runserver", f"localhost:{port}", "--noreload"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield Provider(url=url, env=env)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def turnout(provider: Provider, transactional_db: Any) -> Iterator[ServerProcess]:
    # The issuer only: every endpoint comes from the provider's discovery document.
    server = ServerProcess(
        OIDC_RP_CLIENT_ID=CLIENT_ID, OIDC_RP_CLIENT_SECRET=CLIENT_SECRET, OIDC_OP_ISSUER=f"{provider.url}/o",
        OIDC_RP_SCOPES="openid email profile", TURNOUT_OIDC_ROLE_MAP=ROLE_MAP,
        TURNOUT_OIDC_PROVIDER_NAME="Example Identity Provider")
    provider.cli("app", CLIENT_ID, CLIENT_SECRET, f"{server.url}/oidc/callback/", f"{server.url}/login/")
    server.start()
    yield server
    server.stop()


def _sign_in(page: Any, turnout: ServerProcess, *, at_provider: bool) -> None:
    page.goto(f"{turnout.url}/login/")
    page.get_by_role("link", name="Sign in with Example Identity Provider").click()
    if at_provider:
        page.wait_for_url(lambda url: "/accounts/login/" in url)
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill(OP_PASSWORD)
        page.get_by_role("button", name="Continue").click()
    try:
        page.wait_for_url(lambda url: url.startswith(turnout.url) and "/oidc/" not in url)
    except Exception:
        raise AssertionError(f"stuck at {page.url}: {page.content()[:1500]}") from None


def _break_glass() -> None:
    """A kill where approval applies, by someone else: a review item for alice."""
    from common.actors import Actor
    from rollout.access.users import user_create
    from rollout.services.environments import environment_create
    from rollout.services.flags import flag_create, flag_state_kill, flag_state_update
    from rollout.services.workloads import workload_create

    seed = Actor.system("test")
    environment_create(actor=seed, key="production", name="Production", order=1, requires_approval=True)
    workload_create(actor=seed, key="billing", name="Billing")
    flag_create(actor=seed, key="invoice-engine", workload="billing")
    flag_state_update(actor=seed, flag="invoice-engine", environment="production", version=None, enabled=True,
                      percentage_value=25)
    ed = user_create(actor=seed, username="ed", password=None, roles=["editor"])
    flag_state_kill(actor=Actor.for_user(ed), flag="invoice-engine", environment="production",
                    reason="5xx spike after the deploy")


def _roles(username: str) -> list[str]:
    from django.contrib.auth import get_user_model

    from rollout.access.users import user_roles

    return user_roles(get_user_model().objects.get(username=username))


def test_sso__groups_map_to_roles__changed_at_next_sign_in__deactivated_refused(
        browser: Any, provider: Provider, turnout: ServerProcess) -> None:
    from audit.models import AuditEvent
    from common.actors import Actor
    from rollout.access.users import user_deactivate
    from rollout.services.environments import environment_create

    environment_create(actor=Actor.system("test"), key="staging", name="Staging")
    provider.cli("user", "alice", OP_PASSWORD, "alice@example.org", "turnout-approvers,unrelated")
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    # First sign-in: created just in time, with the role the group maps to.
    page.goto(f"{turnout.url}/login/")
    screenshot(page, "sso-sign-in")
    _sign_in(page, turnout, at_provider=True)
    assert page.locator(".who .username").inner_text() == "alice"
    assert page.locator(".who .badge").inner_text() == "approver"
    assert _roles("alice") == ["approver"]
    created = AuditEvent.objects.get(action="user.created", object_key="alice")
    assert (created.actor, created.after["roles"]) == ("system:oidc", ["approver"])
    assert AuditEvent.objects.filter(action="auth.login", object_key="alice").count() == 1

    # Sign out — of the provider too (RP-initiated logout): through its end-session endpoint and back.
    provider_pages: list[str] = []
    page.on("request", lambda r: provider_pages.append(r.url) if r.url.startswith(provider.url) else None)
    page.get_by_role("button", name="Sign out").click()
    try:
        page.wait_for_url(lambda url: url.startswith(turnout.url) and "/login/" in url)
    except Exception:
        raise AssertionError(f"stuck at {page.url}: {page.content()[:1500]}") from None
    [end_session] = [url for url in provider_pages if "/o/logout/" in url]
    assert "id_token_hint=" in end_session and "post_logout_redirect_uri=" in end_session
    assert AuditEvent.objects.filter(action="auth.logout", object_key="alice").count() == 1
    # The provider moves alice to the admins; the next sign-in asks for her password again (its session
    # ended) and applies the new group (audited).
    provider.cli("groups", "alice", "turnout-admins")
    _sign_in(page, turnout, at_provider=True)
    assert page.locator(".who .badge").inner_text() == "admin"
    changed = AuditEvent.objects.get(action="user.roles_changed", object_key="alice")
    assert (changed.actor, changed.before, changed.after) == ("system:oidc", {"roles": ["approver"]},
                                                              {"roles": ["admin"]})
    page.goto(f"{turnout.url}/people/")
    screenshot(page, "people")
    _break_glass()
    page.goto(f"{turnout.url}/reviews/")
    page.get_by_label("Comment").fill("errors confirmed in the dashboard; fix is deployed")
    page.get_by_role("button", name="Acknowledge").click()
    page.get_by_text("your comment is in the audit log").wait_for()
    screenshot(page, "break-glass-review")
    assert AuditEvent.objects.get(action="review_item.acknowledged").actor == "alice"
    page.goto(f"{turnout.url}/stale-flags/?days=0")
    screenshot(page, "stale-flags")

    # Deactivated in Turnout: the provider still vouches for alice (signed in there), Turnout refuses her.
    user_deactivate(actor=Actor.system("test"), username="alice", reason="left the team")
    page.goto(f"{turnout.url}/")
    page.wait_for_url(lambda url: "/login/" in url)
    _sign_in(page, turnout, at_provider=False)
    assert "/login/?sso=refused" in page.url
    assert "Single sign-on did not sign you in" in page.content()
    assert AuditEvent.objects.filter(action="auth.login", object_key="alice").count() == 2
    assert errors == []
    context.close()
