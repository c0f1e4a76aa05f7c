"""One SSH connection to one lab machine: commands, files and process groups over paramiko.

Host keys are pinned: the only key accepted is the one stored with the machine, and with none
stored the connection stops after reading the offered key so that a person can trust it
explicitly. Nothing is read from ``~/.ssh`` or an agent: a worker logs in with exactly the
credentials stored for the machine.

Every paramiko, socket and SFTP failure leaves this module as one of the errors in
``machines.ssh.errors``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import pathlib
import random
import secrets
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, NoReturn, TypeVar

import paramiko
from paramiko.ssh_exception import NoValidConnectionsError

from machines.ssh.commands import Command, PosixShell, PowerShell, shell_for
from machines.ssh.errors import (
    AuthenticationFailed,
    CommandTimeout,
    HostKeyMismatch,
    HostKeyUnknown,
    MachineUnreachable,
    RemoteCommandFailed,
    RemoteFileError,
    SSHError,
    endpoint,
)
from machines.ssh.keys import HostKey, load_private_key

__all__ = [
    "CommandResult",
    "ConnectionSpec",
    "HostKey",
    "SSHConnection",
    "fetch_host_key",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

MiB = 1024 * 1024
# After the remote `timeout` sends TERM, how long the process group gets before KILL.
KILL_AFTER = 3.0
# Extra wait beyond the remote deadline before we stop waiting on our side.
_CLIENT_SLACK = 5.0
# A command that exited but whose stdout is still held open by a background child: how long we
# keep reading before returning (OpenSSH sends the exit status before EOF in that case).
_EOF_GRACE = 2.0
_CHUNK = 64 * 1024
_STDIN_CHUNK = 32 * 1024
# Runs "$3" under a deadline enforced on the machine, so a hung command dies there even if this
# worker or the connection goes away first. coreutils `timeout` makes the command a process
# group and signals all of it (TERM, then KILL after "$2" s), but it stops caring once its own
# child has exited: members that ignored TERM are then killed here. stdin is passed on through
# fd 3 because sh gives background jobs /dev/null.
_DEADLINE_WRAPPER = (
    'exec 3<&0; timeout -k "$2" "$1" sh -c "$3" <&3 3<&- & p=$!; exec 3<&-; wait "$p"; rc=$?; '
    'if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then '
    "alive() { ps -e -o pgid= -o stat= | "
    "awk -v g=\"$p\" '$1 == g && $2 !~ /^Z/ {n++} END {exit n ? 0 : 1}'; }; "
    'if alive; then sleep "$2"; kill -KILL "-$p" 2>/dev/null; fi; fi; '
    'exit "$rc"'
)
# Exit codes of coreutils `timeout` when it had to end the command (TERM, then KILL).
_TIMEOUT_EXIT_CODES = (124, 128 + 9)


@dataclass(frozen=True, kw_only=True)
class ConnectionSpec:
    """Everything needed to reach one machine. Secrets never appear in ``repr``."""

    hostname: str
    port: int = 22
    username: str
    password: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)
    passphrase: str | None = field(default=None, repr=False)
    host_key: HostKey | None = None
    os_name: str = "linux"
    connect_timeout: float = 10.0
    auth_timeout: float = 15.0
    banner_timeout: float = 15.0
    keepalive: int = 15
    retries: int = 2
    # First pause between connect attempts; doubles each time, with +-50 % jitter.
    retry_backoff: float = 1.0

    def __post_init__(self) -> None:
        if not self.hostname.strip():
            raise ValueError("hostname is empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is not a TCP port")
        if not self.username:
            raise ValueError("username is empty")
        if self.retries < 0:
            raise ValueError("retries cannot be negative")
        shell_for(self.os_name)  # raises for an OS we have no shell for

    @property
    def endpoint(self) -> str:
        return endpoint(self.hostname, self.port)

    @property
    def host_key_name(self) -> str:
        """The name OpenSSH and paramiko file this host's key under."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str
    duration: float
    # True when output beyond ``max_output`` was dropped (the tail is kept).
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class _Transient(Exception):
    """A connect fault worth another attempt (refused, timeout, reset)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _UnknownHostKey(Exception):
    def __init__(self, key: paramiko.PKey) -> None:
        super().__init__(key.fingerprint)
        self.key = key


class _RejectUnknownHostKey(paramiko.RejectPolicy):
    """RejectPolicy that keeps the offered key, so the refusal can show its fingerprint."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> NoReturn:
        raise _UnknownHostKey(key)


