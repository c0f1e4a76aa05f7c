"""The project served by a real uvicorn on a free loopback port, on the test database, for
tests that drive it from outside (a client program, a reporter); stoppable and restartable on
the same port, to play a server that goes away."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_port, stop_process, subprocess_env


class Web:
    def __init__(self, database_url: str, log: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "test_management_system.asgi:application",
                 "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                env=subprocess_env(DATABASE_URL=self.database_url, **self.env),
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"uvicorn exited ({self.proc.returncode}):\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health/", timeout=2):  # noqa: S310
                    return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        pytest.fail(f"uvicorn not up after 60 s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
