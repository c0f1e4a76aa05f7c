"""Fixtures for the integration tests: a real OpenSSH server on loopback, and connections to it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from machines.ssh import Command, SSHConnection
from tests.conftest import REQUIRE_SERVICES
from tests.sshd import SSHD, SSHDUnavailable, remove_sshd, start_sshd


@pytest.fixture(scope="session")
def sshd() -> Iterator[SSHD]:
    """A throwaway sshd with a test user; skipped (or, when services are required, failed)
    where this machine cannot run one."""
    try:
        server = start_sshd()
    except SSHDUnavailable as exc:
        if REQUIRE_SERVICES:
            pytest.fail(f"TMS_REQUIRE_SERVICES=1 but the test sshd cannot start: {exc}")
        pytest.skip(f"test sshd unavailable: {exc}")
    try:
        yield server
    finally:
        remove_sshd(server)


@pytest.fixture
def ssh(sshd: SSHD) -> Iterator[SSHConnection]:
    """A password-authenticated connection to the test sshd with its host key pinned."""
    if not sshd.running:
        sshd.start()
    with SSHConnection(sshd.spec()) as connection:
        yield connection


@pytest.fixture
def remote_dir(ssh: SSHConnection, sshd: SSHD) -> Iterator[str]:
    """A fresh directory in the test user's home, removed afterwards."""
    path = f"{sshd.home}/t-{secrets.token_hex(6)}"
    ssh.run(Command("mkdir", "-p", path))
    yield path
    ssh.run(Command("rm", "-rf", "--", path), check=False)
