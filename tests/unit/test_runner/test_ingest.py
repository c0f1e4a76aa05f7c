"""Runs reported by machines that drive their own suites: dry run, test start, test stop."""

from __future__ import annotations

import copy
import datetime as dt
import threading
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from test_runner.ingest import services as ingest
from test_runner.models import (
    IngestToken,
    RunSource,
    RunStatus,
    RunTransition,
    TestCase,
    TestResult,
    TestRun,
)
from test_runner.services.scheduling import runs_sweep
from tests.factories import make_machine, make_user

pytestmark = pytest.mark.django_db

# The payloads of the original progress-tracking design, exactly.
DRY_RUN: dict[str, Any] = {
    "machine_name": "machine #1",
    "timestamp": "2018-12-30 13:01:57.461401",
    "master_scenario": {
        "file_path": "/virtual_testing_machine/src/test_cases/scenarios",
        "file_name": "scenario_master.py",
        "script": "import os\nfrom run import SCENARIOS_DIR",
        "scenarios": [
            {
                "file_path": "/virtual_testing_machine/src/test_cases/scenarios",
                "file_name": "scenario_01_feature_lamp.py",
                "script": "import os\nfrom run import TEST_CASES_DIR, run_test_case",
                "tests": [
                    {
                        "file_path": "/PycharmProjects/system",
                        "file_name": "01_01_test_lamp.py",
                        "script": "from time import sleep\n\n\nprint('Start 01_01_test_lamp.py')",
                    },
                    {
                        "file_path": "/virtual_testing_machine/src/test_cases/01_feature_lamp",
                        "file_name": "01_02_test_lamp.py",
                        "script": "from time import sleep\n\nsleep(2)\nRUN_DATA.last_status = "
                        "'warning'\n",
                    },
                ],
            },
            {
                "file_path": "/virtual_testing_machine/src/test_cases/scenarios",
                "file_name": "scenario_03_feature_trunk.py",
                "script": "import os\nfrom run import TEST_CASES_DIR, run_test_case\n",
                "tests": [
                    {
                        "file_path": "/virtual_testing_machine/src/test_cases/02_feature_door",
                        "file_name": "01_01_test_door.py",
                        "script": "",
                    },
                    {
                        "file_path": "/virtual_testing_machine/src/test_cases/02_feature_door",
                        "file_name": "01_02_test_door.py",
                        "script": "",
                    },
                ],
            },
        ],
    },
}
TEST_START = {
    "machine_name": "machine #1",
    "file_path": "/virtual_testing_machine/src/test_cases/01_feature_lamp",
    "file_name": "01_01_test_lamp.py",
    "timestamp_start": "2018-12-30 13:01:57.573828",
}
TEST_STOP = {
    "machine_name": "machine #1",
    "file_path": "/virtual_testing_machine/src/test_cases/01_feature_lamp",
    "file_name": "01_01_test_lamp.py",
    "status": "passed",
    "timestamp_stop": "2018-12-30 13:01:59.622177",
}


@pytest.fixture
def machine():
    return make_machine("machine-1")


@pytest.fixture
def secret(machine) -> str:
    return ingest.ingest_token_create(machine=machine, name="suite")[1]


def poster(secret: str, scheme: str = "Bearer") -> APIClient:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"{scheme} {secret}")
    return c


def post(secret: str, kind: str, body: dict, legacy: bool = False):
    path = f"/tm_api/{kind.replace('-', '_')}/" if legacy else f"/api/v1/ingest/{kind}/"
    return poster(secret).post(path, body, format="json")


def start(secret: str, name: str, at: str = "2018-12-30 13:02:00", **extra):
    body = {**TEST_START, "file_name": name, "timestamp_start": at, **extra}
    return post(secret, "test-start", body)


def stop(secret: str, name: str, status: str = "passed", at: str = "2018-12-30 13:03:00"):
    body = {**TEST_STOP, "file_name": name, "status": status, "timestamp_stop": at}
    return post(secret, "test-stop", body)


def tree(run_id: int) -> dict:
    c = APIClient()
    viewer = get_user_model().objects.filter(username="viewer").first()
    c.force_authenticate(viewer or make_user("viewer", admin=True))
    response = c.get(f"/api/v1/ingest/runs/{run_id}/tree/")
    assert response.status_code == 200, response.content
    return response.json()


