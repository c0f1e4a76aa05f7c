"""The test session's Celery worker: a real worker process that tests may kill and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, stop_process, subprocess_env

# Long enough for the connect retries to fail a few times, short enough to wait for in a test:
# a machine is given up after this many seconds without SSH (production: 5 minutes).
RECONNECT_WINDOW = 15


class Worker:
    """A real Celery worker (prefork, 2 processes) on the test database and broker, in a
    process session of its own, so that the whole of it, main process included, can be
    SIGKILLed like a host that lost power, and started again."""

    def __init__(self, database_url: str, log_path: Path, *, name: str) -> None:
        self.database_url = database_url
        self.log_path = log_path
        self.name = name
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
                    "--without-mingle", "--hostname", f"{self.name}-{self.starts}@%h",
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
