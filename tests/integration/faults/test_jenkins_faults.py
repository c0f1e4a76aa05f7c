"""Jenkins slow, failing and gone, with a real Celery worker following the build.

Each build is started through the API, as users and pipelines start them, and linked to a test
run. The stand-in Jenkins (tests/jenkins_standin.py) runs on its clock in real time, and the
fault is injected while the worker's trigger task or poll chain is talking to it. Every test
asserts the build's final state and message, that the chain stopped (no poll scheduled, nothing
more asked of Jenkins), that whoever watches the run sees the build's end, and, when Jenkins
recovers, that the console was imported exactly once, byte for byte.

tests/integration/jenkins/test_builds.py drives the same faults through the services one call
at a time; here the worker's own retry and backoff schedule does it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from jenkins import services
from jenkins.models import TRIGGER_PARAMETER, JenkinsBuild
from tests.factories import (
    make_finished_run,
    make_jenkins_job,
    make_jenkins_server,
    make_machine,
    make_ready_venvs,
    make_user,
)
from tests.jenkins_standin import StandInJenkins, sample_test_report

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SCRIPT = [(0.0, "Started by user ci-bot"), (1.0, "flashing firmware"), (2.5, "running tests"),
          (4.0, "collecting results")]  # fmt: skip
CONSOLE = "".join(f"{line}\n" for _, line in SCRIPT)
# The server's read timeout (make_jenkins_server below): slower answers are timeouts.
READ_TIMEOUT = 2


@pytest.fixture
def jenkins(celery_worker: str) -> Iterator[StandInJenkins]:
    standin = StandInJenkins().start()
    """The stand-in, with a real worker (the faults suite's own) following its builds."""
    standin.clock.run()  # the worker polls in real time
    yield standin
    standin.stop()


@pytest.fixture
def admin() -> Any:
    return make_user("lab-admin", admin=True)


@pytest.fixture
def api(admin: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(admin)
    return client


@pytest.fixture
def run_id(admin: Any) -> int:
    """A test run the builds belong to (the firmware build a run tests)."""
    machine = make_machine("faults-jenkins-lab")
    make_ready_venvs(machine, 1)
    return int(make_finished_run(admin, machine).pk)


def start_build(api: APIClient, jenkins: StandInJenkins, run_id: int, **job: Any) -> int:
    options: dict[str, Any] = {"script": SCRIPT, "duration": 5.0, **job}
    jenkins.add_job("hw/flash", parameters={TRIGGER_PARAMETER: "", "BOARD": "stm32"}, **options)
    server = make_jenkins_server(
        url=jenkins.url, username=jenkins.user, api_token=jenkins.token,
        connect_timeout=2, read_timeout=READ_TIMEOUT,
    )  # fmt: skip
    job_row = make_jenkins_job(server, "hw/flash")
    response = api.post(
        "/api/v1/jenkins/builds/",
        {"job": job_row.pk, "parameters": {"BOARD": "nrf52"}, "run": run_id},
        format="json",
    )
    assert response.status_code == 202, response.content
    return int(response.json()["id"])


def wait_build(
    build_id: int, predicate: Callable[[JenkinsBuild], bool], what: str, timeout: float = 150
) -> JenkinsBuild:
    """Waits (bounded, so a broken chain fails instead of hanging) for the build row to match."""
    deadline = time.monotonic() + timeout
    while True:
        build = JenkinsBuild.objects.get(pk=build_id)
        if predicate(build):
            return build
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; build is {build.status}: "
                        f"{build.status_message!r}")  # fmt: skip
        time.sleep(0.2)


def assert_chain_stopped(build: JenkinsBuild, jenkins: StandInJenkins | None = None) -> None:
    """A finished build has no poll scheduled, is not picked up by the lost-chain sweep, and
    (if Jenkins is up) nothing more is asked of Jenkins about it."""
    assert build.is_done and build.next_poll_at is None
    lost = services.jenkins_builds_lost()
    assert build.pk not in lost["trigger"] + lost["poll"]
    if jenkins is not None:
        asked = len(jenkins.requests)
        time.sleep(3 * 1.0)  # longer than the fastest poll interval
        assert len(jenkins.requests) == asked


def assert_run_shows(api: APIClient, run_id: int, build: JenkinsBuild) -> None:
    """Whoever watches the run sees the build's end, with the same message."""
    listed = api.get(f"/api/v1/runs/{run_id}/jenkins-builds/")
    assert listed.status_code == 200, listed.content
    body = listed.json()
    rows = body["results"] if isinstance(body, dict) else body
    (row,) = [r for r in rows if r["id"] == build.pk]
    assert row["run"] == run_id
    assert (row["status"], row["result"], row["status_message"]) == (
        "done", build.result, build.status_message,
    )  # fmt: skip


def assert_console_exact(api: APIClient, build: JenkinsBuild, expected: str) -> None:
    """Imported once, byte for byte: no gap, no line twice, and the offset is the byte count."""
    assert build.console_text == expected
    assert build.console_offset == len(expected.encode())
    assert build.console_complete and build.console_dropped == 0
    body = api.get(f"/api/v1/jenkins/builds/{build.pk}/console/?offset=0").json()
    assert body["text"] == expected and body["complete"]


def test_slow_jenkins_times_out_is_reported_then_the_build_completes(api, jenkins, run_id):
    build_id = start_build(api, jenkins, run_id, duration=7.0, test_report=sample_test_report())
    wait_build(build_id, lambda b: "flashing firmware" in b.console_text, "the console to start")

    # Jenkins answers every request, but only after the client has given up waiting.
    jenkins.slow(READ_TIMEOUT + 2.0)
    slow = wait_build(build_id, lambda b: b.poll_failures >= 1, "a poll to time out", timeout=60)
    assert slow.status == "building"
    assert slow.status_message.startswith("Cannot follow the build right now: ")
    assert "did not answer in time" in slow.status_message
    assert "trying again in 5 s" in slow.status_message
    jenkins.heal()

    build = wait_build(build_id, lambda b: b.is_done, "the build to finish")
    assert (build.result, build.number, build.poll_failures) == ("SUCCESS", 1, 0)
    assert build.status_message == "Finished: SUCCESS. Tests: 2 passed, 1 failed, 1 skipped."
    assert build.test_report is not None and build.test_report["total_cases"] == 4
    assert_console_exact(api, build, CONSOLE + "Finished: SUCCESS\n")
    assert len(jenkins.requests_to("buildWithParameters")) == 1  # sent once
    assert_chain_stopped(build, jenkins)
    assert_run_shows(api, run_id, build)


def test_trigger_answered_too_late_is_found_not_sent_twice(api, jenkins, run_id):
    # The request reaches Jenkins, which queues the build but answers after the timeout.
    jenkins.slow(READ_TIMEOUT + 1.5, pattern="buildWithParameters")
    build_id = start_build(api, jenkins, run_id)
    waiting = wait_build(build_id, lambda b: b.trigger_attempts >= 1 and "again" in
                         b.status_message, "the first attempt to time out", timeout=60)  # fmt: skip
    assert "Could not send the build to Jenkins (attempt 1 of 5)" in waiting.status_message
    assert "did not answer in time" in waiting.status_message
    jenkins.heal()

    build = wait_build(build_id, lambda b: b.is_done, "the build to finish")
    assert (build.result, build.number, build.trigger_attempts) == ("SUCCESS", 1, 2)
    assert len(jenkins.requests_to("buildWithParameters")) == 1
    assert len(jenkins.builds) == 1  # one build in Jenkins, not two
    assert_console_exact(api, build, CONSOLE + "Finished: SUCCESS\n")
    assert_chain_stopped(build, jenkins)
    assert_run_shows(api, run_id, build)


@pytest.mark.parametrize("status", [500, 503])
def test_failing_jenkins_is_retried_then_recovers(api, jenkins, run_id, status):
    # Failing from the start: the trigger is retried with backoff, not given up.
    jenkins.fail(status=status)
    build_id = start_build(api, jenkins, run_id, result="UNSTABLE")
    first = wait_build(build_id, lambda b: b.trigger_attempts >= 1 and "again" in
                       b.status_message, "the first attempt to fail", timeout=60)  # fmt: skip
    assert f"failed with HTTP {status}" in first.status_message
    assert (
        "(attempt 1 of 5)" in first.status_message and "Trying again in 5 s" in first.status_message
    )
    assert first.status == "queued"
    jenkins.heal()

    wait_build(build_id, lambda b: "flashing firmware" in b.console_text, "the build to run")
    # Failing again while it builds: polls fail, back off, then pick up where they stopped.
    jenkins.fail(status=status)
    failing = wait_build(build_id, lambda b: b.poll_failures >= 2, "two polls to fail", 60)
    assert failing.status == "building"
    assert f"HTTP {status}" in failing.status_message
    assert "2 failed attempts in a row; trying again in 10 s" in failing.status_message
    jenkins.heal()

    build = wait_build(build_id, lambda b: b.is_done, "the build to finish")
    assert (build.result, build.number, build.poll_failures) == ("UNSTABLE", 1, 0)
    assert build.status_message == "Finished: UNSTABLE. No test report."
    assert_console_exact(api, build, CONSOLE + "Finished: UNSTABLE\n")
    assert len(jenkins.requests_to("buildWithParameters")) == 1
    assert_chain_stopped(build, jenkins)
    assert_run_shows(api, run_id, build)


def test_jenkins_gone_before_the_trigger_ends_not_built(api, jenkins, run_id):
    jenkins.stop()  # refused connections, and it never comes back
    build_id = start_build(api, jenkins, run_id)
    # Five attempts, 5 + 10 + 20 + 40 s apart.
    build = wait_build(build_id, lambda b: b.is_done, "the build to be given up", timeout=200)
    assert (build.status, build.result, build.trigger_attempts) == ("done", "NOT_BUILT", 5)
    assert build.status_message.startswith("Jenkins did not start the build after 5 attempts: ")
    assert "the server is down or unreachable" in build.status_message
    assert build.queue_id is None and build.number is None
    assert build.finished_at is not None
    assert_chain_stopped(build)
    assert_run_shows(api, run_id, build)


def test_jenkins_gone_while_building_is_given_up_with_the_last_state(api, jenkins, run_id):
    build_id = start_build(api, jenkins, run_id, duration=30.0)
    wait_build(build_id, lambda b: "flashing firmware" in b.console_text, "the console to start")
    jenkins.stop()
    gone = wait_build(build_id, lambda b: b.poll_failures >= 1, "a poll to fail", timeout=60)
    assert gone.status == "building" and gone.number == 1
    assert "the server is down or unreachable" in gone.status_message
    kept = gone.console_text
    assert kept.startswith("Started by user ci-bot\nflashing firmware\n")

    # Jenkins stays gone: the build is tracked until the server's limit, then given up. The
    # limit is hours; the build is made that old rather than waited for.
    JenkinsBuild.objects.filter(pk=build_id).update(
        created_at=timezone.now() - timedelta(hours=gone.job.server.give_up_after_hours, minutes=1)
    )
    build = wait_build(build_id, lambda b: b.is_done, "the build to be given up", timeout=90)
    assert (build.status, build.result) == ("done", "")
    limit = build.job.server.give_up_after_hours
    assert build.status_message.startswith(
        f"Stopped tracking this build: it did not finish within {limit} h of being triggered"
    )
    assert "Last known state: Cannot follow the build right now: " in build.status_message
    assert "down or unreachable" in build.status_message
    assert build.console_text == kept  # what was read is kept, nothing made up
    assert build.finished_at is not None
    assert_chain_stopped(build)
    assert_run_shows(api, run_id, build)
