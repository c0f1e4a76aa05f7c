"""Loads the demo data `make run` shows: an admin account (and, as the apps grow, a machine for
this host, a simulated board and sample cases). Safe to run again: it keeps what exists."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

DEMO_ADMIN = "admin"


def _demo_password() -> str:
    path = settings.VAR_DIR / "demo_admin_password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    return path.read_text().strip()


class Command(BaseCommand):
    help = "Create the demo admin account and sample data (idempotent)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000/", help="URL to print.")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            self.stderr.write("demo_data refuses to run with TMS_ENV=production.")
            raise SystemExit(2)
        user_model = get_user_model()
        password = _demo_password()
        user, created = user_model.objects.get_or_create(
            username=DEMO_ADMIN, defaults={"is_staff": True, "is_superuser": True}
        )
        if created or not user.check_password(password):
            user.set_password(password)
            user.is_staff = user.is_superuser = True
            user.save(update_fields=["password", "is_staff", "is_superuser"])
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo ready. Open {options['url']} and sign in as "
                f"{DEMO_ADMIN} / {password}  (kept in {settings.VAR_DIR / 'demo_admin_password'})"
            )
        )
