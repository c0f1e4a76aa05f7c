"""Commands as data: parts quoted per shell, secrets visible only to the machine.

A ``Command`` is an argv plus environment and working directory. A shell turns it into the one
string an SSH server executes: ``PosixShell`` with ``shlex.quote``, ``PowerShell`` as a script
sent through ``-EncodedCommand`` so that neither cmd.exe nor PowerShell re-parses our quoting.
``render_for_log`` gives the same command with every ``Secret`` shown as ``***``.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Mapping
from pathlib import PurePath
from typing import Protocol

MASK = "***"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Secret(str):
    """A string that reaches the machine as-is but prints as ``***`` everywhere else.

    ``str()``, ``repr()``, ``%s`` and f-strings all mask it, so a secret that slips into a log
    call stays hidden; only :meth:`reveal` (used by the shells) gives the value.
    """

    __slots__ = ()

    def reveal(self) -> str:
        return str.__str__(self)

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __format__(self, format_spec: str) -> str:
        return MASK


# pyinfra's name for the same idea.
MaskString = Secret

Part = str | Secret | PurePath | int


def _check_part(part: object, what: str) -> str | Secret:
    if isinstance(part, bool) or not isinstance(part, str | PurePath | int):
        raise TypeError(f"{what} must be str, Secret, PurePath or int, not {type(part).__name__}")
    if isinstance(part, Secret):
        value: str | Secret = part
    elif isinstance(part, str):
        value = str.__str__(part)
    else:
        value = str(part)
    if "\0" in _reveal(value):
        raise ValueError(f"{what} contains a NUL byte, which no command line can carry")
    return value


def _reveal(part: str) -> str:
    return part.reveal() if isinstance(part, Secret) else part


class Command:
    """An immutable command line: ``Command("python3", "-m", "venv", path).cwd(work).env(...)``.

    ``env`` and ``cwd`` return a new command, so a base command can be shared safely.
    """

    __slots__ = ("_cwd", "_env", "_parts", "_raw")

    def __init__(self, program: Part, *args: Part) -> None:
        self._parts: tuple[str, ...] = tuple(
            _check_part(p, "command part") for p in (program, *args)
        )
        self._env: tuple[tuple[str, str], ...] = ()
        self._cwd: str | None = None
        self._raw = False

    @classmethod
    def shell_raw(cls, script: str) -> Command:
        """A fixed, trusted snippet in the target shell's own syntax, sent unquoted.

        Only for literal scripts written in our code; anything variable goes in as a part
        (for POSIX: ``Command("sh", "-c", SCRIPT, "sh", arg1, ...)``).
        """
        if isinstance(script, Secret):
            raise TypeError("a raw shell snippet cannot be a Secret: it would not be quoted")
        cmd = cls(script)
        cmd._raw = True
        return cmd

    def _copy(self) -> Command:
        new = object.__new__(Command)
        new._parts, new._env, new._cwd, new._raw = self._parts, self._env, self._cwd, self._raw
        return new

    def env(self, variables: Mapping[str, Part]) -> Command:
        new = self._copy()
        merged = dict(self._env)
        for name, value in variables.items():
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                raise ValueError(f"invalid environment variable name {name!r}")
            merged[name] = _check_part(value, f"value of {name}")
        new._env = tuple(merged.items())
        return new

    def cwd(self, directory: str | PurePath) -> Command:
        if isinstance(directory, Secret):
            raise TypeError("a working directory cannot be a Secret")
        new = self._copy()
        new._cwd = _check_part(directory, "working directory")
        return new

    @property
    def parts(self) -> tuple[str, ...]:
        return self._parts

    @property
    def environment(self) -> dict[str, str]:
        return dict(self._env)

    @property
    def directory(self) -> str | None:
        return self._cwd

    @property
    def raw(self) -> bool:
        return self._raw

    def __repr__(self) -> str:
        return f"Command({PosixShell().render_for_log(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Command):
            return NotImplemented
        return (self._parts, self._env, self._cwd, self._raw) == (
            other._parts,
            other._env,
            other._cwd,
            other._raw,
        )

    def __hash__(self) -> int:
        return hash((self._parts, self._env, self._cwd, self._raw))


class Shell(Protocol):
    name: str

    def render(self, cmd: Command) -> str: ...

    def render_for_log(self, cmd: Command) -> str: ...


class PosixShell:
    """``sh`` syntax: every part through ``shlex.quote``; env via ``env``; cwd via ``cd --``."""

    name = "posix"

    def render(self, cmd: Command) -> str:
        return self._render(cmd, for_log=False)

    def render_for_log(self, cmd: Command) -> str:
        return self._render(cmd, for_log=True)

    def _render(self, cmd: Command, *, for_log: bool) -> str:
        def word(part: str, prefix: str = "") -> str:
            if for_log and isinstance(part, Secret):
                return f"{prefix}{MASK}"
            return shlex.quote(prefix + _reveal(part))

        if cmd.raw and not cmd.environment and cmd.directory is None:
            return cmd.parts[0]
        argv = ["sh", "-c", cmd.parts[0]] if cmd.raw else list(cmd.parts)
        words = [word(p) for p in argv]
        if cmd.environment:
            assignments = [word(value, f"{name}=") for name, value in cmd.environment.items()]
            words = ["env", *assignments, *words]
        line = " ".join(words)
        if cmd.directory is not None:
            line = f"cd -- {shlex.quote(cmd.directory)} && {line}"
        return line


def _ps_literal(value: str) -> str:
    """A PowerShell single-quoted literal: nothing inside is expanded; ' is doubled.

    PowerShell also treats the typographic quotes U+2018..U+201B as single quotes, so they are
    doubled too; otherwise one of them in a file name would end the literal early.
    """
    return "'" + re.sub("(['\u2018\u2019\u201a\u201b])", r"\1\1", value) + "'"


# cmd.exe (the default shell of Windows OpenSSH) refuses longer lines.
_CMD_EXE_MAX_LINE = 8191


class PowerShell:
    """Windows: the command becomes a PowerShell script, sent UTF-16LE base64 encoded.

    Windows PowerShell 5.1 passes arguments to native programs by joining them into one command
    line without escaping embedded double quotes, and drops empty arguments. Such arguments
    cannot reach the program intact, so they are refused here rather than silently mangled.
    """

    name = "powershell"
    PREFIX = "powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand"

    def script(self, cmd: Command) -> str:
        return self._script(cmd, for_log=False)

    def render(self, cmd: Command) -> str:
        encoded = base64.b64encode(self.script(cmd).encode("utf-16-le")).decode("ascii")
        line = f"{self.PREFIX} {encoded}"
        if len(line) > _CMD_EXE_MAX_LINE:
            raise ValueError(
                f"command is {len(line)} characters once encoded; Windows accepts at most "
                f"{_CMD_EXE_MAX_LINE}. Upload a script file and run that instead."
            )
        return line

    def render_for_log(self, cmd: Command) -> str:
        return "powershell> " + self._script(cmd, for_log=True).replace("\n", "; ")

    def _script(self, cmd: Command, *, for_log: bool) -> str:
        def lit(part: str) -> str:
            return MASK if for_log and isinstance(part, Secret) else _ps_literal(_reveal(part))

        # Progress records would arrive on stderr as CLIXML noise; errors must stop the script.
        lines = ["$ProgressPreference = 'SilentlyContinue'", "$ErrorActionPreference = 'Stop'"]
        lines += [f"$env:{name} = {lit(value)}" for name, value in cmd.environment.items()]
        if cmd.directory is not None:
            lines.append(f"Set-Location -LiteralPath {lit(cmd.directory)}")
        if cmd.raw:
            lines.append(cmd.parts[0])
        else:
            for part in cmd.parts[1:]:
                _check_native_argument(_reveal(part))
            lines.append("& " + " ".join(lit(p) for p in cmd.parts))
            lines.append("exit $LASTEXITCODE")
        return "\n".join(lines)


def _check_native_argument(value: str) -> None:
    if value == "":
        raise ValueError("Windows PowerShell drops empty arguments to native programs")
    if '"' in value:
        raise ValueError(
            "Windows PowerShell does not escape double quotes in arguments to native programs; "
            "pass such values through a file or an environment variable"
        )
    if value.endswith("\\") and re.search(r"\s", value):
        raise ValueError(
            "an argument with spaces that ends in a backslash reaches a Windows program with a "
            "stray quote; drop the trailing backslash"
        )


def shell_for(os_name: str) -> PosixShell | PowerShell:
    """The shell our commands are rendered for on a machine with this OS."""
    key = os_name.strip().lower()
    if key == "linux":
        return PosixShell()
    if key == "windows":
        return PowerShell()
    raise ValueError(f"no shell known for operating system {os_name!r} (linux or windows)")
