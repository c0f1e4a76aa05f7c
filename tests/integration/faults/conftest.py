"""Faults injected into a run's own path, with real parts: the lab of tests/integration/runs
(loopback sshd as the machine, a warm venv pool, a board simulator on a pty) and a Celery
worker that these tests may kill outright and start again."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, stop_process, subprocess_env
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

# Long enough for the connect retries to fail a few times, short enough to wait for in a test:
# the machine is given up after this many seconds without SSH (production: 5 minutes).
RECONNECT_WINDOW = 15


class Worker:
    """A real Celery worker (prefork, 2 processes) in a session of its own, so that the whole
    of it, main process included, can be SIGKILLed like a host that lost power."""

    def __init__(self, database_url: str, log_path: Path) -> None:
        self.database_url = database_url
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        from test_management_system.tasks import ping_task

        self.starts += 1
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "test_management_system", "worker",
                    "--loglevel", "INFO", "--concurrency", "2", "--without-gossip",
                    "--without-mingle", "--hostname", f"faults-{os.getpid()}-{self.starts}@%h",
                ],
                cwd=REPO_ROOT,
                env=subprocess_env(
                    DATABASE_URL=self.database_url,
                    RUN_RECONNECT_WINDOW_SECONDS=str(RECONNECT_WINDOW),
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"Celery worker exited with {self.proc.returncode}:\n{self.log()}")
            try:
                ping_task.apply_async().get(timeout=5)
                return
            except Exception:
                if time.monotonic() > deadline:
                    pytest.fail(f"Celery worker did not answer in 60 s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL to the main process and every pool process at once: no warm shutdown, no
        message given back, nothing written on the way out."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


# Package scope: the worker stops once the fault tests are done, so that it does not take
# tasks from the queue that later tests watch their own worker serve.
@pytest.fixture(scope="package")
def fault_worker(
    test_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    worker = Worker(test_database_url, tmp_path_factory.mktemp("faults-worker") / "worker.log")
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def celery_worker(fault_worker: Worker) -> str:
    """The lab's worker is this killable one (a test that killed it leaves a new one)."""
    if not fault_worker.running:
        fault_worker.start()
    return str(fault_worker.log_path)


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
