"""The services under a run fail for real: the broker (Redis) is down while a run is created,
and the database (PostgreSQL) restarts while a run streams. Each test breaks a server of its
own (tests/private_services.py), never the machine's shared ones, and drives the system from
outside: a real web server, a real Celery worker and beat, the loopback sshd as the machine."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from django.db.utils import InterfaceError, OperationalError

from machines.models import Venv
from remote_scripts.board_sim import BoardSimulator, PtyEndpoint
from test_runner import services
from test_runner.models import RunEvent, RunOutcome, RunStatus, RunTransition, TestRun
from tests.factories import make_api_token, make_board, make_user
from tests.integration.runs.conftest import assert_gap_free, assert_released, lab_machine
from tests.liveserver import Web
from tests.private_services import (
    CeleryProcess,
    PrivatePostgres,
    PrivateRedis,
    default_database,
    manage,
    services_env,
)
from tests.sshd import SSHD

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

QUICK = "print('measured', 6 * 7)\n"
TICKS = 120
TICKER = textwrap.dedent(
    f"""
    import time
    for i in range({TICKS}):
        print(f"tick {{i}}", flush=True)
        time.sleep(0.05)
    """
)


def call(web: Web, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310  # loopback test server
        web.url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_done(run_id: int, timeout: float = 180) -> TestRun:
    """Polls the run until DONE; a dropped database connection (the server restarted) is
    closed and polling goes on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            run = TestRun.objects.get(pk=run_id)
            if run.status == RunStatus.DONE:
                return run
        except (OperationalError, InterfaceError):
            connections["default"].close()
        time.sleep(0.2)
    run = TestRun.objects.get(pk=run_id)
    pytest.fail(f"run {run_id} still {run.status} after {timeout} s: {run.status_message}")


def logs(*processes: CeleryProcess | Web) -> str:
    return "\n".join(
        f"--- {p.log.name}\n{p.log.read_text(errors='replace')[-4000:]}"
        for p in processes
        if p.log.exists()
    )


@pytest.fixture
def work_dirs(sshd: SSHD) -> Iterator[list[str]]:
    """Work directories of the machines a test makes on the sshd, removed afterwards."""
    made: list[str] = []
    yield made
    for path in made:
        subprocess.run(["rm", "-rf", "--", path], check=False)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fault_board(sshd: SSHD) -> Iterator[BoardSimulator]:
    """A simulated board on a pty the machine's user can open."""
    endpoint = PtyEndpoint()
    user = pwd.getpwnam(sshd.username)
    os.chown(endpoint.path, user.pw_uid, user.pw_gid)
    sim = BoardSimulator(endpoint, board_id="SIM-FAULTS", heartbeat_interval=0.5, seed=5)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()
        endpoint.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[list[CeleryProcess | Web]]:
    """Processes a test starts; stopped (web server, beat, then worker) at the end."""
    started: list[CeleryProcess | Web] = []
    yield started
    for process in reversed(started):
        process.stop()


