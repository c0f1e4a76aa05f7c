"""Fixtures shared by the whole suite.

Set ``TMS_REQUIRE_SERVICES=1`` (CI does) to make the suite refuse to run unless PostgreSQL,
Redis and the binaries the integration tests need are really there: a missing service is a
failure, never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("TMS_REQUIRE_SERVICES") == "1"
# Binaries the integration tests drive for real; CI installs them with apt-get.
REQUIRED_BINARIES = ("sshd", "socat")


def pytest_configure(config: pytest.Config) -> None:
    import secrets

    from model_bakery import baker

    # Workers and servers this session starts use its own broker folder and result store.
    if settings.CELERY_BROKER_URL == "filesystem://":
        queue = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
        os.environ.setdefault("TMS_BROKER_DIR", str(queue.parent))
    os.environ.setdefault("CELERY_RESULT_BACKEND", settings.CELERY_RESULT_BACKEND)

    # Secrets are text to the baker; the field encrypts them on the way in.
    baker.generators.add("machines.fields.SecretField", lambda: secrets.token_urlsafe(16))


def pytest_unconfigure(config: pytest.Config) -> None:
    # This session's own queue and result folders (see pytest_configure) go with it.
    for folder in (
        settings.VAR_DIR / f"broker-test-{os.getpid()}",
        settings.VAR_DIR / f"celery-results-test-{os.getpid()}",
    ):
        shutil.rmtree(folder, ignore_errors=True)


def _is_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def _find_binary(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


def pytest_sessionstart(session: pytest.Session) -> None:
    if not REQUIRE_SERVICES:
        return
    problems = []
    if not _is_postgres():
        problems.append("DATABASE_URL does not point at PostgreSQL")
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        problems.append("REDIS_URL / CELERY_BROKER_URL does not point at Redis")
    else:
        from test_management_system.health import check_broker

        try:
            check_broker()
        except Exception as exc:
            problems.append(f"Redis is not reachable: {exc}")
    problems += [f"binary {b!r} is missing" for b in REQUIRED_BINARIES if not _find_binary(b)]
    if problems:
        pytest.exit("TMS_REQUIRE_SERVICES=1 but: " + "; ".join(problems), returncode=3)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _is_postgres():
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL=postgres://...)")
    for item in items:
        if item.get_closest_marker("postgres"):
            item.add_marker(skip)


def database_url(settings_dict: dict[str, object]) -> str:
    """A DATABASE_URL for the connection settings given (used to point subprocesses at the
    test database that pytest-django created)."""
    name = str(settings_dict["NAME"])
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{name}"
    user = quote(str(settings_dict.get("USER") or ""), safe="")
    password = quote(str(settings_dict.get("PASSWORD") or ""), safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "localhost"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{quote(name, safe='')}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def subprocess_env(**overrides: str) -> dict[str, str]:
    env = os.environ.copy()
    env.update({"DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONUNBUFFERED": "1"})
    env.update(overrides)
    return env


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def test_database_url(django_db_setup: None, django_db_blocker: object) -> str:
    from django.db import connection

    return database_url(connection.settings_dict)


@pytest.fixture(scope="session")
def worker_process(
    test_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The session's one real Celery worker (prefork, 2 processes) in its own process, on the
    test database and broker (a ``tests.worker.Worker``: the fault tests kill and restart
    it). Stopped with a warm shutdown at the end."""
    from tests.worker import Worker

    worker = Worker(
        test_database_url,
        tmp_path_factory.mktemp("worker") / "worker.log",
        name=f"test-{os.getpid()}",
    )
    worker.start()  # waits for its first answer; a dead worker fails here, clearly
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="session")
def celery_worker(worker_process: Any) -> str:
    """The session's worker, running; yields the path of its log."""
    if not worker_process.running:
        worker_process.start()
    return str(worker_process.log_path)
