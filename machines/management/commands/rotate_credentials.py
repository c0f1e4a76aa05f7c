"""Re-encrypts every machine credential with the current first key.

Rotation: put the new key first (FIELD_ENCRYPTION_KEYS=new,old or SECRET_KEY=new with the old
one in SECRET_KEY_FALLBACKS), run this, then drop the old key.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from machines.models import MachineCredential
from machines.services import audit_record


class Command(BaseCommand):
    help = "Re-encrypt all stored machine credentials with the current primary key."

    def handle(self, *args: Any, **options: Any) -> None:
        count = 0
        with transaction.atomic():
            for credential in MachineCredential.objects.select_for_update().select_related(
                "machine"
            ):
                # Reading decrypted with whichever key fits; saving encrypts with the first.
                credential.save(update_fields=["password", "private_key", "passphrase"])
                audit_record(
                    actor=None, source="cli", action="credential.reencrypt",
                    target=credential.machine,
                )  # fmt: skip
                count += 1
        self.stdout.write(
            self.style.SUCCESS(f"Re-encrypted the credentials of {count} machine(s).")
        )
