"""First-run setup for `make run`: the demo, its people, keys and tokens (kept in var/, never committed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from common.conf import get_setting
from rollout.devsetup import dev_setup, welcome


class Command(BaseCommand):
    help = ("Load the demo once (data, one person per role, a rollout mid-way, a change request waiting) and "
            "keep the sign-ins, SDK keys and API tokens in var/; prints the block `make run` ends with.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--var", type=Path, default=None, help="where the secrets are kept (default: var/)")
        parser.add_argument("--quiet-block", action="store_true",
                            help="print one line instead of the block (`make run` prints it once the server is up)")

    def handle(self, *args: Any, **options: Any) -> None:
        access = dev_setup(var=options["var"])
        if options["quiet_block"]:
            self.stdout.write(f"Demo ready; starting Turnout on {access.url} (the sign-ins follow when it answers).")
            return
        self.stdout.write(welcome(access, traffic=bool(get_setting("DEMO_TRAFFIC"))))
