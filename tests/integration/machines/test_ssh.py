"""The SSH layer against a real OpenSSH server on loopback (see tests/sshd.py)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import pathlib
import secrets
import subprocess
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from machines.ssh import (
    AuthenticationFailed,
    Command,
    CommandTimeout,
    HostKey,
    HostKeyMismatch,
    HostKeyUnknown,
    MachineUnreachable,
    RemoteCommandFailed,
    RemoteFileError,
    Secret,
    SSHConnection,
    close_all,
    drop_connection,
    fetch_host_key,
    get_connection,
)
from tests.conftest import free_port
from tests.sshd import SSHD
from tests.unit.machines.test_ssh_commands import HOSTILE

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def live_pids_in_group(ssh: SSHConnection, pgid: int) -> list[int]:
    """Processes of the group that still run (zombies excluded: they are already dead)."""
    listing = ssh.run(Command("ps", "-e", "-o", "pid=,pgid=,stat=")).stdout
    return [
        int(pid)
        for pid, group, stat in (line.split() for line in listing.splitlines())
        if int(group) == pgid and not stat.startswith("Z")
    ]


@contextlib.contextmanager
def cleanup_group(ssh: SSHConnection, pgid: int) -> Iterator[None]:
    """Whatever the test asserts, leave no process group behind on the test host."""
    try:
        yield
    finally:
        ssh.run(Command("kill", "-KILL", f"-{pgid}"), check=False)


def running_args(ssh: SSHConnection) -> str:
    return ssh.run(Command("ps", "-e", "-o", "stat=,args=")).stdout


# -- logging in ----------------------------------------------------------------------------


def test_password_login_runs_as_the_user(ssh: SSHConnection, sshd: SSHD) -> None:
    result = ssh.run(Command("id", "-un"))
    assert result.stdout == f"{sshd.username}\n"
    assert result.exit_code == 0
    assert result.ok
    assert ssh.is_alive()


@pytest.mark.parametrize(
    ("key_attr", "with_passphrase"),
    [
        ("private_key", False),
        ("private_key_with_passphrase", True),
        ("rsa_private_key_pem", True),
    ],
)
def test_key_login(sshd: SSHD, key_attr: str, with_passphrase: bool) -> None:
    spec = sshd.spec(
        password=None,
        private_key=getattr(sshd, key_attr),
        passphrase=sshd.passphrase if with_passphrase else None,
    )
    with SSHConnection(spec) as ssh:
        assert ssh.run(Command("id", "-un")).stdout.strip() == sshd.username


def test_encrypted_key_without_its_passphrase_is_an_authentication_error(sshd: SSHD) -> None:
    spec = sshd.spec(password=None, private_key=sshd.private_key_with_passphrase)
    with pytest.raises(AuthenticationFailed, match="no passphrase is stored"):
        SSHConnection(spec).connect()


def test_wrong_passphrase_is_an_authentication_error(sshd: SSHD) -> None:
    spec = sshd.spec(
        password=None, private_key=sshd.private_key_with_passphrase, passphrase="not-it"
    )
    with pytest.raises(AuthenticationFailed, match="passphrase does not unlock it") as caught:
        SSHConnection(spec).connect()
    assert "not-it" not in str(caught.value)


def test_a_key_the_server_does_not_know_is_refused(sshd: SSHD) -> None:
    stranger = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(AuthenticationFailed, match="rejected the login"):
        SSHConnection(sshd.spec(password=None, private_key=stranger)).connect()


def test_wrong_password_is_an_authentication_error_naming_the_machine(sshd: SSHD) -> None:
    wrong = "definitely-" + secrets.token_hex(4)
    with pytest.raises(AuthenticationFailed) as caught:
        SSHConnection(sshd.spec(password=wrong)).connect()
    error = caught.value
    assert f"{sshd.host}:{sshd.port}" in error.message
    assert repr(sshd.username) in error.message
    assert wrong not in error.message
    assert wrong not in repr(error.extra)
    assert error.status_code == 502


def test_closed_port_is_unreachable_after_bounded_retries() -> None:
    from machines.ssh import ConnectionSpec

    port = free_port()  # bound and released: nothing listens there
    spec = ConnectionSpec(
        hostname="127.0.0.1", port=port, username="x", password="y", retries=2, retry_backoff=0.01
    )
    with pytest.raises(MachineUnreachable) as caught:
        SSHConnection(spec).connect()
    assert "connection refused" in caught.value.message
    assert "Tried 3 times" in caught.value.message
    assert caught.value.extra["attempts"] == 3
    assert f"127.0.0.1:{port}" in caught.value.message


def test_unresolvable_host_is_unreachable_without_retries() -> None:
    from machines.ssh import ConnectionSpec

    spec = ConnectionSpec(hostname="no-such-host.invalid", username="x", password="y")
    with pytest.raises(MachineUnreachable, match="does not resolve"):
        SSHConnection(spec).connect()


# -- host keys -----------------------------------------------------------------------------


def test_fetch_host_key_returns_the_real_server_key(sshd: SSHD) -> None:
    offered = fetch_host_key(sshd.host, sshd.port, timeout=5)
    assert offered == sshd.host_key
    # The fingerprint is the one an admin sees with ssh-keygen on the machine itself.
    printed = subprocess.run(
        ["ssh-keygen", "-lf", str(sshd.host_key_pub_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert printed[1] == offered.fingerprint
    assert offered.key_type == "ssh-ed25519"


def test_unknown_host_key_is_refused_showing_its_fingerprint(sshd: SSHD) -> None:
    with pytest.raises(HostKeyUnknown) as caught:
        SSHConnection(sshd.spec(host_key=None)).connect()
    error = caught.value
    assert error.offered_fingerprint == sshd.host_key.fingerprint
    assert sshd.host_key.fingerprint in error.message
    assert '"trust host key"' in error.message
    assert error.extra["offered_fingerprint"] == sshd.host_key.fingerprint


def test_changed_host_key_is_refused_naming_both_fingerprints(sshd: SSHD) -> None:
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    line = other.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    pinned = HostKey.from_openssh_line(line)
    with pytest.raises(HostKeyMismatch) as caught:
        SSHConnection(sshd.spec(host_key=pinned)).connect()
    error = caught.value
    assert error.expected_fingerprint == pinned.fingerprint
    assert error.offered_fingerprint == sshd.host_key.fingerprint
    assert pinned.fingerprint in error.message
    assert sshd.host_key.fingerprint in error.message
    assert "CHANGED" in error.message


# -- commands ------------------------------------------------------------------------------


def test_hostile_arguments_round_trip_exactly(ssh: SSHConnection) -> None:
    args = [*HOSTILE, "", "  two  spaces  ", "tab\there", "back\\slash", "ünï €"]
    result = ssh.run(Command("printf", "%s\\0", *args))
    assert result.stdout.split("\0")[:-1] == args


def test_env_and_cwd_reach_the_command_intact(ssh: SSHConnection, remote_dir: str) -> None:
    odd_dir = f"{remote_dir}/dir with 'quotes'; and $(spaces)"
    ssh.run(Command("mkdir", "-p", odd_dir))
    value = "$(touch /tmp/pwned) `id` 'q' \"dq\" ; && \n end"
    cmd = Command("sh", "-c", 'printf "%s\\0" "$PWD" "$ODD"').env({"ODD": value}).cwd(odd_dir)
    assert ssh.run(cmd).stdout.split("\0")[:-1] == [odd_dir, value]


def test_stdin_is_fed_while_output_is_drained(ssh: SSHConnection) -> None:
    # More than the SSH window both ways: feeding all of stdin before reading would deadlock.
    text = base64.b64encode(os.urandom(3 * MiB)).decode()
    assert ssh.run(Command("cat"), stdin=text.encode()).stdout == text
    data = os.urandom(MiB)
    digest = ssh.run(Command("sha256sum"), stdin=data).stdout.split()[0]
    assert digest == hashlib.sha256(data).hexdigest()


def test_five_mib_on_stdout_and_stderr_at_once_does_not_deadlock(ssh: SSHConnection) -> None:
    size = 5 * MiB
    # stderr first: a reader that drains stdout before stderr would hang here for good.
    script = (
        f"yes e | head -c {size} >&2; yes o | head -c {size} & yes E | head -c {size} >&2; wait"
    )
    result = ssh.run(Command("sh", "-c", script), timeout=120, max_output=20 * MiB)
    assert len(result.stdout) == size
    assert len(result.stderr) == 2 * size
    assert set(result.stdout) == {"o", "\n"}
    assert set(result.stderr) == {"e", "E", "\n"}
    assert not result.truncated


def test_output_beyond_the_limit_keeps_the_tail(ssh: SSHConnection) -> None:
    result = ssh.run(Command("sh", "-c", "seq 1 100000"), max_output=1000)
    assert result.truncated
    assert len(result.stdout) == 1000
    assert result.stdout.endswith("99999\n100000\n")


def test_non_zero_exit_raises_with_code_and_stderr(ssh: SSHConnection) -> None:
    cmd = Command("sh", "-c", 'echo "disk on fire" >&2; exit 7', "sh", Secret("hunter2"))
    with pytest.raises(RemoteCommandFailed) as caught:
        ssh.run(cmd)
    error = caught.value
    assert error.exit_code == 7
    assert error.stderr == "disk on fire\n"
    assert "disk on fire" in error.message
    assert "exited with code 7" in error.message
    assert "***" in error.message
    assert "hunter2" not in error.message
    assert "hunter2" not in repr(error.extra)


def test_non_zero_exit_without_check_is_a_result(ssh: SSHConnection) -> None:
    result = ssh.run(Command("sh", "-c", "echo out; echo err >&2; exit 3"), check=False)
    assert (result.exit_code, result.stdout, result.stderr, result.ok) == (
        3,
        "out\n",
        "err\n",
        False,
    )


def test_stream_hands_output_over_as_it_comes(ssh: SSHConnection) -> None:
    out: list[bytes] = []
    err: list[bytes] = []
    code = ssh.stream(
        Command("sh", "-c", "for i in 1 2 3; do echo $i; echo e$i >&2; sleep 0.05; done; exit 4"),
        on_stdout=out.append,
        on_stderr=err.append,
        timeout=30,
    )
    assert code == 4
    assert b"".join(out) == b"1\n2\n3\n"
    assert b"".join(err) == b"e1\ne2\ne3\n"


def test_command_timeout_kills_the_remote_process(ssh: SSHConnection) -> None:
    marker = f"{secrets.randbelow(10**6) + 1000}.{secrets.randbelow(1000)}"
    with pytest.raises(CommandTimeout) as caught:
        ssh.run(
            Command("sh", "-c", 'echo started; sleep "$1"; echo never', "sh", marker), timeout=1
        )
    assert caught.value.killed
    assert caught.value.stdout == "started\n"
    assert f"sleep {marker}" not in running_args(ssh)


def test_command_timeout_kills_a_process_that_ignores_term(ssh: SSHConnection) -> None:
    marker = f"{secrets.randbelow(10**6) + 1000}.{secrets.randbelow(1000)}"
    script = 'trap \'\' TERM; sleep "$1" & sleep "$1"; wait'
    with pytest.raises(CommandTimeout):
        ssh.run(Command("sh", "-c", script, "sh", marker), timeout=1)
    assert f"sleep {marker}" not in running_args(ssh)


def test_connection_dropped_mid_command_is_unreachable(sshd: SSHD) -> None:
    # The command kills the sshd process serving its own session: the connection dies.
    script = (
        'p=$$; while [ "$p" -gt 1 ]; do '
        'case "$(ps -o comm= -p "$p")" in sshd*) kill -KILL "$p"; sleep 5; exit 0;; esac; '
        'p=$(ps -o ppid= -p "$p" | tr -d " "); done; exit 9'
    )
    with SSHConnection(sshd.spec()) as ssh:
        with pytest.raises(MachineUnreachable, match="dropped while"):
            ssh.run(Command("sh", "-c", script), timeout=30)
        assert not ssh.is_alive()
        # The next command connects again by itself.
        assert ssh.run(Command("echo", "back")).stdout == "back\n"


# -- files ---------------------------------------------------------------------------------


def test_upload_and_download_binary_with_mode(ssh: SSHConnection, remote_dir: str) -> None:
    data = os.urandom(MiB)
    path = f"{remote_dir}/blob.bin"
    ssh.put(data, path, mode=0o640)
    assert ssh.get(path) == data
    assert ssh.run(Command("stat", "-c", "%a %s", path)).stdout == f"640 {MiB}\n"
    # Replacing is atomic: a new version takes the old one's place, no temporary file remains.
    ssh.put(b"v2", path)
    assert ssh.get(path) == b"v2"
    assert ssh.run(Command("ls", "-A", remote_dir)).stdout == "blob.bin\n"


def test_upload_from_a_local_file(
    ssh: SSHConnection, remote_dir: str, tmp_path: pathlib.Path
) -> None:
    local = tmp_path / "runner.py"
    local.write_bytes(b"print('hi')\n")
    ssh.put(local, f"{remote_dir}/runner.py", mode=0o755)
    assert ssh.run(Command("stat", "-c", "%a", f"{remote_dir}/runner.py")).stdout == "755\n"
    assert ssh.get(f"{remote_dir}/runner.py") == b"print('hi')\n"


def test_read_from_an_offset(ssh: SSHConnection, remote_dir: str) -> None:
    path = f"{remote_dir}/events.jsonl"
    ssh.put(b"0123456789abcdef", path)
    assert ssh.read_from(path, 10, 4) == b"abcd"
    assert ssh.read_from(path, 12, 100) == b"cdef"
    assert ssh.read_from(path, 16, 100) == b""
    # The file grows on the host; the next read continues where the last one stopped.
    ssh.run(Command("sh", "-c", 'printf "ghij" >> "$1"', "sh", path))
    assert ssh.read_from(path, 16, 100) == b"ghij"


def test_missing_remote_file_is_a_file_error(ssh: SSHConnection, remote_dir: str) -> None:
    with pytest.raises(RemoteFileError) as caught:
        ssh.get(f"{remote_dir}/nope")
    assert caught.value.missing
    assert "nope" in caught.value.message
    with pytest.raises(RemoteFileError):
        ssh.put(b"x", f"{remote_dir}/no/such/dir/file")


# -- detached processes --------------------------------------------------------------------


def test_detached_process_group_survives_the_connection_and_dies_as_a_whole(
    sshd: SSHD, remote_dir: str
) -> None:
    log = f"{remote_dir}/runner.log"
    # A parent that starts children and a grandchild, like a runner with helpers.
    script = "echo parent $$; sleep 600 & sleep 600 & (sleep 600; :) & wait"
    with SSHConnection(sshd.spec()) as first:
        pgid = first.start_detached(Command("sh", "-c", script), log_path=log)

    with SSHConnection(sshd.spec()) as ssh, cleanup_group(ssh, pgid):
        members = live_pids_in_group(ssh, pgid)
        assert pgid in members
        assert len(members) >= 4
        assert ssh.run(Command("ps", "-o", "sid=", "-p", pgid)).stdout.strip() == str(pgid)
        logged = ssh.read_from(log, 0, 100).decode()
        assert logged.startswith("parent ")
        assert int(logged.split()[1]) in members

        assert ssh.kill_process_group(pgid, grace=2) is True
        assert live_pids_in_group(ssh, pgid) == []
        for pid in members:
            alive = ssh.run(Command("kill", "-0", pid), check=False).exit_code == 0
            zombie = ssh.run(Command("ps", "-o", "stat=", "-p", pid), check=False).stdout.strip()
            assert not alive or zombie.startswith("Z")
        # Nothing left: a second kill reports that.
        assert ssh.kill_process_group(pgid, grace=1) is False


def test_kill_process_group_escalates_to_kill(ssh: SSHConnection) -> None:
    pgid = ssh.start_detached(Command("sh", "-c", "trap '' TERM; sleep 600 & wait"))
    with cleanup_group(ssh, pgid):
        assert len(live_pids_in_group(ssh, pgid)) >= 2
        assert ssh.kill_process_group(pgid, grace=0.5) is True
        assert live_pids_in_group(ssh, pgid) == []


def test_kill_process_group_refuses_dangerous_ids(ssh: SSHConnection) -> None:
    for bad in (0, 1, -5):
        with pytest.raises(ValueError, match="refusing"):
            ssh.kill_process_group(bad)


# -- pool ----------------------------------------------------------------------------------


def test_pool_reuses_live_connections_and_replaces_dead_ones(sshd: SSHD) -> None:
    key = ("machine", 1, "credentials-v1")
    try:
        first = get_connection(key, sshd.spec())
        assert get_connection(key, sshd.spec()) is first
        first.close()
        second = get_connection(key, sshd.spec())
        assert second is not first
        assert second.is_alive()
        # Edited credentials (a different spec) never reuse the old session.
        third = get_connection(key, sshd.spec(password=None, private_key=sshd.private_key))
        assert third is not second
        assert not second.is_alive()
        drop_connection(key)
        assert not third.is_alive()
        # A machine's connection is cached under (pk, credential version, host key): dropping
        # by the pk alone closes it, and leaves other machines' connections alone.
        mine = get_connection((41, 3, "SHA256:x"), sshd.spec())
        other = get_connection((42, 3, "SHA256:x"), sshd.spec())
        drop_connection(41)
        assert not mine.is_alive()
        assert other.is_alive()
    finally:
        close_all()


def test_pool_gives_a_forked_child_its_own_connection(sshd: SSHD) -> None:
    key = ("machine", 2)
    try:
        parent_connection = get_connection(key, sshd.spec())
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                child_connection = get_connection(key, sshd.spec())
                fresh = child_connection is not parent_connection
                works = child_connection.run(Command("echo", "child")).stdout == "child\n"
                code = 0 if fresh and works else 2
                child_connection.close()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The child neither used nor closed the parent's session.
        assert get_connection(key, sshd.spec()) is parent_connection
        assert parent_connection.run(Command("echo", "parent")).stdout == "parent\n"
    finally:
        close_all()


def test_make_dirs_creates_nested_directories_over_sftp(
    ssh: SSHConnection, remote_dir: str
) -> None:
    nested = f"{remote_dir}/a/b c/d"
    ssh.make_dirs(nested)
    ssh.make_dirs(nested)  # already there: fine
    ssh.put(b"x", f"{nested}/f.txt")
    assert ssh.get(f"{nested}/f.txt") == b"x"
    with pytest.raises(RemoteFileError):
        ssh.make_dirs("/proc/not-allowed/here")
