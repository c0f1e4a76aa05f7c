"""The reference reporter (remote_scripts/tms_reporter.py) against a real web server (uvicorn)
on the test database: a suite's plan and progress arrive, also across a server that is not up."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from remote_scripts.tms_reporter import Reporter, ReportError, Unreachable
from test_runner.ingest.services import ingest_token_create
from test_runner.models import RunSource, TestResult, TestRun
from tests.factories import make_machine
from tests.liveserver import Web

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MASTER = {
    "file_path": "/suite/scenarios",
    "file_name": "scenario_master.py",
    "script": "print('master')\n",
    "scenarios": [
        {"file_path": "/suite/scenarios", "file_name": "scenario_01_lamp.py", "script": "",
         "tests": [{"file_path": "/suite/lamp", "file_name": "01_01_test_lamp.py", "script": ""},
                   {"file_path": "/suite/lamp", "file_name": "01_02_test_lamp.py", "script": ""}]},
        {"file_path": "/suite/scenarios", "file_name": "scenario_02_door.py", "script": "",
         "tests": [{"file_path": "/suite/door", "file_name": "02_01_test_door.py", "script": ""}]},
    ],
}  # fmt: skip


@pytest.fixture
def web(test_database_url: str, tmp_path: Path) -> Iterator[Web]:
    server = Web(test_database_url, tmp_path / "uvicorn.log")
    yield server
    server.stop()


@pytest.fixture
def secret() -> str:
    machine = make_machine("bench-3")
    return ingest_token_create(machine=machine, name="suite")[1]


def test_a_reported_suite_becomes_a_finished_run(web, secret):
    web.start()
    reporter = Reporter(web.url, secret, "bench-3", timeout=10, retries=2, backoff=0.1)
    answer = reporter.dry_run(MASTER)
    assert answer["planned"] == 3 and answer["status"] == "running"
    for path, name, status in [("/suite/lamp", "01_01_test_lamp.py", "passed"),
                               ("/suite/lamp", "01_02_test_lamp.py", "warning"),
                               ("/suite/door", "02_01_test_door.py", "failed")]:  # fmt: skip
        assert reporter.test_start(path, name)["status"] == "running"
        last = reporter.test_stop(path, name, status)
    assert (last["run_status"], last["run_outcome"]) == ("done", "failed")
    run = TestRun.objects.get(pk=answer["run"])
    assert (run.source, run.passed, run.failed) == (RunSource.EXTERNAL, 2, 1)
    assert list(run.results.values_list("test_id", "outcome")) == [
        ("scenario_01_lamp.py::01_01_test_lamp.py", "passed"),
        ("scenario_01_lamp.py::01_02_test_lamp.py", "passed"),
        ("scenario_02_door.py::02_01_test_door.py", "failed"),
    ]
    # A refused message is not retried: it raises at once.
    began = time.monotonic()
    with pytest.raises(ReportError) as refused:
        Reporter(web.url, secret, "bench-3", retries=5, backoff=2).test_start("/x", "none.py")
    assert refused.value.status == 404 and time.monotonic() - began < 2
    with pytest.raises(ReportError) as bad_token:
        Reporter(web.url, "tmsi_wrong", "bench-3").dry_run(MASTER)
    assert bad_token.value.status == 401


def test_the_reporter_retries_until_the_server_is_up_and_spools_what_it_cannot_send(
    web, secret, tmp_path
):
    # The server is not up yet: the first attempts meet a refused connection.
    reporter = Reporter(web.url, secret, "bench-3", timeout=5, retries=40, backoff=0.25,
                        max_backoff=0.5)  # fmt: skip
    outcome: dict[str, object] = {}
    sender = threading.Thread(target=lambda: outcome.update(reporter.dry_run(MASTER)))
    sender.start()
    time.sleep(1.0)
    assert sender.is_alive() and not TestRun.objects.exists()
    web.start()
    sender.join(timeout=60)
    assert outcome.get("planned") == 3, outcome
    run = TestRun.objects.get()

    # Down again: without a spool the message is lost loudly; with one it waits on disk and
    # goes first, in order, once the server answers.
    web.stop()
    quick = Reporter(web.url, secret, "bench-3", retries=1, backoff=0.05)
    with pytest.raises(Unreachable):
        quick.test_start("/suite/lamp", "01_01_test_lamp.py")
    spooling = Reporter(web.url, secret, "bench-3", retries=1, backoff=0.05,
                        spool=str(tmp_path / "spool"))  # fmt: skip
    assert spooling.test_start("/suite/lamp", "01_01_test_lamp.py") == {"spooled": True}
    assert spooling.test_stop("/suite/lamp", "01_01_test_lamp.py", "passed") == {"spooled": True}
    assert len(list((tmp_path / "spool").glob("*.json"))) == 2
    web.start()
    answer = spooling.test_start("/suite/lamp", "01_02_test_lamp.py")
    assert answer["status"] == "running"
    assert not list((tmp_path / "spool").glob("*.json"))
    outcomes = dict(TestResult.objects.filter(run=run).values_list("name", "outcome"))
    assert outcomes == {"01_01_test_lamp.py": "passed", "01_02_test_lamp.py": "running",
                        "02_01_test_door.py": "planned"}  # fmt: skip