def plan(*scenarios: tuple[str, list[str]]) -> dict:
    body = copy.deepcopy(DRY_RUN)
    body["master_scenario"]["scenarios"] = [
        {"file_path": "/s", "file_name": s, "script": "", "tests": [
            {"file_path": "/t", "file_name": t, "script": ""} for t in tests]}
        for s, tests in scenarios
    ]  # fmt: skip
    return body


@override_settings(TIME_ZONE="Europe/Warsaw")
def test_the_original_payloads_build_a_run_whose_tree_and_statuses_match(secret, machine):
    response = post(secret, "dry-run", DRY_RUN, legacy=True)
    assert response.status_code == 201, response.content
    run = TestRun.objects.get(pk=response.json()["run"])
    assert (run.source, run.status, run.machine, run.planned) == (
        RunSource.EXTERNAL, RunStatus.RUNNING, machine, 4)  # fmt: skip
    # A naive timestamp is in TIME_ZONE (Warsaw: UTC+1 in December).
    assert run.started_at == dt.datetime(2018, 12, 30, 12, 1, 57, 461401, tzinfo=dt.UTC)
    assert run.case.name == "external-machine-1-scenario_master"
    assert run.case.kind == TestCase.Kind.SCRIPT and not run.case.needs_board
    files = run.case_version.files
    assert run.case_version.entry_point == (
        "virtual_testing_machine/src/test_cases/scenarios/scenario_master.py")  # fmt: skip
    assert files["PycharmProjects/system/01_01_test_lamp.py"].startswith("from time import sleep")
    assert len(files) == 7
    body = tree(run.pk)
    assert [(s["file_name"], s["status"], [t["test_id"] for t in s["tests"]])
            for s in body["scenarios"]] == [
        ("scenario_01_feature_lamp.py", "planned", [
            "scenario_01_feature_lamp.py::01_01_test_lamp.py",
            "scenario_01_feature_lamp.py::01_02_test_lamp.py"]),
        ("scenario_03_feature_trunk.py", "planned", [
            "scenario_03_feature_trunk.py::01_01_test_door.py",
            "scenario_03_feature_trunk.py::01_02_test_door.py"]),
    ]  # fmt: skip

    assert post(secret, "test-start", TEST_START, legacy=True).status_code == 200
    assert tree(run.pk)["scenarios"][0]["status"] == "running"
    response = post(secret, "test-stop", TEST_STOP, legacy=True)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "passed" and response.json()["run_status"] == "running"
    first = TestResult.objects.get(run=run, order=0)
    assert first.duration == pytest.approx(2.048349)

    assert start(secret, "01_02_test_lamp.py").status_code == 200
    assert stop(secret, "01_02_test_lamp.py", "warning").status_code == 200
    assert start(secret, "01_01_test_door.py").status_code == 200
    assert stop(secret, "01_01_test_door.py", "failed").status_code == 200
    assert start(secret, "01_02_test_door.py").status_code == 200
    last = stop(secret, "01_02_test_door.py", "cancelled")
    assert last.json()["run_status"] == "done" and last.json()["run_outcome"] == "failed"

    body = tree(run.pk)
    assert [(s["status"], [t["status"] for t in s["tests"]]) for s in body["scenarios"]] == [
        ("passed", ["passed", "passed"]),
        ("failed", ["failed", "skipped"]),
    ]
    assert "warning" in body["scenarios"][0]["tests"][1]["message"]
    assert body["counts"] == {"planned": 4, "passed": 2, "failed": 1, "errors": 0, "skipped": 1}
    run.refresh_from_db()
    assert (run.status, run.outcome, run.passed, run.failed, run.skipped) == (
        "done", "failed", 2, 1, 1)  # fmt: skip
    # These runs read like any other in the runs API.
    c = APIClient()
    c.force_authenticate(make_user("boss", admin=True))
    detail = c.get(f"/api/v1/runs/{run.pk}/")
    assert detail.status_code == 200 and detail.json()["outcome"] == "failed"
    # ...and their messages are its event stream, gap-free, which the live page follows.
    events = c.get(f"/api/v1/runs/{run.pk}/events/?after=0").json()["events"]
    assert [e["seq"] for e in events] == list(range(1, 10))
    assert [e["type"] for e in events] == ["plan"] + ["test_start", "test_end"] * 4
    assert events[2]["data"] == {
        "test": "scenario_01_feature_lamp.py::01_01_test_lamp.py", "outcome": "passed",
        "duration_s": pytest.approx(2.048349), "message": "",
    }  # fmt: skip


