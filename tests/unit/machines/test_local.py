"""The local connector: SSHConnection's interface and errors, on this host."""

import os
import time

import pytest

from machines import ssh
from machines.local import LocalConnection


@pytest.fixture
def conn():
    return LocalConnection()


def test_run_quotes_arguments_and_drains_both_streams(conn):
    hostile = 'a\'b; echo pwned $(id) `id` && "q"\nline2'
    result = conn.run(ssh.Command("printf", "%s", hostile))
    assert result.stdout == hostile
    big = conn.run(ssh.Command("sh", "-c", "head -c 3000000 /dev/zero >&2; echo done"))
    assert len(big.stderr) == 3_000_000 and big.stdout == "done\n"


def test_failures_and_timeouts_are_the_ssh_errors(conn):
    with pytest.raises(ssh.RemoteCommandFailed) as failed:
        conn.run(ssh.Command("sh", "-c", "echo bad >&2; exit 3"))
    assert failed.value.exit_code == 3 and "bad" in failed.value.message
    with pytest.raises(ssh.CommandTimeout):
        conn.run(ssh.Command("sleep", "5"), timeout=0.5)


def test_the_service_environment_does_not_reach_commands(conn, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://secret@db/tms")
    monkeypatch.setenv("SECRET_KEY", "do-not-leak")
    env = conn.run(ssh.Command("env")).stdout
    assert "do-not-leak" not in env and "postgres://secret" not in env
    assert "PATH=" in env


def test_files_round_trip_and_tail_by_offset(conn, tmp_path):
    path = str(tmp_path / "events.jsonl")
    conn.put(b"0123456789", path, mode=0o640)
    assert conn.get(path) == b"0123456789"
    assert conn.read_from(path, 4, 3) == b"456"
    assert oct(os.stat(path).st_mode & 0o777) == "0o640"
    with pytest.raises(ssh.RemoteFileError):
        conn.get(str(tmp_path / "missing"))


def test_detached_process_group_survives_and_is_killed_whole(conn, tmp_path):
    log = str(tmp_path / "out.log")
    pgid = conn.start_detached(
        ssh.Command("sh", "-c", "sleep 300 & sleep 300 & echo started; wait"), log_path=log
    )
    deadline = time.monotonic() + 5
    while b"started" not in conn.get(log) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = conn.run(
        ssh.Command("sh", "-c", f"ps -eo pgid=,stat= | awk '$1 == {pgid} && $2 !~ /^Z/' | wc -l")
    )
    assert int(alive.stdout) >= 3  # the shell and both sleeps
    assert conn.kill_process_group(pgid, grace=1.0) is True
    after = conn.run(
        ssh.Command("sh", "-c", f"ps -eo pgid=,stat= | awk '$1 == {pgid} && $2 !~ /^Z/' | wc -l")
    )
    assert int(after.stdout) == 0
    assert conn.kill_process_group(pgid, grace=0.1) is False  # nothing left to kill
