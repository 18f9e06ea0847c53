from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.actors import Actor
from common.errors import ServiceError
from rollout.access.keys import api_token_create


class Command(BaseCommand):
    help = "Create an API token for a user and print it once on stdout (it is stored hashed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            token, secret = api_token_create(actor=Actor.system("manage.py create_api_token"),
                                             username=options["username"], name=options["name"])
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        self.stderr.write(f"API token {token.prefix}… for {options['username']} — shown once, store it now:")
        self.stdout.write(secret)
