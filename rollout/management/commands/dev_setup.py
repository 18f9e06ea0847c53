"""First-run setup for `make run`: demo data, an admin login and a demo SDK key, printed each time."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from common.actors import Actor
from config.env import VAR_DIR
from rollout.access.keys import sdk_key_create
from rollout.access.users import user_create
from rollout.demo import seed_demo


class Command(BaseCommand):
    help = "Seed the demo once and print the admin login and a demo SDK key (kept in var/, never committed)."

    def handle(self, *args: Any, **options: Any) -> None:
        seed_demo()
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        login_file = VAR_DIR / "dev-login"
        key_file = VAR_DIR / "dev-sdk-key"
        actor = Actor.system("make run")
        if not get_user_model().objects.filter(username="admin").exists():
            password = secrets.token_urlsafe(12)
            user_create(actor=actor, username="admin", password=password, roles=["admin"], is_superuser=True)
            login_file.write_text(f"admin {password}\n")
            login_file.chmod(0o600)
        if not key_file.exists():
            _, secret = sdk_key_create(actor=actor, environment="staging", name="demo (make run)")
            key_file.write_text(secret + "\n")
            key_file.chmod(0o600)
        login = login_file.read_text().split() if login_file.exists() else ["admin", "(set before this setup)"]
        sdk_key = key_file.read_text().strip()
        self.stdout.write(self.style.SUCCESS("\nTurnout is starting on http://127.0.0.1:8000"))
        self.stdout.write(f"  Sign in as:     {login[0]} / {login[1]}")
        self.stdout.write(f"  Demo SDK key:   {sdk_key}   (environment: staging)")
        self.stdout.write(f"  Try:            curl -H 'Authorization: Bearer {sdk_key}' "
                          "http://127.0.0.1:8000/api/v1/sdk/ruleset\n")
