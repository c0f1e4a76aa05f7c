"""What can go wrong talking to a lab machine, in words a lab admin can act on.

Every error names the machine as ``host:port`` and never carries a password, key or passphrase.
``extra`` holds the same facts in machine-readable form for the API.
"""

from __future__ import annotations

from typing import Any

from rest_framework import status

from test_management_system.errors import ApplicationError


def endpoint(host: str, port: int) -> str:
    """``host:port`` as people write it (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SSHError(ApplicationError):
    """The machine could not be used over SSH. Infrastructure, never a test failure."""

    status_code = status.HTTP_502_BAD_GATEWAY

    def __init__(
        self, message: str, *, host: str, port: int, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, extra={"host": host, "port": port, **(extra or {})})
        self.host = host
        self.port = port


class MachineUnreachable(SSHError):
    """DNS failure, connection refused, no route, timeout, or the connection dropped."""


class AuthenticationFailed(SSHError):
    """The machine refused the credentials, or the stored private key cannot be used."""


class HostKeyUnknown(SSHError):
    """No host key is pinned yet: somebody has to look at the fingerprint and trust it."""

    def __init__(self, *, host: str, port: int, key_type: str, offered_fingerprint: str) -> None:
        super().__init__(
            f"{endpoint(host, port)} has no trusted host key yet. It offered a {key_type} key "
            f"with fingerprint {offered_fingerprint}. Compare it with the output of "
            "`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on that machine, then use the "
            '"trust host key" action.',
            host=host,
            port=port,
            extra={"key_type": key_type, "offered_fingerprint": offered_fingerprint},
        )
        self.key_type = key_type
        self.offered_fingerprint = offered_fingerprint


class HostKeyMismatch(SSHError):
    """The machine presented a different host key than the one pinned: refused."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        expected_type: str,
        expected_fingerprint: str,
        offered_type: str,
        offered_fingerprint: str,
    ) -> None:
        super().__init__(
            f"The host key of {endpoint(host, port)} has CHANGED, so the connection was refused. "
            f"Trusted: {expected_type} {expected_fingerprint}; offered now: {offered_type} "
            f"{offered_fingerprint}. Either the machine was reinstalled or its SSH keys were "
            "regenerated, or something is intercepting the connection. Verify the new "
            'fingerprint on the machine itself before using the "trust host key" action again.',
            host=host,
            port=port,
            extra={
                "expected_fingerprint": expected_fingerprint,
                "offered_fingerprint": offered_fingerprint,
                "expected_key_type": expected_type,
                "offered_key_type": offered_type,
            },
        )
        self.expected_fingerprint = expected_fingerprint
        self.offered_fingerprint = offered_fingerprint


def tail(text: str, limit: int = 2000) -> str:
    """The last ``limit`` characters: where the reason for a failure usually is."""
    return text if len(text) <= limit else "..." + text[-limit:]


class RemoteCommandFailed(SSHError):
    """A command ran and exited non-zero while the caller required success."""

    def __init__(
        self, *, host: str, port: int, command: str, exit_code: int, stdout: str, stderr: str
    ) -> None:
        stderr_tail = tail(stderr)
        stdout_tail = tail(stdout)
        detail = stderr_tail.strip() or stdout_tail.strip() or "(no output)"
        super().__init__(
            f"Command on {endpoint(host, port)} exited with code {exit_code}: {command}\n{detail}",
            host=host,
            port=port,
            extra={
                "command": command,
                "exit_code": exit_code,
                "stdout_tail": stdout_tail,
                "stderr_tail": stderr_tail,
            },
        )
        self.command = command
        self.exit_code = exit_code
        self.stdout = stdout_tail
        self.stderr = stderr_tail


class CommandTimeout(SSHError):
    """A command ran past its deadline; its process group on the machine was killed."""

    def __init__(
        self, *, host: str, port: int, command: str, timeout: float, killed: bool, stdout: str = ""
    ) -> None:
        outcome = (
            "it was killed on the machine."
            if killed
            else "the machine did not confirm it was killed; it may still be running."
        )
        super().__init__(
            f"Command on {endpoint(host, port)} did not finish within {timeout:g} s and {outcome} "
            f"Command: {command}",
            host=host,
            port=port,
            extra={"command": command, "timeout": timeout, "killed": killed},
        )
        self.command = command
        self.timeout = timeout
        self.killed = killed
        self.stdout = tail(stdout)


class RemoteFileError(SSHError):
    """An SFTP operation failed on a path (missing, permission denied, disk full ...)."""

    def __init__(
        self, *, host: str, port: int, remote_path: str, action: str, reason: str, errno: int | None
    ) -> None:
        super().__init__(
            f"Could not {action} {remote_path!r} on {endpoint(host, port)}: {reason}",
            host=host,
            port=port,
            extra={"remote_path": remote_path, "errno": errno},
        )
        self.remote_path = remote_path
        self.errno = errno

    @property
    def missing(self) -> bool:
        return self.errno == 2  # ENOENT, as the SFTP server reports it
