"""`make run`'s first-run setup and the block it ends with (development only).

``dev_setup`` loads the demo (``rollout.demo``) and its data migration (``rollout.datamigration.demo``:
``accounts-store`` in ``shadow`` in staging), creates one person per role with a random password,
an SDK key per environment and an API token for the editor, the approver and the compliance reviewer;
the secrets are kept in ``var/`` (mode 0600, never committed) so every later ``make run`` prints the
same ones. The block
(``welcome``) is what a new user needs: the URL, the sign-ins, the SDK key and the environment
variables the docs' examples use (also written to ``var/demo.env``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth import get_user_model

from common.actors import Actor
from common.conf import get_setting
from config.env import VAR_DIR
from rollout.access.keys import api_token_create, sdk_key_create
from rollout.datamigration.demo import seed_migration_demo
from rollout.demo import PEOPLE, seed_demo, seed_people, seed_story

SETUP = Actor.system("make run")
LOGINS = "dev-logins"
OLD_ADMIN_LOGIN = "dev-login"  # the admin's sign-in as earlier versions kept it
SDK_KEYS = {"staging": "dev-sdk-key", "production": "dev-sdk-key-production"}
TOKENS = {"eddie": "dev-api-token-eddie", "april": "dev-api-token-april", "carla": "dev-api-token-carla"}
WELCOME = "dev-welcome.txt"
DEMO_ENV = "demo.env"


@dataclass
class DevAccess:
    url: str
    logins: list[tuple[str, str, str, str]] = field(default_factory=list)  # role, username, password, what
    sdk_keys: dict[str, str] = field(default_factory=dict)  # environment -> secret
    tokens: dict[str, str] = field(default_factory=dict)  # username -> secret


def _write_secret(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def _read(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def _passwords(var: Path) -> dict[str, str]:
    """Username -> password as kept in var/; a password is made for each person who has none yet."""
    known: dict[str, str] = {}
    for line in _read(var / LOGINS).splitlines():
        parts = line.split()
        if len(parts) == 2:
            known[parts[0]] = parts[1]
    old = _read(var / OLD_ADMIN_LOGIN).split()
    if len(old) == 2 and "admin" not in known:
        known["admin"] = old[1]
    return known


def dev_setup(*, url: str | None = None, var: Path | None = None) -> DevAccess:
    """Load the demo and the people, keys and tokens that are missing; returns what to print."""
    var = var or VAR_DIR
    var.mkdir(parents=True, exist_ok=True)
    seed_demo()
    # The data migration is seeded here, not in ``seed_demo``: configuration files carry a migration flag's
    # kind but not its stages (those move only through ``migration.stage_set``), so the demo the
    # configuration round trip is checked on stays free of them.
    seed_migration_demo(environment="staging")
    User = get_user_model()
    passwords = _passwords(var)
    for person in PEOPLE:
        username = person["username"]
        if username not in passwords and not User.objects.filter(username=username).exists():
            passwords[username] = secrets.token_urlsafe(12)
    seed_people(passwords=passwords)
    _write_secret(var / LOGINS, "".join(f"{u} {p}\n" for u, p in sorted(passwords.items())))
    seed_story()
    access = DevAccess(url=url or str(get_setting("DEV_URL")))
    for person in PEOPLE:
        username = person["username"]
        access.logins.append((person["role"], username, passwords.get(username, "(set before this setup)"),
                              person["name"]))
    for environment, name in SDK_KEYS.items():
        path = var / name
        if not _read(path):
            _write_secret(path, sdk_key_create(actor=SETUP, environment=environment, name="demo (make run)")[1] + "\n")
        access.sdk_keys[environment] = _read(path)
    for username, name in TOKENS.items():
        path = var / name
        if not _read(path) and User.objects.filter(username=username, is_active=True).exists():
            _write_secret(path, api_token_create(actor=SETUP, username=username, name="demo (make run)")[1] + "\n")
        if _read(path):
            access.tokens[username] = _read(path)
    _write_secret(var / DEMO_ENV, demo_env(access))
    _write_secret(var / WELCOME, welcome(access, traffic=bool(get_setting("DEMO_TRAFFIC"))))
    return access


def demo_env(access: DevAccess) -> str:
    """The variables the docs' examples use, for ``. var/demo.env``."""
    lines = [f"export TURNOUT_URL={access.url}", f"export TURNOUT_SDK_KEY={access.sdk_keys.get('staging', '')}",
             f"export TURNOUT_SDK_KEY_PRODUCTION={access.sdk_keys.get('production', '')}",
             f"export TURNOUT_TOKEN={access.tokens.get('eddie', '')}",
             f"export TURNOUT_APPROVER_TOKEN={access.tokens.get('april', '')}",
             f"export TURNOUT_COMPLIANCE_TOKEN={access.tokens.get('carla', '')}"]
    return "\n".join(lines) + "\n"


def welcome(access: DevAccess, *, traffic: bool) -> str:
    """The block `make run` ends with."""
    rule = "=" * 96
    width = max(len(f"{u} / {p}") for _, u, p, _ in access.logins) if access.logins else 0
    rows = [rule, f"  Turnout is running:  {access.url}", "",
            "  Sign in as (development only: passwords kept in var/dev-logins)"]
    rows += [f"    {role:<11} {f'{u} / {p}':<{width}}   {what}" for role, u, p, what in access.logins]
    staging = access.sdk_keys.get("staging", "")
    rows += ["", f"  Demo SDK key (staging):     {staging}",
             f"  Demo SDK key (production):  {access.sdk_keys.get('production', '')}",
             f"  API tokens:                 eddie {access.tokens.get('eddie', '')}",
             f"                              april {access.tokens.get('april', '')}",
             f"                              carla {access.tokens.get('carla', '')}",
             "", f"  Try:  curl -H 'Authorization: Bearer {staging}' {access.url}/api/v1/sdk/ruleset",
             "  The docs' examples read TURNOUT_URL, TURNOUT_SDK_KEY and TURNOUT_TOKEN:  . var/demo.env",
             "  Waiting for april: a change request to widen invoice-engine in production (Change requests page).",
             "  Data migration: accounts-store in shadow in staging (writes both stores, compares reads).",
             "  Demo traffic: " + ("on, through the SDK (TURNOUT_DEMO_TRAFFIC=0 make run: off)" if traffic
                                   else "off (TURNOUT_DEMO_TRAFFIC=0)"),
             "  Ctrl-C stops the web server, the worker, beat and the demo.", rule]
    return "\n".join(rows) + "\n"
