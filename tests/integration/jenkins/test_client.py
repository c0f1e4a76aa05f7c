"""The client against the stand-in Jenkins: wire format, crumbs, folders, and every error
python-jenkins can raise, each mapped to one of ours with a message and a retry decision."""

from __future__ import annotations

import base64

import pytest

from jenkins.client import (
    JenkinsAuthFailed,
    JenkinsClient,
    JenkinsJobNotFound,
    JenkinsProtocolError,
    JenkinsRejected,
    JenkinsTimeout,
    JenkinsUnavailable,
)
from tests.jenkins_standin import StandInJenkins, sample_test_report

pytestmark = pytest.mark.integration


def client_for(standin: StandInJenkins, **overrides) -> JenkinsClient:
    fields = {"url": standin.url, "username": standin.user, "token": standin.token,
              "read_timeout": 3.0}  # fmt: skip
    fields.update(overrides)
    return JenkinsClient(**fields)  # type: ignore[arg-type]


def test_version_and_credentials(standin):
    assert client_for(standin).version() == "2.462.3"
    (_, _, headers) = standin.requests_to(r"^/me/api/json")[0]
    user, _, token = base64.b64decode(headers["Authorization"][6:]).decode().partition(":")
    assert (user, token) == (standin.user, standin.token)


def test_whole_build_in_a_folder_with_and_without_crumbs(standin, crumbs):
    standin.crumbs = crumbs
    standin.add_job(
        "hw lab/firmware/nightly",
        parameters={"BOARD": "stm32"},
        script=[(0.0, "flashing"), (1.0, "testing")],
        duration=2.0,
        test_report=sample_test_report(),
    )
    client = client_for(standin)
    queue_id = client.build_job(
        "hw lab/firmware/nightly", {"BOARD": "nrf52", "TMS_TRIGGER_ID": "t1"}
    )

    (method, path, headers) = standin.requests_to("buildWithParameters")[0]
    assert method == "POST"
    assert path.startswith("/job/hw%20lab/job/firmware/job/nightly/buildWithParameters?")
    assert "BOARD=nrf52" in path and "TMS_TRIGGER_ID=t1" in path
    assert ("Jenkins-Crumb" in headers) is crumbs
    assert len(standin.requests_to("crumbIssuer")) == 1  # fetched once, then reused

    item = client.queue_item(queue_id)
    assert item is not None and item["_class"].endswith("$WaitingItem")
    assert item["why"].startswith("In the quiet period.")
    standin.clock.advance(0.6)
    item = client.queue_item(queue_id)
    assert item is not None and item["_class"].endswith("$BuildableItem")
    standin.clock.advance(0.3)
    item = client.queue_item(queue_id)
    assert item is not None and item["_class"].endswith("$LeftItem")
    assert item["executable"] is None  # left, but not yet named: normal for a moment
    standin.clock.advance(0.5)
    item = client.queue_item(queue_id)
    assert item is not None and item["executable"]["number"] == 1
    assert item["executable"]["url"] == f"{standin.url}job/hw%20lab/job/firmware/job/nightly/1/"

    first = client.console("hw lab/firmware/nightly", 1, 0)
    assert first.more is True
    standin.clock.advance(1.2)  # result set, still building: the end of a Jenkins build
    info = client.build_info("hw lab/firmware/nightly", 1)
    assert info is not None and info["building"] is True and info["result"] == "SUCCESS"
    standin.clock.advance(0.5)
    info = client.build_info("hw lab/firmware/nightly", 1)
    assert info is not None and info["building"] is False and info["duration"] == 2000
    rest = client.console("hw lab/firmware/nightly", 1, first.next_offset)
    assert first.text + rest.text == "flashing\ntesting\nFinished: SUCCESS\n"
    assert rest.more is False
    report = client.test_report("hw lab/firmware/nightly", 1)
    assert report is not None and report["failCount"] == 1

    # Five minutes after leaving, Jenkins forgets the queue item; the build keeps its queue id.
    standin.clock.advance(301)
    assert client.queue_item(queue_id) is None
    builds = client.builds("hw lab/firmware/nightly")
    assert [(b["number"], b["queueId"]) for b in builds] == [(1, queue_id)]