def _classify_connect_error(exc: BaseException, spec: ConnectionSpec) -> Exception:
    """Our error for a failure while connecting; ``_Transient`` for the retryable ones."""
    where = spec.endpoint
    if isinstance(exc, NoValidConnectionsError):
        codes = {getattr(e, "errno", None) for e in exc.errors.values()}
        if codes == {errno.ECONNREFUSED}:
            return _Transient(
                f"connection refused (is sshd running there, and is {spec.port} its port?)"
            )
        return _Transient("no route to host (is the machine powered on and on the network?)")
    if isinstance(exc, socket.gaierror):
        return MachineUnreachable(
            f"Cannot reach {where}: the host name {spec.hostname!r} does not resolve ({exc}).",
            host=spec.hostname,
            port=spec.port,
        )
    if isinstance(exc, TimeoutError):
        return _Transient(f"no answer within {spec.connect_timeout:g} s")
    if isinstance(exc, ConnectionError | EOFError):
        return _Transient("the machine closed the connection during the SSH handshake")
    if isinstance(exc, paramiko.BadAuthenticationType):
        return AuthenticationFailed(
            f"{where} does not accept this kind of login for user {spec.username!r}; it accepts: "
            f"{', '.join(exc.allowed_types) or 'nothing'}.",
            host=spec.hostname,
            port=spec.port,
            extra={"allowed_types": list(exc.allowed_types)},
        )
    if isinstance(exc, paramiko.PasswordRequiredException):
        return AuthenticationFailed(
            f"The private key for {where} needs a passphrase and none is stored.",
            host=spec.hostname,
            port=spec.port,
        )
    if isinstance(exc, paramiko.AuthenticationException):
        if "timeout" in str(exc).lower():
            return MachineUnreachable(
                f"{where} did not finish the login within {spec.auth_timeout:g} s.",
                host=spec.hostname,
                port=spec.port,
            )
        methods = " and ".join(
            m for m, used in (("key", spec.private_key), ("password", spec.password)) if used
        )
        return AuthenticationFailed(
            f"{where} rejected the login of user {spec.username!r} ({methods}): wrong "
            "credentials, or the key is not in the user's authorized_keys.",
            host=spec.hostname,
            port=spec.port,
        )
    if isinstance(exc, paramiko.SSHException):
        text = str(exc)
        if "banner" in text or "No existing session" in text or "timed out" in text:
            return _Transient("the SSH handshake did not complete (server busy or not sshd?)")
        return MachineUnreachable(
            f"SSH negotiation with {where} failed: {text}",
            host=spec.hostname,
            port=spec.port,
        )
    if isinstance(exc, OSError):
        return _Transient(exc.strerror or str(exc))
    return MachineUnreachable(
        f"SSH connection to {where} failed: {type(exc).__name__}: {exc}",
        host=spec.hostname,
        port=spec.port,
    )


