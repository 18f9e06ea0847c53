from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.actors import Actor
from common.errors import ServiceError
from rollout.access.keys import sdk_key_create


class Command(BaseCommand):
    help = "Create an SDK key for one environment and print it once on stdout (it is stored hashed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("environment")
        parser.add_argument("--name", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            key, secret = sdk_key_create(actor=Actor.system("manage.py create_sdk_key"),
                                         environment=options["environment"], name=options["name"])
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        self.stderr.write(f"SDK key {key.prefix}… for {key.environment.key} — shown once, store it now:")
        self.stdout.write(secret)
