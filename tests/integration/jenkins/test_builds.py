"""Trigger -> queue item -> build number -> live console -> result -> imported tests, against
the stand-in Jenkins, and every way it can go wrong ending in a clear state."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from jenkins import services
from jenkins.models import TRIGGER_PARAMETER, JenkinsBuild
from jenkins.services import builds as build_services
from tests.factories import make_jenkins_job, make_user
from tests.jenkins_standin import sample_test_report

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

SCRIPT = [(0.0, "Started by user ci-bot"), (0.5, "flashing firmware"), (1.5, "running tests")]


def add_job(standin, full_name, parameters=None, **options):
    """A job as it must be set up in Jenkins: it defines the trigger id parameter."""
    return standin.add_job(
        full_name, parameters={TRIGGER_PARAMETER: "", **(parameters or {})}, **options
    )


def trigger(job, user=None, **parameters) -> JenkinsBuild:
    return services.jenkins_build_create(
        job=job, actor=user, source="test", parameters=parameters or None
    )


@pytest.mark.parametrize("full_name", ["nightly", "hw/firmware/nightly"])
def test_full_flow_in_folders_with_and_without_crumbs(
    standin, standin_server, drive, crumbs, full_name
):
    standin.crumbs = crumbs
    add_job(standin,
        full_name, parameters={"BOARD": "stm32", "FLASH": "yes"}, script=SCRIPT, duration=3.0,
        test_report=sample_test_report(failed=1), result="UNSTABLE",
    )  # fmt: skip
    job = make_jenkins_job(standin_server, full_name, parameter_defaults={"FLASH": "no"})
    user = make_user("alice")
    build = trigger(job, user, BOARD="nrf52")
    assert (build.status, build.queue_id, build.number) == ("queued", None, None)

    outcome = services.jenkins_build_trigger(build=build)
    build = outcome.build
    assert build.queue_id is not None and build.status == "queued"
    (_, path, _) = standin.requests_to("buildWithParameters")[0]
    assert f"{TRIGGER_PARAMETER}={build.trigger_id}" in path
    assert "BOARD=nrf52" in path and "FLASH=no" in path

    # Queue: quiet period, then waiting for an executor, then a build number.
    services.jenkins_build_poll(build=build)
    build.refresh_from_db()
    assert build.status_message.startswith("In the Jenkins queue: In the quiet period.")
    standin.clock.advance(0.6)
    services.jenkins_build_poll(build=build)
    build.refresh_from_db()
    assert "Waiting for next available executor" in build.status_message
    standin.clock.advance(0.3)
    services.jenkins_build_poll(build=build)
    build.refresh_from_db()
    assert build.number is None and "waiting for Jenkins to name the build" in build.status_message
    standin.clock.advance(0.4)

    # Running: the console arrives piece by piece, from where the last read stopped.
    services.jenkins_build_poll(build=build)
    build.refresh_from_db()
    assert [build.status, build.number] == ["building", 1]
    assert build.url.endswith("/1/") and build.started_at is not None
    seen = [build.console_text]
    for _ in range(12):
        standin.clock.advance(0.25)
        services.jenkins_build_poll(build=build)
        build.refresh_from_db()
        seen.append(build.console_text)
        if build.is_done:
            break
    assert build.is_done
    assert len(set(seen)) >= 3  # it grew while the build ran
    expected = "".join(f"{line}\n" for _, line in SCRIPT) + "Finished: UNSTABLE\n"
    assert build.console_text == expected  # every byte once, in order
    assert build.console_offset == len(expected.encode()) and build.console_complete
    assert (build.status, build.result) == ("done", "UNSTABLE")
    assert build.finished_at == build.started_at + timedelta(seconds=3)
    report = build.test_report
    assert report is not None
    assert (report["passed"], report["failed"], report["skipped"]) == (2, 1, 1)
    failed = [c for c in report["cases"] if c["outcome"] == "failed"]
    assert failed[0]["error_details"] == "CRC mismatch at 0x0800_0400"
    assert {c["status"] for c in report["cases"]} == {"PASSED", "FIXED", "SKIPPED", "FAILED"}
    assert build.status_message == "Finished: UNSTABLE. Tests: 2 passed, 1 failed, 1 skipped."
    # Done: the chain ends.
    assert services.jenkins_build_poll(build=build).delay is None


@pytest.mark.parametrize("result", ["SUCCESS", "UNSTABLE", "FAILURE", "NOT_BUILT", "ABORTED"])
def test_every_result_is_recorded(standin, standin_server, drive, result):
    add_job(standin, "j", result=result, duration=1.0)
    build = drive(trigger(make_jenkins_job(standin_server, "j")))
    assert (build.status, build.result) == ("done", result)
    assert build.test_report is None
    assert build.status_message == f"Finished: {result}. No test report."
    assert build.console_text.endswith(f"Finished: {result}\n")


def test_result_set_while_still_building_is_not_the_end(standin, standin_server):
    add_job(standin, "j", duration=2.0, finishing=0.5)
    build = trigger(make_jenkins_job(standin_server, "j"))
    services.jenkins_build_trigger(build=build)
    standin.clock.advance(2.0)  # queued 0.8 s, then 1.2 s of build
    services.jenkins_build_poll(build=build)
    standin.clock.advance(0.5)  # 1.7 s: result known, still building
    services.jenkins_build_poll(build=build)
    build.refresh_from_db()
    assert (build.status, build.result) == ("building", "")
    assert build.status_message == "Building #1; result SUCCESS, finishing."
    standin.clock.advance(0.5)
    services.jenkins_build_poll(build=build)
    build.refresh_from_db()
    assert (build.status, build.result) == ("done", "SUCCESS")


def test_expired_queue_item_is_found_by_queue_id(standin, standin_server):
    add_job(standin, "j", duration=1.0)
    build = trigger(make_jenkins_job(standin_server, "j"))
    services.jenkins_build_trigger(build=build)
    build.refresh_from_db()
    # Our poll chain was lost for ten minutes: the queue item is gone from Jenkins.
    standin.clock.advance(600)
    services.jenkins_build_poll(build=build)
    build.refresh_from_db()
    assert (build.status, build.number, build.result) == ("done", 1, "SUCCESS")
    assert standin.requests_to(r"tree=builds(\[|%5B)number,url,queueId")


def test_expired_queue_item_without_a_build_ends_clearly(standin, standin_server):
    add_job(standin, "j", duration=1.0)
    build = trigger(make_jenkins_job(standin_server, "j"))
    services.jenkins_build_trigger(build=build)
    standin.clock.advance(600)
    standin.delete_build("j", 1)
    services.jenkins_build_poll(build=build)
    build.refresh_from_db()
    assert (build.status, build.result) == ("done", "")
    assert "no longer knows queue item" in build.status_message


def test_deleted_build_ends_clearly(standin, standin_server, drive):
    add_job(standin, "j", duration=30.0)
    build = trigger(make_jenkins_job(standin_server, "j"))
    services.jenkins_build_trigger(build=build)
    standin.clock.advance(2)
    services.jenkins_build_poll(build=build)
    standin.delete_build("j", 1)
    build = drive(build)
    assert (build.status, build.result) == ("done", "")
    assert build.status_message.startswith("Build #1 of j no longer exists in Jenkins")


def test_cancel_while_queued(standin, standin_server, drive):
    add_job(standin, "j", quiet_period=30)
    user = make_user("alice")
    build = trigger(make_jenkins_job(standin_server, "j"), user)
    services.jenkins_build_trigger(build=build)
    services.jenkins_build_cancel(build=build, actor=user, source="test")
    assert standin.requests_to(r"queue/cancelItem\?id=")
    build = drive(build)
    assert (build.status, build.result, build.number) == ("done", "ABORTED", None)
    assert build.status_message == "Cancelled in the queue (cancel requested by alice)."


def test_cancel_while_building_stops_it(standin, standin_server, drive):
    add_job(standin, "j", duration=600, script=[(0, "soaking")])
    user = make_user("alice")
    build = trigger(make_jenkins_job(standin_server, "j"), user)
    services.jenkins_build_trigger(build=build)
    standin.clock.advance(3)
    services.jenkins_build_poll(build=build)
    build.refresh_from_db()
    assert build.status == "building"
    services.jenkins_build_cancel(build=build, actor=user, source="test")
    assert standin.requests_to(r"/job/j/1/stop$")
    build = drive(build)
    assert (build.status, build.result) == ("done", "ABORTED")
    assert build.console_text.endswith("Aborted by user\nFinished: ABORTED\n")


def test_cancel_before_it_was_sent(standin_server):
    job = make_jenkins_job(standin_server, "j")
    build = trigger(job)
    build = services.jenkins_build_cancel(build=build, actor=None, source="test")
    assert (build.status, build.result) == ("done", "ABORTED")
    assert "before it reached Jenkins" in build.status_message
    # The trigger task, arriving late, sends nothing.
    assert services.jenkins_build_trigger(build=build).build.queue_id is None


def test_job_without_the_trigger_parameter_is_refused_with_the_fix(standin, standin_server):
    standin.add_job("bare")  # no parameters: Jenkins answers 500 to buildWithParameters
    outcome = services.jenkins_build_trigger(
        build=trigger(make_jenkins_job(standin_server, "bare"))
    )
    assert outcome.retry_in is None  # not an outage: no retry
    assert (outcome.build.status, outcome.build.result) == ("done", "NOT_BUILT")
    assert f"does not define the string parameter {TRIGGER_PARAMETER}" in (
        outcome.build.status_message
    )


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        (lambda s: setattr(s.jobs["j"], "disabled", True), "HTTP 409"),
        (lambda s: s.jobs.pop("j"), "has no job 'j'"),
        (lambda s: setattr(s, "token", "rotated"), "refused our credentials (HTTP 401)"),
    ],
    ids=["disabled", "job-missing", "bad-token"],
)
def test_trigger_refused_is_not_built_with_the_reason(standin, standin_server, setup, words):
    add_job(standin, "j")
    build = trigger(make_jenkins_job(standin_server, "j"))
    setup(standin)
    outcome = services.jenkins_build_trigger(build=build)
    assert outcome.retry_in is None
    build = outcome.build
    assert (build.status, build.result) == ("done", "NOT_BUILT")
    assert build.status_message.startswith("Jenkins did not start the build: ")
    assert words in build.status_message


def test_trigger_while_jenkins_is_down_retries_then_gives_up(standin, standin_server):
    add_job(standin, "j")
    build = trigger(make_jenkins_job(standin_server, "j"))
    standin.stop()
    delays = []
    for _ in range(build_services.TRIGGER_MAX_ATTEMPTS):
        outcome = services.jenkins_build_trigger(build=build)
        if outcome.retry_in is None:
            break
        delays.append(outcome.retry_in)
        assert "Trying again in" in outcome.build.status_message
    assert delays == [5.0, 10.0, 20.0, 40.0]  # backoff
    build.refresh_from_db()
    assert (build.status, build.result) == ("done", "NOT_BUILT")
    assert "after 5 attempts" in build.status_message
    assert "down or unreachable" in build.status_message


def test_trigger_that_timed_out_is_not_sent_twice(standin, standin_server, drive):
    # The POST reached Jenkins but the answer came too late: the retry finds our trigger id.
    add_job(standin, "j", duration=1.0)
    build = trigger(make_jenkins_job(standin_server, "j"))
    standin.slow(4.0, pattern="buildWithParameters")  # the read timeout is 3 s
    outcome = services.jenkins_build_trigger(build=build)
    assert outcome.retry_in is not None
    assert "did not answer in time" in outcome.build.status_message
    standin.heal()
    # The retry comes after a backoff; by then Jenkins has queued the first request.
    deadline = time.monotonic() + 10
    while not standin.queue and time.monotonic() < deadline:
        time.sleep(0.05)
    outcome = services.jenkins_build_trigger(build=build)
    assert outcome.build.queue_id is not None
    assert len(standin.requests_to("buildWithParameters")) == 1  # found, not sent again
    assert len(standin.queue) == 1
    build = drive(outcome.build)
    assert (build.status, build.result) == ("done", "SUCCESS")


def test_outage_while_building_is_reported_then_recovered(standin, standin_server, drive):
    add_job(standin, "j", duration=5.0, script=[(0, "a"), (4, "b")])
    build = trigger(make_jenkins_job(standin_server, "j"))
    services.jenkins_build_trigger(build=build)
    standin.clock.advance(1.5)
    services.jenkins_build_poll(build=build)
    standin.fail()
    first = services.jenkins_build_poll(build=build)
    second = services.jenkins_build_poll(build=build)
    assert (first.delay, second.delay) == (5.0, 10.0)
    build.refresh_from_db()
    assert build.status == "building"
    assert build.status_message.startswith("Cannot follow the build right now: ")
    assert (
        "HTTP 500" in build.status_message and "2 failed attempts in a row" in build.status_message
    )
    standin.heal()
    standin.stop()
    build.refresh_from_db()
    services.jenkins_build_poll(build=build)
    build.refresh_from_db()
    assert "down or unreachable" in build.status_message and build.poll_failures == 3
    standin.start()
    build = drive(build)
    assert (build.status, build.result, build.poll_failures) == ("done", "SUCCESS", 0)
    assert build.console_text == "a\nb\nFinished: SUCCESS\n"


def test_a_build_is_never_followed_forever(standin, standin_server):
    add_job(standin, "j", duration=10_000)
    build = trigger(make_jenkins_job(standin_server, "j", parameter_defaults={}))
    services.jenkins_build_trigger(build=build)
    standin.clock.advance(2)
    services.jenkins_build_poll(build=build)
    JenkinsBuild.objects.filter(pk=build.pk).update(created_at=timezone.now() - timedelta(hours=25))
    outcome = services.jenkins_build_poll(build=build)
    assert outcome.delay is None
    build.refresh_from_db()
    assert (build.status, build.result) == ("done", "")
    assert build.status_message.startswith(
        "Stopped tracking this build: it did not finish within 24 h"
    )
    assert "Last known state: Building #1." in build.status_message


def test_a_second_poll_chain_stops_instead_of_writing_twice(standin, standin_server):
    add_job(standin, "j", duration=5.0, script=[(0, "line")])
    build = trigger(make_jenkins_job(standin_server, "j"))
    services.jenkins_build_trigger(build=build)
    standin.clock.advance(2)
    stale = JenkinsBuild.objects.get(pk=build.pk)
    assert services.jenkins_build_poll(build=build).delay is not None
    # A chain that read the row before the other wrote it: its write is refused, it stops.
    fresh = JenkinsBuild.objects.get(pk=build.pk)
    assert fresh.version > stale.version
    assert not build_services._save(stale, console_text="twice")
    fresh.refresh_from_db()
    assert fresh.console_text == "line\n"


def test_long_console_keeps_the_tail_with_a_marker(standin, standin_server, drive, monkeypatch):
    monkeypatch.setattr(build_services, "CONSOLE_LIMIT", 200)
    lines = [(i * 0.01, f"line {i:04d} " + "x" * 20) for i in range(100)]
    add_job(standin, "j", duration=2.0, script=lines)
    build = drive(trigger(make_jenkins_job(standin_server, "j")))
    full = "".join(f"{line}\n" for _, line in lines) + "Finished: SUCCESS\n"
    assert len(build.console_text) <= 200
    assert full.endswith(build.console_text)
    assert build.console_dropped + len(build.console_text) == len(full)
    marker = build_services.console_marker(build)
    assert f"the first {build.console_dropped} characters" in marker
    assert f"{build.url}consoleText" in marker


def test_lost_chains_are_found(standin, standin_server):
    add_job(standin, "j")
    job = make_jenkins_job(standin_server, "j")
    unsent, sent, fresh, done = (trigger(job) for _ in range(4))
    services.jenkins_build_trigger(build=sent)
    services.jenkins_build_trigger(build=fresh)
    JenkinsBuild.objects.filter(pk=done.pk).update(status="done")
    old = timezone.now() - timedelta(minutes=10)
    JenkinsBuild.objects.filter(pk__in=[unsent.pk, sent.pk, done.pk]).update(next_poll_at=old)
    assert services.jenkins_builds_lost() == {"trigger": [unsent.pk], "poll": [sent.pk]}
