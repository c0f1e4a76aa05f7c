"""Faults on a run's own path, injected into real parts while the run is going: the worker
SIGKILLed, sshd stopped, the board's pty closed, the host's workspace disk full.

Each test asserts how the run ends (or that it resumes), that no stored event is lost (seq
without a gap) and that every lease is given back."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time

import pytest

from machines import ssh
from machines.models import Venv
from machines.tasks import machine_check_task
from test_runner import services
from test_runner.execution import runners_reap
from test_runner.models import (
    ErrorCategory,
    RunEvent,
    RunOutcome,
    RunStatus,
    RunTransition,
    TestResult,
    TestRun,
)
from tests.factories import make_finished_run
from tests.integration.faults.conftest import (
    RECONNECT_WINDOW,
    Worker,
    assert_gap_free,
    assert_released,
    mount_tmpfs,
    sshd_down,
    unmount,
    wait_for,
    wait_for_events,
)
from tests.integration.runs.test_runs_e2e import COUNT_RUN_PROCESSES, api, make_case, start
from tests.sshd import SSHD

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Prints far more than the 256 KiB workspace disk of the disk-full test can hold.
DISK_FILLER = textwrap.dedent(
    """
    line = "filling the workspace disk " * 8
    for i in range(100000):
        print(i, line)
    """
)


def resume_by_sweep(run_id: int, victim: str, timeout: float = 90) -> TestRun:
    """Runs the sweep (beat does, every 10 s, in production) until another worker has taken
    the run over from ``victim``, or it is done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = TestRun.objects.get(pk=run_id)
        if run.status == RunStatus.DONE or (run.worker and run.worker != victim):
            return run
        services.runs_sweep()
        time.sleep(0.5)
    pytest.fail(f"run {run_id} was not taken over from {victim} in {timeout}s")


def assert_every_event_once(run: TestRun) -> None:
    """Each event of the one runner stored exactly once: seq 1..N without a gap or a double,
    one start and one end (the runner was not launched a second time)."""
    assert_gap_free(run)
    assert RunEvent.objects.filter(run=run).count() == run.last_seq
    assert RunEvent.objects.filter(run=run, type="run_start").count() == 1
    assert RunEvent.objects.filter(run=run, type="run_end").count() == 1


def remote_processes(sshd: SSHD, workspace: str) -> int:
    """Processes on the host that belong to the run with this workspace."""
    with ssh.SSHConnection(sshd.spec()) as conn:
        alive = conn.run(ssh.Command("sh", "-c", COUNT_RUN_PROCESSES, "sh", workspace))
    return int(alive.stdout.strip())


def final_transition(run: TestRun) -> RunTransition:
    return RunTransition.objects.filter(run=run, to_status=RunStatus.DONE).get()


# --- 1. the worker streaming the run is SIGKILLed ----------------------------------------------


def test_pool_process_killed_mid_run_is_resumed_with_every_event_once(lab):
    case = make_case(lab.admin, "slow-board", "board", "slow smoke", board_labels=["sim"])
    run_id = start(lab, case, parameters={"seconds": "4"})
    wait_for_events(run_id, "test_start")
    victim = TestRun.objects.get(pk=run_id).worker
    os.kill(int(victim.rsplit(":", 1)[1]), signal.SIGKILL)  # the pool process, no warning
    resume_by_sweep(run_id, victim)
    run = wait_for(run_id)
    assert run.outcome == RunOutcome.PASSED, run.status_message
    assert run.dispatch_count >= 2
    assert TestResult.objects.filter(run=run, outcome="passed").count() == 2
    assert_every_event_once(run)
    assert_released(run)


def test_whole_worker_killed_mid_run_a_new_worker_resumes_it(lab, fault_worker: Worker):
    case = make_case(lab.admin, "slow-board", "board", "slow smoke", board_labels=["sim"])
    run_id = start(lab, case, parameters={"seconds": "4"})
    wait_for_events(run_id, "test_start")
    victim = TestRun.objects.get(pk=run_id).worker
    fault_worker.kill()  # main process and pool together: nothing is left to requeue the task
    held = TestRun.objects.get(pk=run_id)
    assert held.status == RunStatus.RUNNING and held.worker == victim
    fault_worker.start()  # a new worker on the same broker and database
    resume_by_sweep(run_id, victim)
    run = wait_for(run_id)
    assert run.outcome == RunOutcome.PASSED, run.status_message
    assert run.dispatch_count >= 2
    # The new worker read on from where the dead one stopped; the runner ran once, on its own.
    assert TestResult.objects.filter(run=run, outcome="passed").count() == 2
    assert_every_event_once(run)
    assert_released(run)


