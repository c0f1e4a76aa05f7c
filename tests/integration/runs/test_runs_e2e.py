"""Runs end to end: API -> real Celery worker -> real sshd -> runner on a pty with the board
simulator -> events back into the database."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from itertools import pairwise
from xml.etree import ElementTree

import pytest
from rest_framework.test import APIClient

from machines import services as machine_services
from machines import ssh
from test_runner import services
from test_runner.models import RunEvent, RunOutcome, RunStatus, TestResult, TestRun
from tests.integration.runs.conftest import (
    assert_gap_free,
    assert_released,
    lab_machine,
    wait_for,
    wait_for_events,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BOARD_TESTS = textwrap.dedent(
    """
    def test_ping(board):
        board.send("PING", "e2e")
        frame = board.expect(r"^PONG,", timeout=5)
        assert frame.get("token") == "e2e"

    def test_arithmetic():
        print("checking arithmetic")
        assert 6 * 7 == 42
    """
)
FAILING_TESTS = textwrap.dedent(
    """
    def test_good():
        assert True

    def test_bad_sensor():
        reading = 17
        assert reading == 42, "sensor reads 17, wanted 42"
    """
)
SLEEPER = textwrap.dedent(
    """
    import sys, time
    print("sleeping", flush=True)
    for _ in range(600):
        time.sleep(0.1)
    sys.exit(0)
    """
)


COUNT_RUN_PROCESSES = r"""
n=0
for d in /proc/[0-9]*; do
  [ "$d" = "/proc/$$" ] && continue
  args=$(tr '\000' ' ' <"$d/cmdline" 2>/dev/null)
  cwd=$(readlink "$d/cwd" 2>/dev/null)
  if [ "$cwd" = "$1" ] || case "$args" in *"--workspace $1 "*) true;; *) false;; esac; then
    n=$((n + 1))
  fi
