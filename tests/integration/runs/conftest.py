"""A lab on this machine: the loopback sshd as a machine, a warm venv pool on it, and a
simulated board on a real pty that the machine's user can open."""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from machines import services as machine_services
from machines.models import Board, Machine, Venv
from remote_scripts.board_sim import BoardSimulator, PtyEndpoint
from test_runner.models import RunEvent, RunStatus, TestRun
from tests.factories import make_board, make_machine, make_user
from tests.sshd import SSHD

POOL = 2


@dataclass
class Lab:
    admin: object
    machine: Machine
    board: Board | None
    sim: BoardSimulator | None


def lab_machine(sshd: SSHD, name: str, labels: list[str] | None = None) -> Machine:
    if not sshd.running:
        sshd.start()
    machine = make_machine(
        name, hostname=sshd.host, port=sshd.port, username=sshd.username,
        password=sshd.password, work_dir=f"{sshd.home}/tms-e2e-{os.getpid()}-{name}",
        max_concurrent_runs=POOL, labels=labels or ["e2e"],
    )  # fmt: skip
    offered = machine_services.machine_fetch_host_key(machine=machine)
    machine_services.machine_trust_host_key(
        machine=machine, actor=None, source="test", fingerprint=offered.fingerprint
    )
    result = machine_services.machine_check(machine=machine)
    assert result.ok, result.message
    machine.refresh_from_db()
    # The venvs on the host survive from test to test; a reset that finds them clean is fast.
    for slot in range(POOL):
        venv = Venv.objects.create(
            machine=machine, slot=slot, path=f"{machine.effective_work_dir}/venvs/slot-{slot}",
            python="python3", state=Venv.State.DIRTY,
        )  # fmt: skip
        venv = machine_services.venv_reset(venv=venv)
        assert venv.state == Venv.State.READY, venv.last_error
    return machine


@pytest.fixture(scope="session", autouse=True)
def _remove_session_work_dirs(sshd: SSHD) -> Iterator[None]:
    # Work directories are per test session (two sessions must not reset each other's venvs);
    # within a session the venvs stay warm from test to test.
    yield
    subprocess.run(
        ["sh", "-c", 'rm -rf -- "$1"/tms-e2e-"$2"-*', "sh", str(sshd.home), str(os.getpid())],
        check=False,
    )


@pytest.fixture
def board_sim(sshd: SSHD) -> Iterator[BoardSimulator]:
    endpoint = PtyEndpoint()
    user = pwd.getpwnam(sshd.username)
    os.chown(endpoint.path, user.pw_uid, user.pw_gid)  # the runner runs as the machine's user
    sim = BoardSimulator(endpoint, board_id="SIM-E2E", heartbeat_interval=0.5, seed=3)
    sim.start()
    yield sim
    sim.stop()
    endpoint.close()


@pytest.fixture
def lab(sshd: SSHD, board_sim: BoardSimulator, celery_worker: str) -> Lab:
    machine = lab_machine(sshd, "loop")
    board = make_board(machine, "sim-1", serial_port=board_sim.endpoint.path, labels=["sim"])
    return Lab(
        admin=make_user("lab-admin", admin=True), machine=machine, board=board, sim=board_sim
    )


def wait_for(run_id: int, *, status: str = RunStatus.DONE, timeout: float = 180) -> TestRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = TestRun.objects.get(pk=run_id)
        if run.status == status or run.status == RunStatus.DONE:
            return run
        time.sleep(0.2)
    run = TestRun.objects.get(pk=run_id)
    pytest.fail(f"run {run_id} still {run.status} after {timeout}s: {run.status_message}")


def wait_for_events(run_id: int, type_: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if RunEvent.objects.filter(run_id=run_id, type=type_).exists():
            return
        time.sleep(0.2)
    run = TestRun.objects.get(pk=run_id)
    pytest.fail(
        f"no {type_} event for run {run_id} after {timeout}s ({run.status}: {run.status_message})"
    )


def assert_gap_free(run: TestRun) -> None:
    seqs = list(RunEvent.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1)), "seq has a gap or a double"
    assert seqs and seqs[-1] == run.last_seq


def assert_released(run: TestRun) -> None:
    assert not Venv.objects.filter(lease_holder=run.holder).exists()
    assert not Board.objects.filter(lease_holder=run.holder).exists()