# --- 2. sshd stopped mid-run -------------------------------------------------------------------


def test_sshd_stopped_past_the_reconnect_window_is_an_infrastructure_error(lab, sshd_back):
    sshd = sshd_back
    case = make_case(lab.admin, "long-board", "board", "slow", board_labels=["sim"])
    run_id = start(lab, case, parameters={"seconds": "40"})
    wait_for_events(run_id, "log")
    stored_before = TestRun.objects.get(pk=run_id).last_seq
    assert sshd_down(sshd) >= 1, "the worker had no SSH session to lose"

    run = wait_for(run_id, timeout=RECONNECT_WINDOW + 90)
    assert run.outcome == RunOutcome.ERROR, run.status_message
    assert run.error_category == ErrorCategory.INFRASTRUCTURE
    message = run.status_message
    assert f"Machine {lab.machine.name} unreachable over SSH" in message, message
    assert f"{sshd.host}:{sshd.port}" in message and "connection refused" in message, message
    done = final_transition(run)
    assert done.message == message and done.outcome == RunOutcome.ERROR
    # What was stored before sshd went away stays, without a gap.
    assert run.last_seq >= stored_before
    assert_gap_free(run)
    assert_released(run)
    assert api(lab.admin).get(f"/api/v1/runs/{run_id}/").json()["status_message"] == message

    # The slot cannot be reset while the machine is away: it is DIRTY (or BROKEN) with the
    # reason, never leased and never READY unchecked.
    assert run.venv is not None
    deadline = time.monotonic() + 90
    venv = Venv.objects.get(pk=run.venv.pk)
    while not venv.last_error and time.monotonic() < deadline:
        time.sleep(0.5)
        venv = Venv.objects.get(pk=run.venv.pk)
    assert venv.state == Venv.State.DIRTY, venv.state
    assert venv.lease_holder == "" and "Cannot reach" in venv.last_error, venv.last_error

    # sshd back. The runner, detached, outlived its run and still holds the board's port; the
    # next machine check (beat queues one every few minutes) finds the machine answering,
    # stops that runner, and has the worker retry the failed reset.
    sshd.start()
    assert remote_processes(sshd, run.remote_workspace) > 0, "the runner was expected to go on"
    assert machine_check_task(lab.machine.pk)["ok"] is True
    assert remote_processes(sshd, run.remote_workspace) == 0
    deadline = time.monotonic() + 90
    while venv.state != Venv.State.READY and time.monotonic() < deadline:
        time.sleep(0.3)
        venv.refresh_from_db()
    assert venv.state == Venv.State.READY, venv.last_error


def test_sshd_back_within_the_reconnect_window_the_run_finishes(lab, sshd_back):
    sshd = sshd_back
    case = make_case(lab.admin, "slow-board", "board", "slow smoke", board_labels=["sim"])
    run_id = start(lab, case, parameters={"seconds": "6"})
    wait_for_events(run_id, "test_start")
    assert sshd_down(sshd) >= 1
    # sshd stays down until the worker has noticed (and is retrying), then comes back.
    deadline = time.monotonic() + RECONNECT_WINDOW - 5
    while "reconnecting" not in TestRun.objects.get(pk=run_id).status_message:
        assert time.monotonic() < deadline, "the worker did not notice that sshd went away"
        time.sleep(0.2)
    noticed = TestRun.objects.get(pk=run_id).status_message
    assert f"Lost the SSH connection to machine {lab.machine.name}" in noticed, noticed
    sshd.start()

    run = wait_for(run_id, timeout=120)
    assert run.outcome == RunOutcome.PASSED, run.status_message
    assert TestResult.objects.filter(run=run, outcome="passed").count() == 2
    assert_every_event_once(run)
    assert_released(run)


# --- 3. the board's pty closed mid-run ---------------------------------------------------------


