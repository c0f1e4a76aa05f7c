"""Golden tests: the exact strings each shell gets, for hostile input."""

from __future__ import annotations

import base64
from pathlib import PurePosixPath, PureWindowsPath

import pytest

from machines.ssh import Command, MaskString, PosixShell, PowerShell, Secret, shell_for

HOSTILE = [
    "it's",
    'say "hi"',
    "a;b",
    "x && y",
    "$(id)",
    "`id`",
    "%PATH%",
    "line1\nline2",
    "naïve ✓",
    "/dir with spaces/f",
    "*",
    "-rf",
]

POSIX_HOSTILE = (
    "printf '%s\\0' 'it'\"'\"'s' 'say \"hi\"' 'a;b' 'x && y' '$(id)' '`id`' %PATH% "
    "'line1\nline2' 'naïve ✓' '/dir with spaces/f' '*' -rf"
)


def decode_powershell(line: str) -> str:
    prefix = "powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand "
    assert line.startswith(prefix)
    encoded = line.removeprefix(prefix)
    assert encoded.isascii()
    assert " " not in encoded
    return base64.b64decode(encoded, validate=True).decode("utf-16-le")


class TestPosixShell:
    def test_hostile_arguments_are_single_quoted(self) -> None:
        assert PosixShell().render(Command("printf", "%s\\0", *HOSTILE)) == POSIX_HOSTILE

    def test_plain_words_stay_readable(self) -> None:
        cmd = Command("python3", "-m", "venv", PurePosixPath("/srv/tms/venvs/1"))
        assert PosixShell().render(cmd) == "python3 -m venv /srv/tms/venvs/1"

    def test_empty_argument_survives(self) -> None:
        assert PosixShell().render(Command("printf", "%s", "")) == "printf %s ''"

    def test_env_and_cwd(self) -> None:
        cmd = (
            Command("python3", "run.py", "--name", "a b")
            .env({"UV_CACHE_DIR": "/srv/uv cache", "MODE": "$(reboot)"})
            .cwd("/srv/work dir; rm -rf /")
        )
        assert PosixShell().render(cmd) == (
            "cd -- '/srv/work dir; rm -rf /' && env 'UV_CACHE_DIR=/srv/uv cache' "
            "'MODE=$(reboot)' python3 run.py --name 'a b'"
        )

    def test_env_and_cwd_return_new_commands(self) -> None:
        base = Command("true")
        assert base.env({"A": "1"}).cwd("/tmp") != base
        assert PosixShell().render(base) == "true"

    def test_secrets_are_masked_only_in_the_log(self) -> None:
        cmd = Command("login", "--user", "bob", "--password", Secret("p@ss w'rd")).env(
            {"TOKEN": Secret("tok$en"), "PLAIN": "visible"}
        )
        shell = PosixShell()
        assert shell.render(cmd) == (
            "env 'TOKEN=tok$en' PLAIN=visible login --user bob --password 'p@ss w'\"'\"'rd'"
        )
        logged = shell.render_for_log(cmd)
        assert logged == "env TOKEN=*** PLAIN=visible login --user bob --password ***"
        assert "p@ss" not in logged
        assert "tok$en" not in logged

    def test_raw_snippet_is_sent_as_is_and_wrapped_when_it_needs_env(self) -> None:
        snippet = 'for f in *.log; do wc -c "$f"; done'
        assert PosixShell().render(Command.shell_raw(snippet)) == snippet
        assert PosixShell().render(Command.shell_raw(snippet).env({"LC_ALL": "C"}).cwd("/l")) == (
            "cd -- /l && env LC_ALL=C sh -c 'for f in *.log; do wc -c \"$f\"; done'"
        )


class TestSecret:
    def test_secret_hides_itself_everywhere_but_reveal(self) -> None:
        secret = Secret("hunter2")
        assert str(secret) == "***"
        assert repr(secret) == "Secret('***')"
        assert f"{secret}" == "***"
        assert "%s" % secret == "***"  # noqa: UP031  # the %-formatting path is the point
        assert secret.reveal() == "hunter2"
        assert MaskString is Secret

    def test_repr_of_a_command_masks_secrets(self) -> None:
        assert "hunter2" not in repr(Command("x", Secret("hunter2")))


