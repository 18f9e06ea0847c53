from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.signing import decode_public, public_keys


def offline_verifier() -> ModuleType:
    """The standalone verifier (tools/verify_export.py): one implementation for the CLI and reviewers."""
    path = Path(settings.BASE_DIR) / "tools" / "verify_export.py"
    spec = importlib.util.spec_from_file_location("turnout_verify_export", path)
    if spec is None or spec.loader is None:
        raise CommandError(f"cannot load the offline verifier from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Command(BaseCommand):
    help = ("Verify an audit export (FILE + MANIFEST) or an evidence pack (ZIP) offline: signature by this "
            "deployment's keys, file SHA-256, every event's hash and linkage.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file")
        parser.add_argument("manifest", nargs="?")
        parser.add_argument("--public-key", action="append", default=[],
                            help="trust this key file instead of the deployment's current and previous keys")

    def handle(self, *args: Any, **options: Any) -> None:
        verifier = offline_verifier()
        keys = options["public_key"]
        # By default, trust the deployment's published keys (current and previous), as /public-key lists them.
        trusted = None if keys else {k.key_id: decode_public(k.public_key) for k in public_keys()}
        try:
            manifest = verifier.verify(options["file"], options["manifest"], keys, report=self.stdout.write,
                                       trusted_keys=trusted)
        except (verifier.VerificationError, OSError, KeyError, ValueError) as exc:
            raise CommandError(f"FAILED: {exc}") from None
        self.stdout.write(f"VERIFIED: {manifest['count']} events, sequences {manifest['first_sequence']}.."
                          f"{manifest['last_sequence']} (chain head {manifest['chain_head']['sequence']})")
