"""Host keys we pin, and the private keys we log in with."""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from machines.ssh.errors import AuthenticationFailed, endpoint


@dataclass(frozen=True)
class HostKey:
    """A server's public host key as stored with the machine.

    ``fingerprint`` is OpenSSH's ``SHA256:...`` form (base64 without padding), the one
    ``ssh-keygen -lf`` prints, so an admin can compare it on the machine itself.
    """

    key_type: str
    base64: str
    fingerprint: str

    @classmethod
    def from_pkey(cls, key: paramiko.PKey) -> HostKey:
        return cls(key_type=key.get_name(), base64=key.get_base64(), fingerprint=key.fingerprint)

    @classmethod
    def from_openssh_line(cls, line: str) -> HostKey:
        """From ``<type> <base64> [comment]`` (a ``.pub`` file or ``ssh-keyscan`` output)."""
        fields = line.split()
        if len(fields) < 2:
            raise ValueError("expected '<key type> <base64> [comment]'")
        return cls.from_pkey(_public_key(fields[0], fields[1]))

    def to_pkey(self) -> paramiko.PKey:
        key = _public_key(self.key_type, self.base64)
        if key.fingerprint != self.fingerprint:
            raise ValueError(
                f"stored fingerprint {self.fingerprint} does not match the stored key "
                f"({key.fingerprint}); the pinned host key record is corrupt"
            )
        return key

    def openssh_line(self) -> str:
        return f"{self.key_type} {self.base64}"


def _public_key(key_type: str, b64: str) -> paramiko.PKey:
    try:
        blob = base64.b64decode(b64.encode("ascii"), validate=True)
        return paramiko.PKey.from_type_string(key_type, blob)
    except (binascii.Error, UnicodeEncodeError, paramiko.SSHException, ValueError) as exc:
        raise ValueError(f"not a valid {key_type} public key: {exc}") from exc


def load_private_key(text: str, passphrase: str | None, *, host: str, port: int) -> paramiko.PKey:
    """Parse a private key (OpenSSH or PEM text), reporting problems without the key itself.

    cryptography inspects the key first because its errors tell a missing passphrase, a wrong
    one and an unsupported format apart; paramiko's say "invalid key" for all of them.
    """
    where = endpoint(host, port)
    data = text.strip().encode("utf-8") + b"\n"
    password = passphrase.encode("utf-8") if passphrase else None
    openssh = b"BEGIN OPENSSH PRIVATE KEY" in data
    loader = serialization.load_ssh_private_key if openssh else serialization.load_pem_private_key
    try:
        try:
            parsed = loader(data, password=password)
        except TypeError as exc:
            if password is not None and "not encrypted" in str(exc):
                # A passphrase stored for an unencrypted key is harmless: ignore it.
                password = None
                parsed = loader(data, password=None)
            else:
                raise AuthenticationFailed(
                    f"The private key stored for {where} is protected by a passphrase, but no "
                    "passphrase is stored. Add the passphrase to the machine's credentials.",
                    host=host,
                    port=port,
                ) from None
    except ValueError:
        reason = (
            "the stored passphrase does not unlock it"
            if password is not None
            else "it is not a valid OpenSSH or PEM private key"
        )
        raise AuthenticationFailed(
            f"The private key stored for {where} cannot be used: {reason}.", host=host, port=port
        ) from None
    except UnsupportedAlgorithm:
        raise AuthenticationFailed(
            f"The private key stored for {where} uses an unsupported algorithm; use an "
            "Ed25519, ECDSA or RSA key.",
            host=host,
            port=port,
        ) from None

    key_class: type[paramiko.PKey]
    if isinstance(parsed, ed25519.Ed25519PrivateKey):
        key_class = paramiko.Ed25519Key
    elif isinstance(parsed, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    elif isinstance(parsed, ec.EllipticCurvePrivateKey):
        key_class = paramiko.ECDSAKey
    else:
        raise AuthenticationFailed(
            f"The private key stored for {where} is a {type(parsed).__name__}; use an Ed25519, "
            "ECDSA or RSA key.",
            host=host,
            port=port,
        )
    try:
        return key_class.from_private_key(
            io.StringIO(data.decode("utf-8")),
            password=password.decode("utf-8") if password else None,
        )
    except (paramiko.SSHException, ValueError) as exc:
        raise AuthenticationFailed(
            f"The private key stored for {where} cannot be loaded ({type(exc).__name__}).",
            host=host,
            port=port,
        ) from None
