from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from audit.verify import verify_chain


class Command(BaseCommand):
    help = "Verify the whole audit chain (numbering, linkage, every hash, the head); exit 1 at the first bad event."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        report = verify_chain()
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        if not report.ok:
            raise CommandError(f"audit chain BROKEN at sequence {report.first_bad_sequence}: {report.problem} "
                               f"({report.checked} events verified before it)")
        if not options["json"]:
            self.stdout.write(f"audit chain OK: {report.checked} events, head #{report.head_sequence} "
                              f"{report.head_hash}")