def _with_retries(spec: ConnectionSpec, attempt: Callable[[], _T]) -> _T:
    tries = 1 + spec.retries
    for number in range(1, tries + 1):
        try:
            return attempt()
        except _Transient as exc:
            if number == tries:
                raise MachineUnreachable(
                    f"Cannot reach {spec.endpoint}: {exc.reason}. Tried {tries} time"
                    f"{'s' if tries > 1 else ''}.",
                    host=spec.hostname,
                    port=spec.port,
                    extra={"attempts": tries},
                ) from None
            # Jitter keeps a fleet of workers from hammering a rebooting host in lockstep.
            jitter = random.uniform(0.5, 1.5)  # noqa: S311  # timing jitter, not cryptography
            delay = spec.retry_backoff * 2 ** (number - 1) * jitter
            logger.info(
                "SSH connect to %s failed (%s); retry %d/%d in %.1f s",
                spec.endpoint,
                exc.reason,
                number,
                spec.retries,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def fetch_host_key(hostname: str, port: int = 22, timeout: float = 10.0) -> HostKey:
    """The host key a server offers, read without logging in: input for the trust action.

    This trusts nothing by itself; the caller shows the fingerprint to a person first.
    """
    spec = ConnectionSpec(hostname=hostname, port=port, username="-", connect_timeout=timeout)

    def attempt() -> HostKey:
        transport: paramiko.Transport | None = None
        try:
            sock = socket.create_connection((hostname, port), timeout=timeout)
            transport = paramiko.Transport(sock)
            transport.banner_timeout = timeout
            transport.start_client(timeout=timeout)
            return HostKey.from_pkey(transport.get_remote_server_key())
        except Exception as exc:  # noqa: BLE001  # every failure is mapped to our errors
            raise _classify_connect_error(exc, spec) from None
        finally:
            if transport is not None:
                transport.close()

    return _with_retries(spec, attempt)


class _OutputTail:
    """Collects a stream, keeping at most ``limit`` bytes (the newest)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = bytearray()
        self.truncated = False

    def add(self, data: bytes) -> None:
        self.buffer += data
        excess = len(self.buffer) - self.limit
        if excess > 0:
            del self.buffer[:excess]
            self.truncated = True

    def text(self) -> str:
        return self.buffer.decode("utf-8", errors="replace")


class SSHConnection:
    """A logged-in session to one machine, connected on first use and again if it dropped.

    Safe to share between threads of one process (each command gets its own channel); never
    across ``fork()``: use ``machines.ssh.pool`` for that.
    """

    def __init__(self, spec: ConnectionSpec) -> None:
        self.spec = spec
        self.shell: PosixShell | PowerShell = shell_for(spec.os_name)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        state = "connected" if self.is_alive() else "not connected"
        return f"<SSHConnection {self.spec.username}@{self.spec.endpoint} {state}>"

    def __enter__(self) -> SSHConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- connection ---------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect and log in now (otherwise the first command does it)."""
        self._transport()

    def is_alive(self) -> bool:
        client = self._client
        transport = client.get_transport() if client is not None else None
        return bool(transport and transport.is_active() and transport.is_authenticated())

    def close(self) -> None:
        with self._lock:
            sftp, client = self._sftp, self._client
            self._sftp = self._client = None
        with contextlib.suppress(Exception):
            if sftp is not None:
                sftp.close()
        with contextlib.suppress(Exception):
            if client is not None:
                client.close()

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            if not self.is_alive():
                self.close()
                self._client = _with_retries(self.spec, self._connect_once)
            assert self._client is not None
            transport = self._client.get_transport()
            assert transport is not None
            return transport

    def _connect_once(self) -> paramiko.SSHClient:
        spec = self.spec
        pkey = (
            load_private_key(spec.private_key, spec.passphrase, host=spec.hostname, port=spec.port)
            if spec.private_key
            else None
        )
        if pkey is None and spec.password is None:
            raise AuthenticationFailed(
                f"No password or private key is stored for {spec.endpoint}.",
                host=spec.hostname,
                port=spec.port,
            )
        client = paramiko.SSHClient()
        # Deliberately no load_system_host_keys(): only the key pinned on the machine counts.
        client.set_missing_host_key_policy(_RejectUnknownHostKey())
        if spec.host_key is not None:
            try:
                pinned = spec.host_key.to_pkey()
            except ValueError as exc:
                raise SSHError(
                    f"The trusted host key stored for {spec.endpoint} is unusable: {exc}",
                    host=spec.hostname,
                    port=spec.port,
                ) from None
            client.get_host_keys().add(spec.host_key_name, spec.host_key.key_type, pinned)
        try:
            client.connect(
                spec.hostname,
                port=spec.port,
                username=spec.username,
                password=spec.password,
                pkey=pkey,
                timeout=spec.connect_timeout,
                auth_timeout=spec.auth_timeout,
                banner_timeout=spec.banner_timeout,
                channel_timeout=spec.connect_timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except _UnknownHostKey as unknown:
            client.close()
            raise HostKeyUnknown(
                host=spec.hostname,
                port=spec.port,
                key_type=unknown.key.get_name(),
                offered_fingerprint=unknown.key.fingerprint,
            ) from None
        except paramiko.BadHostKeyException as bad:
            client.close()
            raise HostKeyMismatch(
                host=spec.hostname,
                port=spec.port,
                expected_type=bad.expected_key.get_name(),
                expected_fingerprint=bad.expected_key.fingerprint,
                offered_type=bad.key.get_name(),
                offered_fingerprint=bad.key.fingerprint,
            ) from None
        except Exception as exc:  # noqa: BLE001  # every failure is mapped to our errors
            client.close()
            raise _classify_connect_error(exc, spec) from None
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(spec.keepalive)
        logger.debug("SSH connected to %s as %s", spec.endpoint, spec.username)
        return client

    def _dropped(self, during: str) -> MachineUnreachable:
        self.close()
        return MachineUnreachable(
            f"The SSH connection to {self.spec.endpoint} dropped while {during}.",
            host=self.spec.hostname,
            port=self.spec.port,
        )

    # -- commands -----------------------------------------------------------------------------

    def _command(self, cmd: Command | str) -> Command:
        return cmd if isinstance(cmd, Command) else Command.shell_raw(cmd)

    def _wrapped(self, cmd: Command, timeout: float) -> str:
        line = self.shell.render(cmd)
        if isinstance(self.shell, PosixShell):
            seconds = f"{timeout:.3f}".rstrip("0").rstrip(".")
            words = ["sh", "-c", _DEADLINE_WRAPPER, "sh", seconds, f"{KILL_AFTER:g}", line]
            return " ".join(shlex.quote(word) for word in words)
        return line

    def run(
        self,
        cmd: Command | str,
        *,
        timeout: float = 60,
        check: bool = True,
        stdin: bytes | None = None,
        max_output: int = 10 * MiB,
    ) -> CommandResult:
        """Run a command to completion and collect its output (the last ``max_output`` bytes
        of each stream)."""
        command = self._command(cmd)
        shown = self.shell.render_for_log(command)
        out, err = _OutputTail(max_output), _OutputTail(max_output)
        started = time.monotonic()
        code = self._execute(command, shown, timeout, out.add, err.add, stdin, stdout_tail=out)
        result = CommandResult(
            exit_code=code,
            stdout=out.text(),
            stderr=err.text(),
            duration=time.monotonic() - started,
            truncated=out.truncated or err.truncated,
        )
        logger.debug(
            "SSH %s exit %d in %.2f s: %s", self.spec.endpoint, code, result.duration, shown
        )
        if check and not result.ok:
            raise RemoteCommandFailed(
                host=self.spec.hostname,
                port=self.spec.port,
                command=shown,
                exit_code=code,
                stdout=result.stdout,
                stderr=result.stderr,
            )
        return result

    def stream(
        self,
        cmd: Command | str,
        *,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None] | None = None,
        timeout: float,
    ) -> int:
        """Run a command, handing output to the callbacks as it arrives; the exit code."""
        command = self._command(cmd)
        shown = self.shell.render_for_log(command)
        return self._execute(
            command, shown, timeout, on_stdout, on_stderr or (lambda _data: None), None
        )

    def _execute(
        self,
        command: Command,
        shown: str,
        timeout: float,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        stdin: bytes | None,
        stdout_tail: _OutputTail | None = None,
    ) -> int:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        line = self._wrapped(command, timeout)
        logger.debug("SSH %s $ %s", self.spec.endpoint, shown)
        transport = self._transport()
        started = time.monotonic()
        posix = isinstance(self.shell, PosixShell)
        deadline = started + timeout + ((2 * KILL_AFTER + _CLIENT_SLACK) if posix else 0)
        try:
            channel = transport.open_session(timeout=self.spec.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError):
            raise self._dropped(f"opening a channel for: {shown}") from None
        try:
            try:
                channel.exec_command(line)
                code = self._pump(channel, deadline, on_stdout, on_stderr, stdin)
            except (paramiko.SSHException, OSError, EOFError):
                raise self._dropped(f"running: {shown}") from None
        finally:
            channel.close()

        elapsed = time.monotonic() - started
        if code is None or (posix and code in _TIMEOUT_EXIT_CODES and elapsed >= timeout):
            raise CommandTimeout(
                host=self.spec.hostname,
                port=self.spec.port,
                command=shown,
                timeout=timeout,
                killed=code is not None,
                stdout=stdout_tail.text() if stdout_tail else "",
            )
        if code == -1 and not transport.is_active():
            raise self._dropped(f"running: {shown}")
        return code

    @staticmethod
    def _pump(
        channel: paramiko.Channel,
        deadline: float,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        stdin: bytes | None,
    ) -> int | None:
        """Feed stdin and drain stdout and stderr together until exit; None on deadline.

        Reading one stream to its end before the other deadlocks once the other fills the SSH
        window, so each turn takes what is ready on both.
        """
        pending = memoryview(stdin) if stdin else None
        if pending is None:
            channel.shutdown_write()
        exited_at: float | None = None
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None
            progressed = False
            while pending is not None and channel.send_ready():
                sent = channel.send(bytes(pending[:_STDIN_CHUNK]))
                pending = pending[sent:] or None
                if pending is None:
                    channel.shutdown_write()
                progressed = True
                if channel.recv_ready() or channel.recv_stderr_ready():
                    break
            if channel.recv_ready():
                on_stdout(channel.recv(_CHUNK))
                progressed = True
            if channel.recv_stderr_ready():
                on_stderr(channel.recv_stderr(_CHUNK))
                progressed = True
            if progressed:
                continue
            if channel.exit_status_ready():
                if channel.eof_received or channel.closed:
                    return channel.recv_exit_status()
                exited_at = exited_at or now
                if now - exited_at >= _EOF_GRACE:
                    return channel.recv_exit_status()
            # The channel's fileno is a pipe paramiko sets when either stream has data or the
            # channel closes. Window space for stdin has no such signal: poll for it briefly.
            wait = 0.005 if pending is not None else min(0.5, deadline - now)
            select.select([channel], [], [], max(wait, 0))

    # -- files (SFTP) -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _sftp_for(self, action: str, remote_path: str) -> Iterator[paramiko.SFTPClient]:
        transport = self._transport()
        with self._lock:
            if self._sftp is None:
                try:
                    self._sftp = paramiko.SFTPClient.from_transport(
                        transport, window_size=None, max_packet_size=None
                    )
                except (paramiko.SSHException, OSError, EOFError) as exc:
                    if not transport.is_active():
                        raise self._dropped(f"starting SFTP to {action} {remote_path!r}") from None
                    raise SSHError(
                        f"SFTP is not available on {self.spec.endpoint} ({exc}). Check that "
                        "sshd has an sftp Subsystem and that the login shell prints nothing.",
                        host=self.spec.hostname,
                        port=self.spec.port,
                    ) from None
                if self._sftp is None:
                    raise SSHError(
                        f"SFTP could not start on {self.spec.endpoint}.",
                        host=self.spec.hostname,
                        port=self.spec.port,
                    )
            sftp = self._sftp
        try:
            yield sftp
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if not transport.is_active():
                raise self._dropped(f"trying to {action} {remote_path!r}") from None
            code = exc.errno if isinstance(exc, OSError) else None
            reason = (
                exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            ) or type(exc).__name__
            raise RemoteFileError(
                host=self.spec.hostname,
                port=self.spec.port,
                remote_path=remote_path,
                action=action,
                reason=reason,
                errno=code,
            ) from None

    def put(self, data: bytes | pathlib.Path, remote_path: str, *, mode: int | None = None) -> None:
        """Upload atomically: readers see the old file or the whole new one, never a part."""
        # Same directory, so the final rename never crosses a file system.
        temporary = f"{remote_path}.tmp-{secrets.token_hex(6)}"
        # Opened before SFTP starts, so a missing local file is not reported as a remote one.
        source: IO[bytes] = (
            open(data, "rb")  # noqa: SIM115  # closed by the with statement below
            if isinstance(data, pathlib.Path)
            else io.BytesIO(data)
        )
        with source, self._sftp_for("upload", remote_path) as sftp:
            try:
                size = sftp.putfo(source, temporary, confirm=True)
                if mode is not None:
                    sftp.chmod(temporary, mode)
                self._replace(sftp, temporary, remote_path)
                logger.debug(
                    "SFTP %s uploaded %d bytes to %s", self.spec.endpoint, size.st_size, remote_path
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    sftp.remove(temporary)
                raise

    @staticmethod
    def _replace(sftp: paramiko.SFTPClient, source: str, target: str) -> None:
        try:
            sftp.posix_rename(source, target)
        except OSError as exc:
            if exc.errno is not None:
                raise
            # Server without the posix-rename extension: plain SFTP rename refuses to
            # overwrite, so remove first (briefly no file; no partial one either).
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(target)
            sftp.rename(source, target)

    def get(self, remote_path: str) -> bytes:
        buffer = io.BytesIO()
        with self._sftp_for("download", remote_path) as sftp:
            sftp.getfo(remote_path, buffer)
        return buffer.getvalue()

    def make_dirs(self, remote_path: str) -> None:
        """``mkdir -p`` over SFTP: no command channel (each costs a round of channel setup)."""
        sep = "\\" if isinstance(self.shell, PowerShell) else "/"
        with self._sftp_for("create directory", remote_path) as sftp:
            parts = remote_path.split(sep)
            for depth in range(1, len(parts) + 1):
                path = sep.join(parts[:depth])
                if not path or path.endswith(":"):
                    continue  # the root, or a Windows drive
                try:
                    sftp.stat(path)
                except FileNotFoundError:
                    try:
                        sftp.mkdir(path)
                    except OSError:
                        sftp.stat(path)  # made meanwhile by someone else: fine; else raise

    def read_from(self, remote_path: str, offset: int, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` from ``offset``: how a growing events file is tailed."""
        if offset < 0 or max_bytes < 0:
            raise ValueError("offset and max_bytes must not be negative")
        with self._sftp_for("read", remote_path) as sftp, sftp.open(remote_path, "rb") as f:
            f.seek(offset)
            return f.read(max_bytes)

    # -- detached processes -------------------------------------------------------------------

    # Starts "$2" in a new session (so its pid is also its process group id), detached from the
    # SSH channel: stdin from /dev/null, output appended to "$1". Prints the pid.
    _START_DETACHED = (
        'log=$1; : >>"$log" || exit 1; setsid nohup sh -c "$2" </dev/null >>"$log" 2>&1 & echo $!'
    )
    # TERM the group, wait up to $2 tenths of a second, then KILL. Zombies do not count as
    # alive: an orphan is reaped only when its new parent gets to it. Exit 3: nothing was
    # running; exit 4: something survived KILL.
    _KILL_GROUP = (
        "pg=$1; tenths=$2\n"
        "alive() { ps -e -o pgid= -o stat= | "
        "awk -v g=\"$pg\" '$1 == g && $2 !~ /^Z/ {n++} END {exit n ? 0 : 1}'; }\n"
        "alive || exit 3\n"
        'kill -TERM "-$pg" 2>/dev/null\n'
        'i=0; while [ "$i" -lt "$tenths" ] && alive; do sleep 0.1; i=$((i + 1)); done\n'
        'alive && kill -KILL "-$pg" 2>/dev/null\n'
        'i=0; while [ "$i" -lt 50 ] && alive; do sleep 0.1; i=$((i + 1)); done\n'
        "alive && exit 4\n"
        "exit 0"
    )

    def start_detached(self, cmd: Command, *, log_path: str | None = None) -> int:
        """Start a command that outlives this connection; its pid, which is also its process
        group id (pass it to :meth:`kill_process_group`)."""
        if not isinstance(self.shell, PosixShell):
            raise NotImplementedError(
                "Starting detached processes is implemented for Linux machines only."
            )
        inner = self.shell.render(cmd)
        starter = Command("sh", "-c", self._START_DETACHED, "sh", log_path or "/dev/null", inner)
        result = self.run(starter, timeout=30)
        pid_text = result.stdout.strip()
        if not pid_text.isdigit() or int(pid_text) <= 1:
            raise SSHError(
                f"Starting a detached process on {self.spec.endpoint} did not report a process "
                f"id (got {pid_text[:80]!r}).",
                host=self.spec.hostname,
                port=self.spec.port,
            )
        pid = int(pid_text)
        logger.info(
            "SSH %s started detached pid %d: %s",
            self.spec.endpoint,
            pid,
            self.shell.render_for_log(cmd),
        )
        return pid

    def kill_process_group(self, pgid: int, *, grace: float = 5.0) -> bool:
        """TERM the process group, KILL it after ``grace`` seconds; whether it was running.

        Runs over its own channel, so it works while another channel still streams output.
        """
        if isinstance(pgid, bool) or not isinstance(pgid, int) or pgid <= 1:
            # kill -TERM -1 would signal every process of the user.
            raise ValueError(f"refusing to kill process group {pgid!r}")
        if isinstance(self.shell, PowerShell):
            result = self.run(
                Command("taskkill", "/T", "/F", "/PID", pgid), timeout=grace + 30, check=False
            )
            return result.exit_code == 0
        tenths = max(0, round(grace * 10))
        kill = Command("sh", "-c", self._KILL_GROUP, "sh", pgid, tenths)
        result = self.run(kill, timeout=grace + 30, check=False)
        if result.exit_code == 3:
            return False
        if result.exit_code == 0:
            logger.info("SSH %s killed process group %d", self.spec.endpoint, pgid)
            return True
        raise SSHError(
            f"Process group {pgid} on {self.spec.endpoint} could not be killed "
            f"(exit {result.exit_code}): {result.stderr.strip()[-500:] or 'still running'}",
            host=self.spec.hostname,
            port=self.spec.port,
        )
