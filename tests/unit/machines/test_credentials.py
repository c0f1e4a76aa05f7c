"""Secrets are encrypted at rest, never shown back, and survive a key rotation."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from machines.fields import SecretUndecryptable
from machines.models import AuditEntry, MachineCredential
from machines.services.machines import InvalidCredentials
from test_management_system.errors import ApplicationError
from tests.factories import PASSWORD, make_machine, private_key_text

pytestmark = pytest.mark.django_db

SECRET_COLUMNS = ("password", "private_key", "passphrase")


def _raw_columns(machine_id: int) -> dict[str, str | None]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT password, private_key, passphrase FROM machines_machinecredential "
            "WHERE machine_id = %s",
            [machine_id],
        )
        return dict(zip(SECRET_COLUMNS, cursor.fetchone(), strict=True))


def _forget_derived_keys() -> None:
    # The field caches the keys it derived from the settings; a rotation test changes them.
    for name in SECRET_COLUMNS:
        field = MachineCredential._meta.get_field(name)
        field.__dict__.pop("keys", None)
        field.__dict__.pop("f", None)


@pytest.fixture(autouse=True)
def _fresh_keys():
    _forget_derived_keys()
    yield
    _forget_derived_keys()


def test_no_plaintext_secret_reaches_the_database():
    key = private_key_text("hunter2-phrase")
    machine = make_machine(private_key=key, passphrase="hunter2-phrase")
    raw = _raw_columns(machine.pk)
    for column, value in raw.items():
        assert value is not None, column
        assert value.startswith("gAAAAA"), f"{column} is not a Fernet token"
    dump = repr(raw)
    assert PASSWORD not in dump
    assert "hunter2-phrase" not in dump
    assert "OPENSSH PRIVATE KEY" not in dump
    # ...and reading the row back gives the secrets.
    credential = MachineCredential.objects.get(machine=machine)
    assert credential.password == PASSWORD
    assert credential.private_key == key
    assert credential.passphrase == "hunter2-phrase"


def test_an_empty_secret_is_stored_as_null():
    machine = make_machine(password=None, private_key=private_key_text())
    assert _raw_columns(machine.pk)["password"] is None


def test_audit_entries_never_hold_a_secret():
    make_machine(private_key=private_key_text("pp-secret"), passphrase="pp-secret")
    entry = AuditEntry.objects.get(action="machine.create")
    assert entry.changes["password"] == "set"
    assert entry.changes["private_key"] == "set"
    text = repr(entry.changes)
    assert PASSWORD not in text and "pp-secret" not in text and "PRIVATE KEY" not in text


def test_a_wrong_key_is_a_clear_error_not_ciphertext_posing_as_a_password(settings):
    machine = make_machine()
    settings.FIELD_ENCRYPTION_KEYS = settings.SALT_KEY = ["a-key-that-never-encrypted-it"]
    _forget_derived_keys()
    with pytest.raises(SecretUndecryptable, match="cannot be decrypted with the configured keys"):
        MachineCredential.objects.get(machine=machine)


def test_rotation_reencrypts_with_the_new_key_and_the_old_one_can_go(settings):
    machine = make_machine()
    before = _raw_columns(machine.pk)["password"]
    old = list(settings.SALT_KEY)
    settings.SALT_KEY = ["the-new-key", *old]
    _forget_derived_keys()
    out = StringIO()
    call_command("rotate_credentials", stdout=out)
    assert "Re-encrypted the credentials of 1 machine(s)." in out.getvalue()
    after = _raw_columns(machine.pk)["password"]
    assert after != before
    settings.SALT_KEY = ["the-new-key"]  # the old key is gone
    _forget_derived_keys()
    assert MachineCredential.objects.get(machine=machine).password == PASSWORD
    assert AuditEntry.objects.filter(action="credential.reencrypt").count() == 1


def test_a_garbage_private_key_is_refused_with_a_reason():
    with pytest.raises(InvalidCredentials, match="not a valid OpenSSH or PEM private key"):
        make_machine(password=None, private_key="ssh-ed25519 AAAA... this is a public key")


def test_an_encrypted_key_needs_its_passphrase():
    with pytest.raises(InvalidCredentials, match="protected by a passphrase, but no passphrase"):
        make_machine(password=None, private_key=private_key_text("pp"))
    with pytest.raises(InvalidCredentials, match="the stored passphrase does not unlock it"):
        make_machine(password=None, private_key=private_key_text("pp"), passphrase="nope")


def test_a_machine_needs_some_credential():
    with pytest.raises(ApplicationError, match="Give a password or a private key"):
        make_machine(password=None)