def test_redis_down_at_create_is_answered_at_once_and_the_run_goes_when_it_is_back(
    test_database_url: str,
    sshd: SSHD,
    redis_server: PrivateRedis,
    stack: list[CeleryProcess | Web],
    work_dirs: list[str],
    tmp_path: Path,
) -> None:
    admin = make_user("fault-admin", admin=True)
    token = make_api_token(admin)[1]
    machine = lab_machine(sshd, "broker-down")
    work_dirs.append(machine.effective_work_dir)
    case = services.case_create(
        actor=admin, name="quick", kind="script", entry_point="quick.py",
        files={"quick.py": QUICK},
    )  # fmt: skip
    env = services_env(database_url=test_database_url, redis_url=redis_server.url)
    worker = CeleryProcess("worker", env, tmp_path)
    beat = CeleryProcess("beat", env, tmp_path)
    web = Web(test_database_url, tmp_path / "web.log", **{
        k: env[k] for k in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
    })  # fmt: skip
    for process in (worker, beat, web):
        process.start()
        stack.append(process)
    body = {"case": case.name, "machine": machine.name}

    # With the broker up a run goes at once; the web server now holds a broker connection.
    code, first = call(web, token, "POST", "/api/v1/runs/", body)
    assert code == 201, first
    run = wait_done(first["id"])
    assert run.outcome == RunOutcome.PASSED, run.status_message
    # The broker goes down while the worker is idle (its slot reset done): this test is about
    # dispatch, not about a task in flight.
    deadline = time.monotonic() + 120
    while Venv.objects.filter(machine=machine, state=Venv.State.READY).count() < 2:
        assert time.monotonic() < deadline, f"the venv reset never ended:\n{logs(worker)}"
        time.sleep(0.2)

    redis_server.stop()
    started = time.monotonic()
    code, answer = call(web, token, "POST", "/api/v1/runs/", body)
    answered_in = time.monotonic() - started
    print(f"create answered in {answered_in * 1000:.0f} ms with the broker down")
    # The run is saved (nothing the user asked for is lost) and the answer says plainly that it
    # waits for the task queue.
    assert code == 201, answer
    assert answer["status"] == RunStatus.QUEUED
    assert "task queue is unreachable" in answer["status_message"], answer
    assert "will be sent when it is back" in answer["status_message"]
    with urllib.request.urlopen(f"{web.url}/health/", timeout=30) as live:  # noqa: S310
        assert live.status == 200  # the web server itself is fine
    try:
        urllib.request.urlopen(f"{web.url}/health/ready/", timeout=30)  # noqa: S310
        pytest.fail("readiness said ok with the broker down")
    except urllib.error.HTTPError as exc:
        ready = json.loads(exc.read())
        assert exc.code == 503 and ready["down"] == ["broker"], ready

    queued = TestRun.objects.get(pk=answer["id"])
    assert queued.status == RunStatus.QUEUED and queued.dispatched_at is None

    # The broker comes back (empty, as after a crash): beat's sweep finds the run that was
    # never sent and sends it; the worker runs it to the end.
    redis_server.start()
    run = wait_done(answer["id"])
    assert run.outcome == RunOutcome.PASSED, f"{run.status_message}\n{logs(worker, beat)}"
    assert run.dispatch_count == 1
    assert_gap_free(run)
    assert_released(run)
    log = " ".join(
        str(e["data"].get("message", "")) for e in RunEvent.objects.filter(run=run, type="log")
        .values("data")
    )  # fmt: skip
    assert "measured 42" in log
    assert worker.alive and beat.alive


def test_postgres_restarted_mid_run_is_ridden_through(
    sshd: SSHD,
    fault_board: BoardSimulator,
    redis_server: PrivateRedis,
    stack: list[CeleryProcess | Web],
    work_dirs: list[str],
    tmp_path: Path,
) -> None:
    pg = PrivatePostgres()
    try:
        pg.start()
        url = pg.create_database("tms_faults")
        env = services_env(database_url=url, redis_url=redis_server.url)
        manage("migrate", "--noinput", env=env)
        with default_database(url):
            admin = make_user("fault-admin", admin=True)
            token = make_api_token(admin)[1]
            machine = lab_machine(sshd, "pg-restart")
            work_dirs.append(machine.effective_work_dir)
            make_board(machine, "sim-pg", serial_port=fault_board.endpoint.path, labels=["sim"])
            case = services.case_create(
                actor=admin, name="ticker", kind="script", entry_point="ticker.py",
                files={"ticker.py": TICKER}, needs_board=True, board_labels=["sim"],
            )  # fmt: skip
            worker = CeleryProcess("worker", env, tmp_path)
            beat = CeleryProcess("beat", env, tmp_path)
            web = Web(url, tmp_path / "web.log", **{
                k: env[k] for k in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
            })  # fmt: skip
            for process in (worker, beat, web):
                process.start()
                stack.append(process)

            code, answer = call(web, token, "POST", "/api/v1/runs/", {
                "case": case.name, "machine": machine.name,
            })  # fmt: skip
            assert code == 201, answer
            run_id = answer["id"]
            # Restart while the run streams: some ticks stored, most still to come.
            deadline = time.monotonic() + 120
            while RunEvent.objects.filter(run_id=run_id, type="log").count() < 10:
                run = TestRun.objects.get(pk=run_id)
                assert run.status != RunStatus.DONE, run.status_message
                assert time.monotonic() < deadline, f"the run never streamed: {logs(worker)}"
                time.sleep(0.1)
            pg.restart()
            connections["default"].close()

            run = wait_done(run_id)
            assert run.outcome == RunOutcome.PASSED, f"{run.status_message}\n{logs(worker)}"
            assert_gap_free(run)
            assert_released(run)
            ticks = [
                str(data.get("message", "")).strip()
                for data in RunEvent.objects.filter(run=run, type="log").values_list(
                    "data", flat=True
                )
            ]
            assert [t for t in ticks if t.startswith("tick ")] == [
                f"tick {i}" for i in range(TICKS)
            ]
            # The run says what happened to it, and the worker lived through it.
            notes = list(RunTransition.objects.filter(run=run).values_list("message", flat=True))
            assert any("database connection was lost" in note for note in notes), notes
            assert worker.alive, logs(worker)
    finally:
        # The processes on the cluster go before it does.
        for process in reversed(stack):
            process.stop()
        stack.clear()
        pg.remove()
