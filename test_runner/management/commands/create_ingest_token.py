"""Makes an ingest token for a machine and prints its secret, which is never shown again."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from machines.models import Machine
from test_management_system.errors import ApplicationError
from test_runner.ingest.services import ingest_token_create


class Command(BaseCommand):
    help = "Create an ingest token for MACHINE (prints the secret once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("machine", help="the machine's name")
        parser.add_argument("name", help="what the token is for, e.g. the suite's name")

    def handle(self, *args: Any, **options: Any) -> None:
        machine = Machine.objects.filter(name=options["machine"]).first()
        if machine is None:
            raise CommandError(f"No machine named {options['machine']!r}.")
        try:
            token, secret = ingest_token_create(machine=machine, name=options["name"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stderr.write(
            f"Ingest token {token.name!r} for {machine.name} ({token.prefix}...). "
            "Keep the secret below; it is not shown again."
        )
        self.stdout.write(secret)