def test_all_passing_run_passes_and_unknown_is_an_error(secret):
    run_id = post(secret, "dry-run", plan(("s.py", ["a.py", "b.py"]))).json()["run"]
    stop(secret, "a.py", "passed")
    assert TestRun.objects.get(pk=run_id).status == RunStatus.RUNNING
    stop(secret, "b.py", "unknown")  # stopped without a start: still recorded
    run = TestRun.objects.get(pk=run_id)
    assert (run.outcome, run.errors) == ("failed", 1)
    assert TestResult.objects.get(run=run, name="b.py").outcome == "error"

    run_id = post(secret, "dry-run", plan(("s.py", ["a.py"]))).json()["run"]
    stop(secret, "a.py", "warning")
    assert TestRun.objects.get(pk=run_id).outcome == "passed"


def _bad(field_path: list, value):
    body = copy.deepcopy(DRY_RUN)
    target: Any = body
    for key in field_path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[field_path[-1]]
    else:
        target[field_path[-1]] = value
    return body


MS = "master_scenario"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_bad(["machine_name"], KeyError), "machine_name"),
        (_bad(["timestamp"], KeyError), "timestamp"),
        (_bad([MS], KeyError), MS),
        (_bad([MS, "scenarios", 0, "tests", 0, "file_name"], KeyError), MS),
        (_bad(["machine_name"], 7), "machine_name"),
        (_bad([MS], "a string"), MS),
        (_bad([MS, "scenarios"], {"not": "a list"}), MS),
        (_bad([MS, "scenarios", 0, "tests"], [1, 2]), MS),
        (_bad([MS, "script"], ["x"]), MS),
        (_bad(["timestamp"], "yesterday"), "timestamp"),
        (_bad(["timestamp"], "2018-13-45 25:61:00"), "timestamp"),
        (_bad(["timestamp"], 1546174917), "timestamp"),
        (_bad([MS, "file_path"], "/../../etc"), "master_scenario.file_path"),
        (
            _bad([MS, "scenarios", 1, "tests", 0, "file_path"], "/a/../../../etc"),
            "master_scenario.scenarios[1].tests[0].file_path",
        ),
        (
            _bad([MS, "scenarios", 0, "file_path"], "/x/.ssh"),
            "master_scenario.scenarios[0].file_path",
        ),
        (_bad([MS, "file_name"], "../evil.py"), "master_scenario.file_name"),
        (_bad([MS, "file_name"], ".."), "master_scenario.file_name"),
        (_bad(["machine_name"], "m" * 100_000), "machine_name"),
        (_bad([MS, "file_name"], "f" * 100_000), MS),
        (_bad([MS, "script"], "x" * (1024 * 1024 + 1)), MS),
    ],
)
def test_malformed_and_hostile_dry_runs_are_400s_naming_the_field(secret, body, field):
    response = post(secret, "dry-run", body)
    assert response.status_code == 400, response.content
    payload = response.json()
    assert field in payload["message"] or payload["extra"].get("field") == field, payload
    assert not TestRun.objects.exists()


@pytest.mark.parametrize(
    ("kind", "change", "field"),
    [
        ("test-stop", {"status": "great"}, "status"),
        ("test-stop", {"status": None}, "status"),
        ("test-stop", {"timestamp_stop": "30/12/2018"}, "timestamp_stop"),
        ("test-start", {"timestamp_start": ""}, "timestamp_start"),
        ("test-start", {"file_name": {"a": 1}}, "file_name"),
        ("test-start", {"file_name": "x" * 5000}, "file_name"),
    ],
)
def test_bad_start_and_stop_are_400s_naming_the_field(secret, kind, change, field):
    post(secret, "dry-run", DRY_RUN)
    body = {**(TEST_STOP if kind == "test-stop" else TEST_START), **change}
    response = post(secret, kind, body)
    assert response.status_code == 400, response.content
    assert field in response.json()["message"]
    assert not TestResult.objects.exclude(outcome="planned").exists()


