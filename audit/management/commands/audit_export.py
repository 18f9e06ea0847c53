from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.exports import write_export_file, write_manifest
from audit.filters import FILTER_NAMES
from audit.services import audit_export_create, audit_export_fail, audit_export_finish
from common.actors import Actor
from common.errors import ServiceError


class Command(BaseCommand):
    help = ("Export audit events (csv or jsonl, with the API's filters) or an evidence pack (--evidence) to OUT, "
            "and its signed manifest to OUT.manifest.json. The export is itself audited.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("out", help="file to write")
        parser.add_argument("--format", choices=["csv", "jsonl"], default="jsonl")
        parser.add_argument("--evidence", metavar="TYPE:KEY",
                            help="an evidence pack (zip) for workload:KEY or flag_state:FLAG@ENV instead")
        for name in FILTER_NAMES:
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name)

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.system("manage.py audit_export")
        subject_type, _, subject_key = (options["evidence"] or "").partition(":")
        filters = {name: options[name] for name in FILTER_NAMES if options.get(name)}
        try:
            export = audit_export_create(
                actor=actor, format="zip" if subject_type else options["format"], filters=filters,
                subject_type=subject_type, subject_key=subject_key, background=False)
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        out = Path(options["out"])
        try:
            manifest = write_export_file(export, out)
        except Exception as exc:
            audit_export_fail(export_id=export.pk, error=f"{type(exc).__name__}: {exc}")
            raise
        manifest_path = out.with_name(out.name + ".manifest.json")
        write_manifest(manifest_path, manifest)
        audit_export_finish(export_id=export.pk, manifest=manifest)
        self.stdout.write(f"wrote {manifest['count']} events to {out} and the signed manifest to {manifest_path}")