done
echo "$n"
"""


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def make_case(user, name: str, kind: str, entry_point: str, files=None, **extra):
    return services.case_create(
        actor=user, name=name, kind=kind, entry_point=entry_point, files=files or {}, **extra
    )


def start(lab, case, **body) -> int:
    payload = {"case": case.name, "machine": lab.machine.name, **body}
    response = api(lab.admin).post("/api/v1/runs/", payload, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_pytest_case_passes_with_results_log_and_junit(lab):
    case = make_case(
        lab.admin, "board-smoke", "pytest", "-q test_board.py", {"test_board.py": BOARD_TESTS},
        needs_board=True, board_labels=["sim"],
    )  # fmt: skip
    run = wait_for(start(lab, case))
    assert run.outcome == RunOutcome.PASSED, run.status_message
    assert (run.planned, run.passed, run.failed, run.errors) == (2, 2, 0, 0)
    assert run.board == lab.board and run.venv is not None and run.exit_code == 0
    results = {r.test_id: r.outcome for r in TestResult.objects.filter(run=run)}
    assert results == {
        "test_board.py::test_ping": "passed",
        "test_board.py::test_arithmetic": "passed",
    }
    assert_gap_free(run)
    assert_released(run)
    client = api(lab.admin)
    log = b"".join(client.get(f"/api/v1/runs/{run.pk}/log").streaming_content).decode()  # type: ignore[attr-defined]
    assert "test_board.py::test_ping" in log and "run ended: passed" in log
    junit = ElementTree.fromstring(client.get(f"/api/v1/runs/{run.pk}/junit.xml").content)  # noqa: S314
    cases = junit.findall(".//testcase")
    assert len(cases) == 2 and not junit.findall(".//failure")
    artifacts = {a["name"] for a in client.get(f"/api/v1/runs/{run.pk}/artifacts/").json()}
    assert {"junit.xml", "runner.log", "serial.log"} <= artifacts
    events = client.get(f"/api/v1/runs/{run.pk}/events/?after=0&limit=5000").json()
    assert [e["seq"] for e in events["events"]] == list(range(1, run.last_seq + 1))
    assert events["events"][0]["type"] == "run_start" and events["events"][-1]["type"] == "run_end"


def test_failing_test_is_a_failure_not_an_error(lab):
    case = make_case(
        lab.admin, "math-fail", "pytest", "test_fail.py", {"test_fail.py": FAILING_TESTS}
    )
    run = wait_for(start(lab, case))
    assert run.outcome == RunOutcome.FAILED and run.error_category == "test"
    assert (run.passed, run.failed) == (1, 1)
    bad = TestResult.objects.get(run=run, name="test_bad_sensor")
    assert "sensor reads 17, wanted 42" in bad.message
    junit = ElementTree.fromstring(services.junit_xml(run))  # noqa: S314  # our own XML
    assert len(junit.findall(".//failure")) == 1
    assert_released(run)


def test_board_mode_records_assertions(lab):
    case = make_case(lab.admin, "on-board", "board", "smoke always_fail", board_labels=["sim"])
    run = wait_for(start(lab, case))
    assert run.outcome == RunOutcome.FAILED, run.status_message
    smoke = TestResult.objects.get(run=run, test_id="smoke")
    assert smoke.outcome == "passed" and smoke.assertions
    assert TestResult.objects.get(run=run, test_id="always_fail").outcome == "failed"
    assert_gap_free(run)


def test_missing_board_is_an_infrastructure_error(lab):
    machine_services.board_update(
        board=lab.board, actor=None, source="test", serial_port="/dev/tms-no-such-tty"
    )
    case = make_case(lab.admin, "no-board", "board", "smoke", board_labels=["sim"])
    run = wait_for(start(lab, case))
    assert run.outcome == RunOutcome.ERROR and run.error_category == "infrastructure"
    assert "Board or serial error" in run.status_message
    assert_released(run)


def test_timeout_stops_the_run(lab):
    case = make_case(lab.admin, "sleeper", "script", "sleeper.py", {"sleeper.py": SLEEPER})
    run = wait_for(start(lab, case, timeout=6))
    assert run.outcome == RunOutcome.TIMED_OUT, run.status_message
    assert_released(run)


def test_cancel_mid_run_kills_the_remote_processes(lab, sshd):
    case = make_case(lab.admin, "sleeper", "script", "sleeper.py", {"sleeper.py": SLEEPER})
    run_id = start(lab, case)
    wait_for_events(run_id, "test_start")
    run = TestRun.objects.get(pk=run_id)
    response = api(lab.admin).post(f"/api/v1/runs/{run_id}/cancel/")
    assert response.status_code == 200 and response.json()["cancel_requested"] is True
    run = wait_for(run_id, timeout=60)
    assert run.outcome == RunOutcome.CANCELLED, run.status_message
    assert run.remote_pid and run.remote_workspace
    with ssh.SSHConnection(sshd.spec()) as conn:
        # This run's processes only: the runner names its workspace on its command line, the
        # test runs in it (zombies have no cwd and do not count).
        alive = conn.run(ssh.Command("sh", "-c", COUNT_RUN_PROCESSES, "sh", run.remote_workspace))
    assert alive.stdout.strip() == "0", "the remote test survived the cancel"
    assert_released(run)


def test_worker_killed_mid_run_is_resumed_without_losing_events(lab):
    case = make_case(
        lab.admin, "slow-board", "board", "slow smoke", board_labels=["sim"],
    )  # fmt: skip
    run_id = start(lab, case)
    wait_for_events(run_id, "test_start")
    victim = TestRun.objects.get(pk=run_id).worker
    pid = int(victim.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)  # the pool process streaming this run, without warning
    # The sweep (beat, every 10 s in production) notices the silent worker and resumes it.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        run = TestRun.objects.get(pk=run_id)
        if run.status == RunStatus.DONE or (run.worker and run.worker != victim):
            break
        services.runs_sweep()
        time.sleep(1)
    run = wait_for(run_id)
    assert run.outcome == RunOutcome.PASSED, run.status_message
    assert run.worker != victim or run.dispatch_count >= 2
    assert_gap_free(run)
    assert TestResult.objects.filter(run=run, outcome="passed").count() == 2
    assert_released(run)


def test_two_runs_wanting_one_board_run_one_after_the_other(lab):
    case = make_case(lab.admin, "board-smoke", "board", "slow", board_labels=["sim"])
    first, second = start(lab, case), start(lab, case)
    runs = [wait_for(first), wait_for(second)]
    assert [r.outcome for r in runs] == [RunOutcome.PASSED, RunOutcome.PASSED]
    a, b = sorted(runs, key=lambda r: r.started_at or r.queued_at)
    assert a.finished_at and b.started_at and b.started_at >= a.finished_at, (
        "the board was held by two runs at once"
    )


def test_runs_over_three_machines_never_share_a_slot(lab, sshd):
    machines = [lab.machine, lab_machine(sshd, "loop-b"), lab_machine(sshd, "loop-c")]
    case = make_case(lab.admin, "quick", "script", "quick.py", {"quick.py": "print('ok')\n"})
    client = api(lab.admin)
    ids = []
    for _ in range(20):
        response = client.post("/api/v1/runs/", {"case": "quick", "label": "e2e"}, format="json")
        assert response.status_code == 201, response.content
        ids.append(response.json()["id"])
    runs = [wait_for(run_id, timeout=300) for run_id in ids]
    assert {r.outcome for r in runs} == {RunOutcome.PASSED}
    assert {r.machine_id for r in runs} <= {m.pk for m in machines}
    by_venv: dict[int | None, list[TestRun]] = {}
    for run in runs:
        by_venv.setdefault(run.venv_id, []).append(run)
    assert None not in by_venv
    for venv_runs in by_venv.values():
        venv_runs.sort(key=lambda r: r.started_at or r.queued_at)
        for earlier, later in pairwise(venv_runs):
            assert earlier.finished_at and later.started_at
            assert later.started_at >= earlier.finished_at, "two runs held one venv at once"
    assert RunEvent.objects.filter(run__in=runs, type="run_end").count() == len(runs)
    assert case.runs.count() == 20


def test_ssh_restarted_mid_run_is_survived(lab, sshd):
    case = make_case(
        lab.admin, "slow-board", "board", "slow smoke gpio_toggle", board_labels=["sim"]
    )
    run_id = start(lab, case)
    wait_for_events(run_id, "test_start")
    # Every SSH session to the machine drops (sessions are sshd processes of their own), and
    # the server restarts: the detached runner goes on, the worker reconnects and reads on.
    subprocess.run(["pkill", "-f", f"sshd: {sshd.username}"], check=False)
    sshd.restart()
    run = wait_for(run_id)
    assert run.outcome == RunOutcome.PASSED, run.status_message
    assert TestResult.objects.filter(run=run, outcome="passed").count() == 3
    assert_gap_free(run)
    assert_released(run)


def test_pause_holds_the_run_and_resume_continues_it(lab):
    case = make_case(lab.admin, "slow-board", "board", "slow slow", board_labels=["sim"])
    run_id = start(lab, case)
    wait_for_events(run_id, "test_start")
    client = api(lab.admin)
    assert client.post(f"/api/v1/runs/{run_id}/pause/").status_code == 200
    deadline = time.monotonic() + 15
    while TestRun.objects.get(pk=run_id).paused_at is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert TestRun.objects.get(pk=run_id).paused_at is not None, "the worker did not pause it"
    time.sleep(1.5)  # events written just before the stop are still being stored
    held_at = TestRun.objects.get(pk=run_id).last_seq
    time.sleep(3)
    assert TestRun.objects.get(pk=run_id).last_seq == held_at  # stopped: no new events
    assert client.post(f"/api/v1/runs/{run_id}/resume/").status_code == 200
    run = wait_for(run_id)
    assert run.outcome == RunOutcome.PASSED, run.status_message
    assert run.paused_seconds >= 3
    assert_gap_free(run)
