"""Faults injected into a run's own path, with real parts: the lab of tests/integration/runs
(loopback sshd as the machine, a warm venv pool, a board simulator on a pty) and a Celery
worker that these tests may kill outright and start again."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.runs.conftest import (  # noqa: F401  # fixtures used by these tests
    Lab,
    _remove_session_work_dirs,
    assert_gap_free,
    assert_released,
    board_sim,
    lab,
    wait_for,
    wait_for_events,
)
from tests.sshd import SSHD
from tests.worker import RECONNECT_WINDOW, Worker  # noqa: F401  # the tests import them here


@pytest.fixture
def fault_worker(worker_process: Worker) -> Iterator[Worker]:
    """The session's one worker, which these tests may kill: it is running when a test starts
    and again when it ends, whatever the test did to it. (One worker only: a second one on
    the queue could take the run that a test means to take away from its worker.)"""
    if not worker_process.running:
        worker_process.start()
    yield worker_process
    if not worker_process.running:
        worker_process.start()


@pytest.fixture
def sshd_back(sshd: SSHD) -> Iterator[SSHD]:
    """The test sshd, started again after a test that stopped it, whatever happened."""
    yield sshd
    if not sshd.running:
        sshd.start()


def _children(pid: int) -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def sshd_down(sshd: SSHD) -> int:
    """Stops the test sshd for real: the listener and every SSH session it forked (each is an
    sshd process of its own that would otherwise keep serving its connection). Only this
    server's sessions: other sshd instances on the machine are left alone. How many sessions
    were killed."""
    pid_file = sshd.directory / "sshd.pid"
    listener = int(pid_file.read_text().split()[0])
    tree = _children(listener)
    sessions, todo = [], list(tree.get(listener, []))
    while todo:
        pid = todo.pop()
        if _comm(pid).startswith("sshd"):
            sessions.append(pid)
            todo += tree.get(pid, [])
    sshd.stop()  # no new sessions from here on
    for pid in sessions:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(sessions)


def mount_tmpfs(directory: str, *, size: str, owner: str) -> None:
    """A small tmpfs over ``directory``, owned by the machine's user (root mounts it)."""
    import pwd

    user = pwd.getpwnam(owner)
    path = Path(directory)
    if not path.exists():
        # Made as the user: once unmounted, the runs after this one still write here.
        path.mkdir(parents=True)
        os.chown(path, user.pw_uid, user.pw_gid)
    options = f"size={size},mode=0755,uid={user.pw_uid},gid={user.pw_gid}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", directory], check=True)


def unmount(directory: str) -> None:
    done = subprocess.run(["umount", directory], capture_output=True, check=False)
    if done.returncode != 0:
        # Something on the host still has a file open there: detach it now, free it later.
        subprocess.run(["umount", "-l", directory], check=True)