class TestValidation:
    def test_invalid_env_name_is_refused(self) -> None:
        with pytest.raises(ValueError, match="invalid environment variable name"):
            Command("true").env({"A;B": "1"})

    def test_nul_byte_is_refused(self) -> None:
        with pytest.raises(ValueError, match="NUL"):
            Command("echo", "a\0b")

    @pytest.mark.parametrize("bad", [None, b"bytes", 1.5, True])
    def test_only_text_paths_and_ints_are_parts(self, bad: object) -> None:
        with pytest.raises(TypeError):
            Command("echo", bad)  # type: ignore[arg-type]  # the point of the test

    def test_ints_become_words(self) -> None:
        assert PosixShell().render(Command("kill", "-TERM", 1234)) == "kill -TERM 1234"

    def test_shell_for(self) -> None:
        assert isinstance(shell_for("linux"), PosixShell)
        assert isinstance(shell_for("Windows"), PowerShell)
        with pytest.raises(ValueError, match="no shell known"):
            shell_for("plan9")


class TestPowerShell:
    PREAMBLE = "$ProgressPreference = 'SilentlyContinue'\n$ErrorActionPreference = 'Stop'\n"

    def test_windows_paths_with_spaces(self) -> None:
        python = PureWindowsPath(r"C:\Program Files\Python 3.11\python.exe")
        cmd = Command(python, "-m", "venv", PureWindowsPath(r"D:\tms\venvs\slot 1"))
        line = PowerShell().render(cmd)
        assert decode_powershell(line) == (
            self.PREAMBLE + r"& 'C:\Program Files\Python 3.11\python.exe' '-m' 'venv' "
            r"'D:\tms\venvs\slot 1'" + "\nexit $LASTEXITCODE"
        )

    def test_hostile_arguments_are_literal(self) -> None:
        args = [a for a in HOSTILE if '"' not in a]
        script = decode_powershell(PowerShell().render(Command("echoargs.exe", *args)))
        assert script == (
            self.PREAMBLE + "& 'echoargs.exe' 'it''s' 'a;b' 'x && y' '$(id)' '`id`' '%PATH%' "
            "'line1\nline2' 'naïve ✓' '/dir with spaces/f' '*' '-rf'\nexit $LASTEXITCODE"
        )

    def test_typographic_single_quotes_are_doubled(self) -> None:
        script = PowerShell().script(Command("x.exe", "it\u2019s"))
        assert "'it\u2019\u2019s'" in script

    def test_env_and_cwd(self) -> None:
        cmd = (
            Command("python.exe", "runner.py")
            .env({"TMS_RUN": "42", "TMS_TOKEN": Secret("s3cr'et")})
            .cwd(PureWindowsPath(r"C:\Users\lab user\tms"))
        )
        shell = PowerShell()
        assert decode_powershell(shell.render(cmd)) == (
            self.PREAMBLE + "$env:TMS_RUN = '42'\n$env:TMS_TOKEN = 's3cr''et'\n"
            "Set-Location -LiteralPath 'C:\\Users\\lab user\\tms'\n"
            "& 'python.exe' 'runner.py'\nexit $LASTEXITCODE"
        )
        logged = shell.render_for_log(cmd)
        assert "s3cr" not in logged
        assert logged == (
            "powershell> $ProgressPreference = 'SilentlyContinue'; "
            "$ErrorActionPreference = 'Stop'; $env:TMS_RUN = '42'; $env:TMS_TOKEN = ***; "
            "Set-Location -LiteralPath 'C:\\Users\\lab user\\tms'; "
            "& 'python.exe' 'runner.py'; exit $LASTEXITCODE"
        )

    def test_secret_argument_is_present_in_render_and_masked_in_log(self) -> None:
        cmd = Command("net.exe", "use", "Z:", r"\\srv\share", Secret("pa ss"))
        shell = PowerShell()
        assert "'pa ss'" in decode_powershell(shell.render(cmd))
        assert shell.render_for_log(cmd).endswith(
            r"& 'net.exe' 'use' 'Z:' '\\srv\share' ***; exit $LASTEXITCODE"
        )

    def test_raw_snippet(self) -> None:
        cmd = Command.shell_raw("Get-ChildItem -Force | Measure-Object")
        assert decode_powershell(PowerShell().render(cmd)) == (
            self.PREAMBLE + "Get-ChildItem -Force | Measure-Object"
        )

    @pytest.mark.parametrize(
        ("arg", "reason"),
        [
            ('say "hi"', "double quotes"),
            ("", "empty arguments"),
            ("C:\\dir with space\\", "trailing backslash"),
        ],
    )
    def test_arguments_powershell_would_mangle_are_refused(self, arg: str, reason: str) -> None:
        with pytest.raises(ValueError, match=reason.split()[0]):
            PowerShell().render(Command("x.exe", arg))

    def test_too_long_for_cmd_exe_is_refused(self) -> None:
        with pytest.raises(ValueError, match="Upload a script"):
            PowerShell().render(Command("x.exe", "a" * 4000))
