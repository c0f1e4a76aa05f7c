"""The whole path with a real Celery worker process: API -> trigger task -> poll chain ->
result, while the API serves the console live; and the sweep reviving a lost build."""

from __future__ import annotations

import time

import pytest
from rest_framework.test import APIClient

from jenkins.models import TRIGGER_PARAMETER, JenkinsBuild
from jenkins.tasks import jenkins_builds_sweep_task
from tests.factories import make_jenkins_job, make_user
from tests.jenkins_standin import sample_test_report

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SCRIPT = [(0.0, "Started"), (1.0, "flashing"), (2.0, "testing"), (3.0, "collecting")]


def wait_for(predicate, timeout: float = 90.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_trigger_through_the_api_and_follow_it_live(celery_worker, standin, standin_server):
    standin.clock.run()  # the worker polls in real time
    standin.add_job(
        "hw/firmware/nightly",
        parameters={TRIGGER_PARAMETER: "", "BOARD": "stm32"},
        script=SCRIPT,
        duration=4.0,
        test_report=sample_test_report(failed=0),
    )
    job = make_jenkins_job(standin_server, "hw/firmware/nightly")
    client = APIClient()
    client.force_authenticate(make_user("alice"))

    response = client.post(
        "/api/v1/jenkins/builds/", {"job": job.pk, "parameters": {"BOARD": "nrf52"}}, format="json"
    )
    assert response.status_code == 202, response.content
    build_id = response.json()["id"]

    # Tail the console through the API while the build runs, as the UI does.
    offset, pieces, seen_building = 0, [], False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/jenkins/builds/{build_id}/console/?offset={offset}").json()
        assert body["offset"] == offset
        pieces.append(body["text"])
        offset = body["next_offset"]
        seen_building |= body["status"] == "building" and bool(body["text"])
        if body["complete"]:
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"build not finished: {JenkinsBuild.objects.get(pk=build_id).status_message}")

    build = JenkinsBuild.objects.get(pk=build_id)
    assert (build.status, build.result, build.number) == ("done", "SUCCESS", 1)
    assert seen_building  # text arrived while it was still building
    assert (
        "".join(pieces)
        == build.console_text
        == ("Started\nflashing\ntesting\ncollecting\nFinished: SUCCESS\n")
    )
    detail = client.get(f"/api/v1/jenkins/builds/{build_id}/").json()
    assert detail["tests"] == {"passed": 2, "failed": 0, "skipped": 1,
                               "duration": pytest.approx(1.61), "total_cases": 3}  # fmt: skip
    assert len(detail["test_report"]["cases"]) == 3
    (_, path, _) = standin.requests_to("buildWithParameters")[0]
    assert f"{TRIGGER_PARAMETER}={build.trigger_id}" in path and "BOARD=nrf52" in path


def test_the_sweep_revives_a_build_whose_chain_was_lost(celery_worker, standin, standin_server):
    standin.clock.run()
    standin.add_job("j", parameters={TRIGGER_PARAMETER: ""}, duration=1.0)
    job = make_jenkins_job(standin_server, "j")
    # A build recorded but never handed to a worker (the broker lost the message).
    from datetime import timedelta

    from django.utils import timezone

    build = JenkinsBuild.objects.create(
        job=job,
        trigger_id="lost-1",
        parameters={TRIGGER_PARAMETER: "lost-1"},
        next_poll_at=timezone.now() - timedelta(minutes=10),
    )
    jenkins_builds_sweep_task.delay()
    wait_for(
        lambda: JenkinsBuild.objects.get(pk=build.pk).is_done, what="the revived build to finish"
    )
    build.refresh_from_db()
    assert (build.result, build.number, build.trigger_attempts) == ("SUCCESS", 1, 1)
