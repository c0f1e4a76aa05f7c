"""Encrypted field for machine secrets.

django-fernet-encrypted-fields returns the stored ciphertext *as if it were the secret* when no
configured key decrypts it (after a lost or rotated key); that would hand a Fernet token to SSH
as a password. This field raises a clear error instead, so the failure names its cause.
"""

from __future__ import annotations

from typing import Any

from cryptography.fernet import InvalidToken
from encrypted_fields.fields import EncryptedTextField

from test_management_system.errors import ApplicationError


class SecretUndecryptable(ApplicationError):
    status_code = 500

    def __init__(self) -> None:
        super().__init__(
            "A stored machine credential cannot be decrypted with the configured keys. "
            "Put the previous key back in FIELD_ENCRYPTION_KEYS (or SECRET_KEY_FALLBACKS), "
            "then run `manage.py rotate_credentials`, or enter the credential again."
        )


class SecretField(EncryptedTextField):
    """Fernet-encrypted text; NULL when empty; refuses to pass ciphertext off as a secret."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("blank", True)
        kwargs.setdefault("null", True)
        super().__init__(*args, **kwargs)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        # Decrypt only what comes from the database: Django also calls to_python on the
        # plaintext while saving, where "not a token" is expected, not an error.
        if value is None:
            return None
        try:
            return self.f.decrypt(str(value).encode("utf-8")).decode("utf-8")
        except InvalidToken as exc:
            raise SecretUndecryptable() from exc

    def to_python(self, value: Any) -> Any:
        return value
