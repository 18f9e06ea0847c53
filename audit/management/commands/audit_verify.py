from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.anchors import AnchorError, check_anchor, load_anchor
from audit.verify import verify_chain


class Command(BaseCommand):
    help = ("Verify the whole audit chain (numbering, linkage, every hash, the head); exit 1 at the first bad event. "
            "With --anchor, also check that the chain still holds the head recorded in signed manifests. Runs here, "
            "in the terminal, however long the chain (the web UI and the API's POST run long ones in the background).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
        parser.add_argument("--anchor", action="append", default=[], metavar="MANIFEST",
                            help="an export manifest or evidence pack kept from earlier: its signed chain head "
                                 "must still stand (catches events removed from the end, or a rewritten chain); "
                                 "repeatable")
        parser.add_argument("--progress", action="store_true",
                            help="Print the events checked so far on stderr after every batch.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            anchors = [load_anchor(path) for path in options["anchor"]]
        except AnchorError as exc:
            raise CommandError(f"anchor refused: {exc}") from None
        report = verify_chain(progress=self._progress if options["progress"] else None)
        checked = [(anchor, check_anchor(anchor, report)) for anchor in anchors]
        broken = [(anchor, problem) for anchor, problem in checked if problem]
        if options["json"]:
            self.stdout.write(json.dumps({**report.as_dict(), "anchors": [
                {"source": a.source, "sequence": a.sequence, "hash": a.hash, "key_id": a.key_id,
                 "ok": problem is None, "problem": problem} for a, problem in checked]}, indent=2))
        if not report.ok:
            raise CommandError(f"audit chain BROKEN at sequence {report.first_bad_sequence}: {report.problem} "
                               f"({report.checked} events verified before it)")
        if broken:
            anchor, problem = broken[0]
            raise CommandError(f"audit chain CONTRADICTS anchor {anchor.source} (#{anchor.sequence}): {problem}")
        if not options["json"]:
            self.stdout.write(f"audit chain OK: {report.checked} events, head #{report.head_sequence} "
                              f"{report.head_hash}")
            for anchor in anchors:
                self.stdout.write(f"anchor OK: #{anchor.sequence} {anchor.hash} from {anchor.source} "
                                  f"(signed by {anchor.key_id[:16]}…)")

    def _progress(self, checked: int, total: int) -> None:
        self.stderr.write(f"checked {checked} of {total} events")