def test_crumb_is_required_when_the_issuer_is_on(standin):
    standin.add_job("plain")
    client = client_for(standin)
    client.build_job("plain", {})
    assert standin.requests_to(r"/job/plain/build$")[0][2]["Jenkins-Crumb"] == standin.crumb


def test_no_test_report_is_none(standin):
    standin.add_job("plain", duration=0.1)
    client = client_for(standin)
    client.build_job("plain", {})
    standin.clock.advance(5)
    assert client.test_report("plain", 1) is None


def test_stop_and_cancel(standin):
    standin.add_job("long", duration=60, parameters={"x": ""})
    client = client_for(standin)
    client.build_job("long", {"x": "0"})
    queued = client.build_job("long", {"x": "1"})  # a second one, still in the quiet period
    client.cancel_queue(queued)
    item = client.queue_item(queued)
    assert item is not None and item["cancelled"] is True and item["executable"] is None
    client.cancel_queue(queued)  # already gone: Jenkins says 404, which is ignored
    standin.clock.advance(2)
    client.stop_build("long", 1)
    standin.clock.advance(0.1)
    info = client.build_info("long", 1)
    assert info is not None and (info["building"], info["result"]) == (False, "ABORTED")
    assert client.console("long", 1, 0).text.endswith("Aborted by user\nFinished: ABORTED\n")


@pytest.mark.parametrize(
    ("setup", "call", "error", "retryable", "words"),
    [
        (lambda s: None, lambda c: c.version(), JenkinsAuthFailed, False, "HTTP 401"),
        (lambda s: s.add_job("p", parameters={"A": "1"}),
         lambda c: c.build_job("p", {}), JenkinsRejected, False, "HTTP 400"),
        (lambda s: s.add_job("off", disabled=True),
         lambda c: c.build_job("off", {}), JenkinsRejected, False, "disabled"),
        (lambda s: None, lambda c: c.build_job("a/missing", {}), JenkinsJobNotFound, False,
         "no job 'a/missing'"),
        (lambda s: s.fail(), lambda c: c.build_job("x", {}), JenkinsUnavailable, True,
         "HTTP 500"),
        (lambda s: s.fail("crumbIssuer"), lambda c: c.queue_item(1), JenkinsUnavailable, True,
         "HTTP 500"),
    ],
    ids=["bad-token", "params-missing", "disabled", "no-such-job", "error-500", "crumb-500"],
)  # fmt: skip
def test_errors_are_ours_with_a_clear_message(standin, setup, call, error, retryable, words):
    setup(standin)
    token = "wrong-token" if error is JenkinsAuthFailed else standin.token
    with pytest.raises(error) as caught:
        call(client_for(standin, token=token))
    assert caught.value.retryable is retryable
    assert words in caught.value.message
    assert standin.url in caught.value.message


def test_identical_parameters_already_queued_is_a_protocol_error(standin):
    # Jenkins answers 303 to the waiting item; python-jenkins loses the Location header.
    standin.add_job("p", parameters={"A": "1"})
    client = client_for(standin)
    client.build_job("p", {"A": "2"})
    with pytest.raises(JenkinsProtocolError) as caught:
        client.build_job("p", {"A": "2"})
    assert "no Location header" in caught.value.message


def test_a_server_that_is_down_is_unavailable_and_retryable(standin):
    client = client_for(standin)
    assert client.version()
    standin.stop()
    with pytest.raises(JenkinsUnavailable) as caught:
        client.version()
    assert caught.value.retryable and "down or unreachable" in caught.value.message
    standin.start()
    assert client.version() == "2.462.3"


def test_a_slow_server_times_out_within_the_configured_read_timeout(standin):
    standin.slow(2.0, pattern="api/json")
    with pytest.raises(JenkinsTimeout) as caught:
        client_for(standin, read_timeout=0.5).queue_item(1)
    assert caught.value.retryable and "did not answer in time" in caught.value.message


def test_a_missing_build_is_none_not_an_error(standin):
    standin.add_job("plain")
    client = client_for(standin)
    assert client.build_info("plain", 41) is None
    assert client.queue_item(9999) is None
