from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.actors import Actor
from common.errors import ServiceError
from rollout.access.keys import sdk_key_revoke


class Command(BaseCommand):
    help = "Revoke an SDK key by its prefix (e.g. sdk_AbCdEfGh): every request with it gets 401 at once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix")
        parser.add_argument("--reason", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            key = sdk_key_revoke(actor=Actor.system("manage.py revoke_sdk_key"), prefix=options["prefix"],
                                 reason=options["reason"])
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"SDK key {key.prefix}… for {key.environment.key} revoked.")
