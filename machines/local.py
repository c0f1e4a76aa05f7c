"""The local connector: the same interface as an SSH connection, for the worker's own host.

For a first start and single-host labs only: commands run as the worker's user, on the
machine that holds the service. It is off in production unless ALLOW_LOCAL_MACHINES says
otherwise. Commands get a scrubbed environment, so the service's own secrets (database URL,
keys) never reach a test.
"""

from __future__ import annotations

import getpass
import os
import pathlib
import secrets
import selectors
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from machines.ssh.commands import Command, PosixShell
from machines.ssh.connection import CommandResult, SSHConnection
from machines.ssh.errors import CommandTimeout, RemoteCommandFailed, RemoteFileError

MiB = 1024 * 1024
SAFE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME")


def _env() -> dict[str, str]:
    return {key: os.environ[key] for key in SAFE_ENV_KEYS if key in os.environ}


@dataclass(frozen=True)
class LocalSpec:
    """What SSHConnection's shared methods read from a spec."""

    username: str
    hostname: str = "localhost"
    port: int = 0
    os_name: str = "linux"

    @property
    def endpoint(self) -> str:
        return "this host"


class LocalConnection:
    """Runs commands on this host, with SSHConnection's methods and errors."""

    shell = PosixShell()

    def __init__(self) -> None:
        self.spec = LocalSpec(username=getpass.getuser())

    # Reused as they are: they only need run() and the POSIX shell.
    start_detached = SSHConnection.start_detached
    kill_process_group = SSHConnection.kill_process_group
    _START_DETACHED = SSHConnection._START_DETACHED
    _KILL_GROUP = SSHConnection._KILL_GROUP

    def connect(self) -> None:
        return None

    def is_alive(self) -> bool:
        return True

    def close(self) -> None:
        return None

    def __enter__(self) -> LocalConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _render(self, cmd: Command | str) -> str:
        return cmd if isinstance(cmd, str) else self.shell.render(cmd)

    def run(
        self,
        cmd: Command | str,
        *,
        timeout: float = 60,
        check: bool = True,
        stdin: bytes | None = None,
        max_output: int = 10 * MiB,
    ) -> CommandResult:
        chunks: dict[str, list[bytes]] = {"out": [], "err": []}
        code, duration = self._execute(
            cmd, timeout, chunks["out"].append, chunks["err"].append, stdin
        )
        stdout = b"".join(chunks["out"])
        stderr = b"".join(chunks["err"])
        truncated = len(stdout) > max_output or len(stderr) > max_output
        result = CommandResult(
            exit_code=code,
            stdout=stdout[-max_output:].decode(errors="replace"),
            stderr=stderr[-max_output:].decode(errors="replace"),
            duration=duration,
            truncated=truncated,
        )
        if check and code != 0:
            shown = cmd if isinstance(cmd, str) else self.shell.render_for_log(cmd)
            raise RemoteCommandFailed(
                host="localhost", port=0, command=shown, exit_code=code,
                stdout=result.stdout, stderr=result.stderr,
            )  # fmt: skip
        return result

    def stream(
        self,
        cmd: Command | str,
        *,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None] | None = None,
        timeout: float,
    ) -> int:
        code, _ = self._execute(cmd, timeout, on_stdout, on_stderr or (lambda _d: None), None)
        return code

    def _execute(
        self,
        cmd: Command | str,
        timeout: float,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        stdin: bytes | None,
    ) -> tuple[int, float]:
        started = time.monotonic()
        proc = subprocess.Popen(  # noqa: S603  # a rendered, quoted command for sh
            ["/bin/sh", "-c", self._render(cmd)],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
            start_new_session=True,
        )
        if stdin is not None and proc.stdin is not None:
            proc.stdin.write(stdin)
            proc.stdin.close()
        assert proc.stdout is not None and proc.stderr is not None
        # Drain both pipes together, or a chatty stderr blocks the command.
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, on_stdout)
        sel.register(proc.stderr, selectors.EVENT_READ, on_stderr)
        open_streams = 2
        while open_streams:
            remaining = timeout - (time.monotonic() - started)
            if remaining <= 0:
                os.killpg(proc.pid, 9)
                proc.wait()
                raise CommandTimeout(
                    host="localhost", port=0, command=self._render(cmd)[:200],
                    timeout=timeout, killed=True,
                )  # fmt: skip
            for key, _ in sel.select(timeout=min(remaining, 0.5)):
                data = os.read(key.fd, 65536)
                if data:
                    key.data(data)
                else:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
        sel.close()
        code = proc.wait(timeout=max(0.1, timeout - (time.monotonic() - started)))
        return code, time.monotonic() - started

    def _file_error(self, path: str, action: str, exc: OSError) -> RemoteFileError:
        return RemoteFileError(
            host="localhost", port=0, remote_path=path, action=action,
            reason=exc.strerror or str(exc), errno=exc.errno,
        )  # fmt: skip

    def put(self, data: bytes | pathlib.Path, remote_path: str, *, mode: int | None = None) -> None:
        content = data.read_bytes() if isinstance(data, pathlib.Path) else data
        temporary = f"{remote_path}.tmp-{secrets.token_hex(6)}"
        try:
            with open(temporary, "wb") as f:
                f.write(content)
            if mode is not None:
                os.chmod(temporary, mode)  # noqa: PTH101
            pathlib.Path(temporary).replace(remote_path)
        except OSError as exc:
            raise self._file_error(remote_path, "upload", exc) from None

    def get(self, remote_path: str) -> bytes:
        try:
            with open(remote_path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise self._file_error(remote_path, "download", exc) from None

    def make_dirs(self, remote_path: str) -> None:
        try:
            pathlib.Path(remote_path).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._file_error(remote_path, "create directory", exc) from None

    def read_from(self, remote_path: str, offset: int, max_bytes: int) -> bytes:
        try:
            with open(remote_path, "rb") as f:
                f.seek(offset)
                return f.read(max_bytes)
        except OSError as exc:
            raise self._file_error(remote_path, "read", exc) from None


_local: LocalConnection | None = None


def local_connection() -> LocalConnection:
    global _local
    if _local is None:
        _local = LocalConnection()
    return _local
