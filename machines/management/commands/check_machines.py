from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from machines import services
from machines.models import Machine


class Command(BaseCommand):
    help = "Connect to machines over SSH, read their facts and record their status."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("names", nargs="*", help="machine names (default: every enabled one)")

    def handle(self, *args: Any, **options: Any) -> None:
        machines = Machine.objects.all()
        if options["names"]:
            machines = machines.filter(name__in=options["names"])
            missing = set(options["names"]) - set(machines.values_list("name", flat=True))
            if missing:
                raise CommandError(f"No machine named {', '.join(sorted(missing))}.")
        else:
            machines = machines.filter(enabled=True)
        failed = 0
        for machine in machines:
            result = services.machine_check(machine=machine, source="cli")
            line = f"{machine.name:20} {result.status:8} {result.message}"
            if result.ok:
                self.stdout.write(self.style.SUCCESS(line))
                for warning in result.warnings:
                    self.stdout.write(self.style.WARNING(f"  warning: {warning}"))
            else:
                failed += 1
                self.stdout.write(self.style.ERROR(line))
        if failed:
            raise CommandError(f"{failed} machine(s) could not be checked.")
