"""The pipeline client run from a shell, as a pipeline runs it: the real file in a subprocess,
against a real web server (uvicorn) on the test database, a real Celery worker and the lab
(a machine over loopback sshd with a warm venv pool and a simulated board)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from jenkins import services, tms_client
from jenkins.models import RunCallback
from test_runner import services as run_services
from test_runner.models import RunOutcome, TestRun
from tests.conftest import REPO_ROOT
from tests.factories import make_api_token, make_user
from tests.integration.runs.conftest import wait_for
from tests.liveserver import Web
from tests.unit.jenkins.test_run_links import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CLIENT = str(Path(tms_client.__file__))

PASSING = textwrap.dedent(
    """
    def test_flash():
        print("flashing firmware 1.2")

    def test_boot():
        assert "ok" == "ok"
    """
)
FAILING = textwrap.dedent(
    """
    def test_good():
        assert True

    def test_bad_sensor():
        reading = 17
        assert reading == 42, "sensor reads 17, wanted 42"
    """
)
# Prints, then sleeps ``SLEEP`` tenths of a second (a run parameter; 600 by default).
SLEEPER = textwrap.dedent(
    """
    import os, sys, time
    print("sleeping", flush=True)
    for _ in range(int(os.environ.get("TMS_PARAM_SLEEP", "600"))):
        time.sleep(0.1)
    print("woke up", flush=True)
    sys.exit(0)
    """
)


@pytest.fixture
def web(test_database_url: str, tmp_path: Path) -> Iterator[Web]:
    server = Web(
        test_database_url, tmp_path / "uvicorn.log", RUN_CALLBACK_ALLOWED_HOSTS="127.0.0.1"
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pipeline_user():
    # The account a Jenkins pipeline runs as; an admin, so that every lab machine is its to use.
    return make_user("jenkins-pipeline", admin=True)


@pytest.fixture
def token(pipeline_user) -> str:
    _, secret = make_api_token(pipeline_user, "jenkins-lab")
    return secret


def client_env(secret: str) -> dict[str, str]:
    # As in the Jenkinsfile: the token comes from a credential in the environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "DATABASE"))}
    env.update({"TMS_TOKEN": secret, "PYTHONUNBUFFERED": "1", "JENKINS_URL": "http://ci/"})
    return env


def run_client(
    web: Web, secret: str, *args: str, timeout: float = 240
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, CLIENT, "run", "--url", web.url, "--poll-interval", "0.5", *args],
        env=client_env(secret), capture_output=True, text=True, timeout=timeout,
        cwd=REPO_ROOT,
    )  # fmt: skip


def make_case(lab, name: str, kind: str, entry_point: str, files: dict[str, str]):
    return run_services.case_create(
        actor=lab.admin, name=name, kind=kind, entry_point=entry_point, files=files
    )


class Follower:
    """A client started in the background whose output lines are collected as they come."""

    def __init__(self, web: Web, secret: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, CLIENT, "run", "--url", web.url, "--poll-interval", "0.3",
             "--wait", *args],
            env=client_env(secret), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=REPO_ROOT,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, fragment: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(fragment in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        pytest.fail(f"no line with {fragment!r}:\n{self.output}")

    def finish(self, timeout: float = 180) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def run_id(self) -> int:
        for line in self.lines:
            if line.startswith("tms: started run "):
                return int(line.split()[3])
        pytest.fail(f"no run id in:\n{self.output}")


def test_run_waits_writes_junit_and_log_and_exits_0_and_calls_back(
    lab, web, token, pipeline_user, tmp_path, settings
):
    make_case(lab, "fw-smoke", "pytest", "-q test_fw.py", {"test_fw.py": PASSING})
    receiver = Receiver()
    try:
        junit, log = tmp_path / "out" / "junit.xml", tmp_path / "run.log"
        result = run_client(
            web, token, "--case", "fw-smoke", "--machine", lab.machine.name,
            "--param", "FW=1.2", "--wait", "--junit", str(junit), "--log", str(log),
            "--callback", receiver.url,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert "tms: started run" in out and "queued" in out
        assert "tms: run " in out and ": done (passed)" in out
        assert "tests 2/2 (passed 2, failed 0, errors 0, skipped 0)" in out
        assert "----- test_fw.py::test_flash started" in out  # live log lines
        assert out.rstrip().endswith("passed; exit code 0")
        assert f"{receiver.url} will be told when the run finishes" in out

        root = ElementTree.fromstring(junit.read_bytes())  # noqa: S314  # our own XML
        cases = {(c.get("classname"), c.get("name")) for c in root.iter("testcase")}
        assert cases == {("test_fw", "test_flash"), ("test_fw", "test_boot")}
        assert not root.findall(".//failure") and not root.findall(".//error")
        assert "run ended: passed" in log.read_text()

        run = TestRun.objects.get(case__name="fw-smoke")
        assert run.outcome == RunOutcome.PASSED and run.parameters == {"FW": "1.2"}
        assert run.source == "jenkins" and run.requested_by == pipeline_user

        # The callback the client registered is sent by the sweep once the run is done.
        settings.RUN_CALLBACK_ALLOWED_HOSTS = ["127.0.0.1"]
        callback = RunCallback.objects.get(run=run)
        assert callback.base_url == web.url
        [claimed] = services.run_callbacks_claim_due()
        delivered = services.run_callback_deliver(callback_id=claimed)
        assert delivered is not None and delivered.state == "delivered"
        [(_, _, payload)] = receiver.received
        assert payload["run"]["id"] == run.pk and payload["run"]["outcome"] == "passed"
        assert payload["links"]["junit"] == f"{web.url}/api/v1/runs/{run.pk}/junit.xml"
    finally:
        receiver.close()


def test_failing_case_exits_1_with_the_failure_in_the_junit(lab, web, token, tmp_path):
    make_case(lab, "fw-fail", "pytest", "test_fail.py", {"test_fail.py": FAILING})
    junit = tmp_path / "junit.xml"
    result = run_client(
        web, token, "--case", "fw-fail", "--label", "e2e", "--wait", "--junit", str(junit)
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "tests 2/2 (passed 1, failed 1" in result.stdout
    root = ElementTree.fromstring(junit.read_bytes())  # noqa: S314
    [failure] = root.findall(".//testcase[@name='test_bad_sensor']/failure")
    assert "sensor reads 17, wanted 42" in (failure.text or "")


def test_unknown_case_exits_3_with_the_api_message(web, token):
    result = run_client(web, token, "--case", "no-such-case", "--machine", "lab-1")
    assert result.returncode == 3
    assert "refused (HTTP 400): Invalid input: case:" in result.stderr
    assert "no-such-case" in result.stderr
    assert not TestRun.objects.exists()


def test_bad_token_exits_3_with_the_401_message(web):
    result = run_client(web, "tms_not-a-real-token", "--case", "x", "--machine", "m")
    assert result.returncode == 3
    assert "refused (HTTP 401): Invalid API token." in result.stderr


def test_refused_callback_cancels_the_run_and_exits_3(lab, web, token):
    make_case(lab, "quick", "script", "quick.py", {"quick.py": "print('ok')\n"})
    result = run_client(
        web, token, "--case", "quick", "--machine", lab.machine.name, "--wait",
        "--callback", "http://169.254.169.254/latest/meta-data/",
    )  # fmt: skip
    assert result.returncode == 3
    assert "Callbacks to 169.254.169.254 are not allowed" in result.stderr
    run = wait_for(TestRun.objects.get(case__name="quick").pk, timeout=60)
    assert run.outcome == RunOutcome.CANCELLED


def test_sigterm_while_waiting_cancels_the_run_and_exits_2(lab, web, token):
    make_case(lab, "sleeper", "script", "sleeper.py", {"sleeper.py": SLEEPER})
    follower = Follower(web, token, "--case", "sleeper", "--machine", lab.machine.name)
    follower.wait_for_line("sleeping")  # the test is running on the machine
    run_id = follower.run_id()
    follower.proc.send_signal(signal.SIGTERM)  # what a Jenkins abort sends
    assert follower.finish() == 2, follower.output
    assert f"stopped by SIGTERM: run {run_id} cancelled." in follower.output
    run = wait_for(run_id, timeout=60)
    assert run.outcome == RunOutcome.CANCELLED, run.status_message


def test_the_server_going_away_mid_wait_is_survived(lab, web, token):
    make_case(lab, "nap", "script", "sleeper.py", {"sleeper.py": SLEEPER})
    follower = Follower(
        web, token, "--case", "nap", "--machine", lab.machine.name, "--param", "SLEEP=60"
    )
    follower.wait_for_line("sleeping")
    web.stop()
    follower.wait_for_line("retrying in", timeout=30)
    time.sleep(1.5)
    web.start()
    assert follower.finish() == 0, follower.output
    assert "woke up" in follower.output  # log lines from while the server was away
    run = TestRun.objects.get(pk=follower.run_id())
    assert run.outcome == RunOutcome.PASSED
