"""Services of a test's own, to break without touching the machine's shared ones: a Redis
server and a PostgreSQL cluster on free loopback ports, and Celery worker and beat processes
pointed at them. Each can be stopped and started again on the same port, to play an outage."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, free_port, stop_process, subprocess_env


def require_binary(name: str, *, hint: str) -> str:
    """The path of ``name``; a missing binary fails the test with what to install (the fault
    tests need the real server, a skip would hide that they never ran)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if path is None:
        pytest.fail(f"{name} is not installed; the service fault tests need it ({hint}).")
    return path


def _wait(ready: Any, what: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    text = log.read_text(errors="replace") if log.exists() else ""
    pytest.fail(f"{what} did not come up in {timeout:.0f} s:\n{text[-3000:]}")


class PrivateRedis:
    """``redis-server`` on a free port, no persistence: a restart comes back empty, as a
    broker that lost its memory does."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require_binary("redis-server", hint="apt-get install redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--daemonize", "no"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait(self.ping, f"redis-server on port {self.port}", self.log)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=10)
            self.proc = None


class PrivatePostgres:
    """A PostgreSQL cluster of its own: initdb into a temporary directory owned by the
    ``postgres`` user, trust auth on 127.0.0.1 only, started and stopped with pg_ctl."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            pytest.fail(
                "initdb is not installed (/usr/lib/postgresql/*/bin/initdb); the PostgreSQL "
                "fault test needs it (apt-get install postgresql)."
            )
        self.bin = Path(bins[-1]).parent
        if os.geteuid() != 0 or shutil.which("runuser") is None:
            pytest.fail("starting a private PostgreSQL cluster needs root and runuser")
        self.root = Path(tempfile.mkdtemp(prefix="tms-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        shutil.chown(self.root, "postgres", "postgres")
        self.root.chmod(0o700)
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip

    def _as_postgres(self, *argv: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            capture_output=True, text=True, check=False, timeout=120, cwd=self.root,
        )  # fmt: skip
        if result.returncode != 0:
            pytest.fail(f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c full_page_writes=off -c synchronous_commit=off"
        )
        self._as_postgres(
            str(self.bin / "pg_ctl"), action, "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", "-t", "60", *extra,
        )  # fmt: skip

    def start(self) -> None:
        self._pg_ctl("start")

    def restart(self) -> None:
        """A fast restart: every open connection is cut, as a failover or a crash cuts it."""
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", "immediate")

    def create_database(self, name: str) -> str:
        self._as_postgres(
            str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
            name,
        )  # fmt: skip
        return self.url(name)

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def manage(*argv: str, env: dict[str, str]) -> str:
    """``manage.py`` in a subprocess (its own settings, its own database); fails the test with
    the output when it fails."""
    result = subprocess.run(
        [sys.executable, "manage.py", *argv],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"manage.py {' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def services_env(*, database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a process on these services (the parent's own REDIS_URL,
    CELERY_* and DATABASE_URL are replaced, so nothing reaches the shared ones)."""
    return subprocess_env(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        CELERY_BROKER_URL=redis_url,
        CELERY_RESULT_BACKEND=redis_url,
        **extra,
    )


class CeleryProcess:
    """``celery worker`` or ``celery beat`` as a subprocess on the given environment."""

    def __init__(self, kind: str, env: dict[str, str], workdir: Path) -> None:
        self.kind = kind
        self.env = env
        self.log = workdir / f"{kind}.log"
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "celery", "-A", "test_management_system", self.kind,
                "--loglevel", "INFO"]  # fmt: skip
        if self.kind == "worker":
            argv += ["--concurrency", "2", "--without-gossip", "--without-mingle",
                     "--hostname", f"faults-{os.getpid()}@%h"]  # fmt: skip
            ready = "ready."
        else:
            argv += ["--schedule", str(self.workdir / "beat-schedule"), "--max-interval", "1"]
            ready = "beat: Starting..."
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                argv, cwd=REPO_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"celery {self.kind} exited:\n{self.log.read_text()[-3000:]}")
            return ready in self.log.read_text(errors="replace")

        _wait(up, f"celery {self.kind}", self.log)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            if self.kind == "beat":
                self.proc.send_signal(signal.SIGTERM)
            stop_process(self.proc)
            self.proc = None


@contextmanager
def default_database(url: str) -> Iterator[None]:
    """Points this process's ``default`` database connection at ``url`` for the block (the
    lab is set up and checked through the ORM there); the test database's connection comes
    back afterwards."""
    import environ
    from django.db import connections

    original = connections["default"]
    target = environ.Env.db_url_config(url)
    settings_dict = {**original.settings_dict}
    settings_dict.update(
        {key: target.get(key, "") for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT")}
    )
    swapped = type(original)(settings_dict, alias="default")
    connections["default"] = swapped
    try:
        yield
    finally:
        swapped.close()
        connections["default"] = original