def test_board_pty_closed_mid_run_is_a_serial_error(lab, sshd):
    case = make_case(lab.admin, "long-board", "board", "slow smoke", board_labels=["sim"])
    run_id = start(lab, case, parameters={"seconds": "60"})
    wait_for_events(run_id, "log")  # the runner is reading the board's frames
    # The line drops mid-test: master and slave closed at once, the device node goes away;
    # then the board is gone for good (stopped only after, so it never ends the test itself).
    lab.sim.endpoint.disconnect()
    lab.sim.stop()

    run = wait_for(run_id, timeout=90)
    assert run.outcome == RunOutcome.ERROR, run.status_message
    # A lost board is the lab's trouble, never a failed test.
    assert run.error_category == ErrorCategory.INFRASTRUCTURE
    assert run.status_message.startswith("Board or serial error: "), run.status_message
    assert lab.board.serial_port in run.status_message
    assert "not available within" in run.status_message
    events = RunEvent.objects.filter(run=run)
    assert events.filter(type="board_status", data__state="disconnected").exists()
    assert events.filter(type="board_status", data__state="lost").exists()
    assert events.filter(type="error", data__kind="board").exists()
    assert events.get(type="run_end").data["reason"] == "board_error"
    log = b"".join(api(lab.admin).get(f"/api/v1/runs/{run_id}/log").streaming_content).decode()  # type: ignore[attr-defined]
    assert "ERROR   [board]" in log and lab.board.serial_port in log
    # The test that was running is an error; the one that never started did not pass.
    assert TestResult.objects.get(run=run, test_id="slow").outcome == "error"
    assert TestResult.objects.get(run=run, test_id="smoke").outcome != "passed"
    assert remote_processes(sshd, run.remote_workspace) == 0, "the runner outlived the board"
    assert_gap_free(run)
    assert_released(run)


# --- 4. the host's workspace disk full ---------------------------------------------------------


def test_workspace_disk_full_ends_the_run_with_no_space_left(lab, sshd):
    # Run workspaces (events file, runner.log, the case's files) go to a 256 KiB tmpfs; the
    # venvs and the runner's own files stay on the real disk.
    runs_dir = f"{lab.machine.effective_work_dir}/runs"
    mount_tmpfs(runs_dir, size="256k", owner=sshd.username)
    try:
        case = make_case(
            lab.admin, "disk-filler", "script", "filler.py", {"filler.py": DISK_FILLER}
        )
        run_id = start(lab, case, timeout=600)
        run = wait_for(run_id, timeout=120)
        with ssh.SSHConnection(sshd.spec()) as conn:
            host_events = conn.get(f"{run.remote_workspace}/events.jsonl")
    finally:
        unmount(runs_dir)

    assert run.outcome == RunOutcome.ERROR, run.status_message
    assert run.error_category == ErrorCategory.INFRASTRUCTURE
    message = run.status_message
    assert message.startswith("No space left on the host"), message
    assert lab.machine.name in message and run.remote_workspace in message, message
    assert final_transition(run).message == message
    # Every complete line the runner wrote before the disk filled is stored, in order; the
    # line it was cut off in is not (it was never whole).
    complete = [line for line in host_events.split(b"\n")[:-1] if line.strip()]
    assert len(complete) > 100, "the disk filled before the run got going"
    assert json.loads(complete[-1])["seq"] == run.last_seq == len(complete)
    assert_gap_free(run)
    assert_released(run)
    assert remote_processes(sshd, run.remote_workspace) == 0, "the test outlived its runner"
    client = api(lab.admin)
    detail = client.get(f"/api/v1/runs/{run_id}/")
    assert detail.status_code == 200 and detail.json()["status_message"] == message
    log = client.get(f"/api/v1/runs/{run_id}/log")
    assert log.status_code == 200
    assert "filling the workspace disk" in b"".join(log.streaming_content).decode()  # type: ignore[attr-defined]


def test_runners_reap_never_signals_a_process_that_is_not_the_runs_runner(lab, sshd):
    # A run given up long ago whose pid the host has since given to another process.
    with ssh.SSHConnection(sshd.spec()) as conn:
        other = conn.start_detached(ssh.Command("sleep", "120"), log_path=f"{sshd.home}/o.log")
    try:
        run = make_finished_run(lab.admin, lab.machine, outcome=RunOutcome.ERROR)
        TestRun.objects.filter(pk=run.pk).update(
            remote_pid=other, remote_workspace=f"{lab.machine.effective_work_dir}/runs/gone"
        )
        assert runners_reap(machine=lab.machine) == []
        with ssh.SSHConnection(sshd.spec()) as conn:
            alive = conn.run(ssh.Command("kill", "-0", other), check=False)
        assert alive.exit_code == 0, "a process that is not the run's runner was signalled"
    finally:
        with ssh.SSHConnection(sshd.spec()) as conn:
            conn.kill_process_group(other, grace=0.5)
