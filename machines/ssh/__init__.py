"""The SSH layer: one connector interface to lab machines, over paramiko.

Pure Python without Django models, so it can be used and tested on its own:

    spec = ConnectionSpec(hostname="lab-pc-3", username="tester", password=..., host_key=...)
    with SSHConnection(spec) as ssh:
        ssh.run(Command("python3", "-m", "venv", "/srv/tms/venvs/1"), timeout=300)
"""

from machines.ssh.commands import (
    Command,
    MaskString,
    PosixShell,
    PowerShell,
    Secret,
    shell_for,
)
from machines.ssh.connection import (
    CommandResult,
    ConnectionSpec,
    SSHConnection,
    fetch_host_key,
)
from machines.ssh.errors import (
    AuthenticationFailed,
    CommandTimeout,
    HostKeyMismatch,
    HostKeyUnknown,
    MachineUnreachable,
    RemoteCommandFailed,
    RemoteFileError,
    SSHError,
)
from machines.ssh.keys import HostKey
from machines.ssh.pool import close_all, drop_connection, get_connection

__all__ = [
    "AuthenticationFailed",
    "Command",
    "CommandResult",
    "CommandTimeout",
    "ConnectionSpec",
    "HostKey",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "MachineUnreachable",
    "MaskString",
    "PosixShell",
    "PowerShell",
    "RemoteCommandFailed",
    "RemoteFileError",
    "SSHConnection",
    "SSHError",
    "Secret",
    "close_all",
    "drop_connection",
    "fetch_host_key",
    "get_connection",
    "shell_for",
]