def test_non_json_and_list_bodies_are_400s(secret):
    c = poster(secret)
    response = c.post("/api/v1/ingest/dry-run/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert c.post("/api/v1/ingest/test-stop/", [1, 2], format="json").status_code == 400


def test_unknown_machine_is_a_404_with_a_clear_message(secret):
    response = post(secret, "dry-run", {**DRY_RUN, "machine_name": "machine #9"})
    assert response.status_code == 404
    assert response.json()["message"] == "No machine named 'machine #9'."


def test_start_without_a_run_or_for_an_unplanned_test_is_a_404(secret):
    response = post(secret, "test-start", TEST_START)
    assert response.status_code == 404 and "send a dry run first" in response.json()["message"]
    post(secret, "dry-run", DRY_RUN)
    response = start(secret, "99_not_in_plan.py")
    assert response.status_code == 404 and "99_not_in_plan.py" in response.json()["message"]


def test_tokens_no_invalid_revoked_and_another_machines(secret, machine):
    assert APIClient().post("/api/v1/ingest/dry-run/", DRY_RUN, format="json").status_code == 401
    assert APIClient().post("/tm_api/test_stop/", TEST_STOP, format="json").status_code == 401
    assert post("tmsi_wrong", "dry-run", DRY_RUN).status_code == 401
    assert poster(secret, "Token").post(
        "/api/v1/ingest/dry-run/", DRY_RUN, format="json").status_code == 201  # fmt: skip
    # A signed-in user is no machine: no writes without an ingest token.
    user_client = APIClient()
    user_client.force_authenticate(make_user("boss", admin=True))
    response = user_client.post("/api/v1/ingest/dry-run/", DRY_RUN, format="json")
    assert response.status_code == 403 and "ingest token is required" in response.json()["message"]
    session = APIClient()
    session.login(username="boss", password="pw-123456789")
    assert session.post("/api/v1/ingest/dry-run/", DRY_RUN, format="json").status_code == 401

    other = make_machine("lab-2")
    _, other_secret = ingest.ingest_token_create(machine=other, name="theirs")
    response = post(other_secret, "test-start", TEST_START)
    assert response.status_code == 403
    assert "belongs to machine lab-2, not machine-1" in response.json()["message"]
    assert not TestResult.objects.filter(outcome="running").exists()

    ingest.ingest_token_revoke(token=IngestToken.objects.get(machine=machine))
    response = post(secret, "test-start", TEST_START)
    assert response.status_code == 401 and "revoked" in response.json()["message"]
    token = IngestToken.objects.get(machine=machine)
    assert token.key_hash == ingest.token_hash(secret) and secret not in token.key_hash
    assert token.last_used_at is not None


def test_the_same_file_twice_is_matched_in_order(secret):
    body = plan(("s1.py", ["t.py", "u.py"]), ("s2.py", ["t.py"]))
    run_id = post(secret, "dry-run", body).json()["run"]
    ids = list(TestResult.objects.filter(run_id=run_id).values_list("test_id", flat=True))
    assert ids == ["s1.py::t.py", "s1.py::u.py", "s2.py::t.py"]
    body = plan(("s.py", ["t.py", "t.py"]))
    run_id = post(secret, "dry-run", body).json()["run"]
    results = TestResult.objects.filter(run_id=run_id)
    assert list(results.values_list("test_id", flat=True)) == ["s.py::t.py", "s.py::t.py#2"]

    start(secret, "t.py", "2018-12-30 13:00:00")
    stop(secret, "t.py", "failed", "2018-12-30 13:00:01")
    start(secret, "t.py", "2018-12-30 13:00:02")
    assert list(results.values_list("outcome", flat=True)) == ["failed", "running"]
    stop(secret, "t.py", "passed", "2018-12-30 13:00:03")
    assert list(results.values_list("outcome", flat=True)) == ["failed", "passed"]
    assert TestRun.objects.get(pk=run_id).outcome == "failed"


def test_replays_are_idempotent(secret):
    run_id = post(secret, "dry-run", plan(("s.py", ["t.py", "t.py", "v.py"]))).json()["run"]
    assert start(secret, "t.py", "2018-12-30 13:00:00").status_code == 200
    assert start(secret, "t.py", "2018-12-30 13:00:00").status_code == 200  # replayed start
    results = TestResult.objects.filter(run_id=run_id)
    assert list(results.values_list("outcome", flat=True)) == ["running", "planned", "planned"]
    first = stop(secret, "t.py", "passed", "2018-12-30 13:00:05")
    again = stop(secret, "t.py", "passed", "2018-12-30 13:00:05")  # replayed stop
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert list(results.values_list("outcome", flat=True)) == ["passed", "planned", "planned"]
    run = TestRun.objects.get(pk=run_id)
    assert (run.passed, run.status) == (1, RunStatus.RUNNING)
    stop(secret, "t.py", "passed", "2018-12-30 13:00:07")
    stop(secret, "v.py", "passed", "2018-12-30 13:00:09")
    transitions = RunTransition.objects.filter(run_id=run_id, to_status="done").count()
    # The last stop again, after the run ended: 200, nothing changes.
    replay = stop(secret, "v.py", "passed", "2018-12-30 13:00:09")
    assert replay.status_code == 200 and replay.json()["run_status"] == "done"
    assert RunTransition.objects.filter(run_id=run_id, to_status="done").count() == transitions == 1
    assert TestRun.objects.get(pk=run_id).passed == 3


def test_a_new_dry_run_closes_the_previous_unfinished_one(secret):
    first = post(secret, "dry-run", DRY_RUN).json()["run"]
    start(secret, "01_01_test_lamp.py")
    second = post(secret, "dry-run", DRY_RUN).json()["run"]
    old = TestRun.objects.get(pk=first)
    assert (old.status, old.outcome) == ("done", "error")
    assert old.status_message == "Closed: a new dry run started on machine-1."
    assert set(old.results.values_list("outcome", flat=True)) == {"error", "skipped"}
    assert TestRun.objects.get(pk=second).status == RunStatus.RUNNING
    # The same suite keeps one case; an unchanged plan keeps its version.
    assert TestCase.objects.filter(name__startswith="external-").count() == 1
    assert old.case_version_id == TestRun.objects.get(pk=second).case_version_id
    start(secret, "01_01_test_lamp.py")
    assert TestResult.objects.get(run_id=second, order=0).outcome == "running"


def test_quiet_runs_time_out_and_the_sweep_leaves_reported_runs_alone(
    secret, django_capture_on_commit_callbacks
):
    run_id = post(secret, "dry-run", DRY_RUN).json()["run"]
    start(secret, "01_01_test_lamp.py")
    TestRun.objects.filter(pk=run_id).update(heartbeat_at=timezone.now() - dt.timedelta(hours=1))
    # The sweep resumes runs whose worker went quiet: a reported run has none.
    with django_capture_on_commit_callbacks(execute=False):
        assert runs_sweep() == {"resumed": 0, "resent": 0, "failed": 0}
    with override_settings(EXTERNAL_RUN_QUIET_MINUTES=90):
        assert ingest.external_runs_timeout() == 0
    assert ingest.external_runs_timeout() == 1
    run = TestRun.objects.get(pk=run_id)
    assert (run.status, run.outcome) == ("done", "timed_out")
    assert "reported nothing for 30 minutes" in run.status_message
    assert stop(secret, "01_01_test_lamp.py").status_code == 404


def test_create_ingest_token_command_prints_a_working_secret(machine):
    out, err = StringIO(), StringIO()
    call_command("create_ingest_token", "machine-1", "nightly", stdout=out, stderr=err)
    secret = out.getvalue().strip()
    assert secret.startswith("tmsi_") and "not shown again" in err.getvalue()
    assert post(secret, "dry-run", DRY_RUN).status_code == 201
    with pytest.raises(Exception, match="No machine named 'nope'"):
        call_command("create_ingest_token", "nope", "x", stdout=out, stderr=err)


def test_tree_is_for_signed_in_users_and_reported_runs_only(secret):
    run_id = post(secret, "dry-run", DRY_RUN).json()["run"]
    assert APIClient().get(f"/api/v1/ingest/runs/{run_id}/tree/").status_code in (401, 403)
    assert poster(secret).get(f"/api/v1/ingest/runs/{run_id}/tree/").status_code in (401, 403)
    assert tree(run_id)["run"] == run_id


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_starts_and_stops_keep_the_roll_up_exact(secret):
    names = [f"{i:02d}_test.py" for i in range(10)]
    run_id = post(secret, "dry-run", plan(("a.py", names[:5]), ("b.py", names[5:]))).json()["run"]
    barrier = threading.Barrier(10)
    codes: list[int] = []

    def report(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            status = "failed" if i % 3 == 0 else "passed"
            codes.append(start(secret, names[i], f"2018-12-30 13:00:{i:02d}").status_code)
            codes.append(stop(secret, names[i], status, f"2018-12-30 13:01:{i:02d}").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=report, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert codes == [200] * 20
    run = TestRun.objects.get(pk=run_id)
    assert (run.status, run.outcome, run.passed, run.failed) == ("done", "failed", 6, 4)
    assert RunTransition.objects.filter(run_id=run_id, to_status="done").count() == 1
    body = tree(run_id)
    assert [s["status"] for s in body["scenarios"]] == ["failed", "failed"]
