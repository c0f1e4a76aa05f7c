"""Runs without a worker: validation, permissions, events -> results, exports, scheduling."""

from __future__ import annotations

from datetime import timedelta
from xml.etree import ElementTree

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from machines.models import Machine
from test_runner import services
from test_runner.models import RunEvent, RunStatus, RunTransition, TestResult, TestRun
from test_runner.services.scheduling import runs_dispatch_waiting
from tests.factories import make_board, make_machine, make_ready_venvs, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    admin = make_user("boss", admin=True)
    alice = make_user("alice")
    bob = make_user("bob")
    machine = make_machine("lab-1", users=[alice], labels=["rack"], max_concurrent_runs=2)
    make_ready_venvs(machine, 2)
    make_board(machine, "b1", labels=["stm32"])
    case = services.case_create(
        actor=alice, name="smoke", kind="script", entry_point="main.py",
        files={"main.py": "print('hi')\n"},
    )  # fmt: skip
    board_case = services.case_create(
        actor=alice, name="on-board", kind="board", entry_point="smoke", board_labels=["stm32"]
    )
    return {"admin": admin, "alice": alice, "bob": bob, "machine": machine, "case": case,
            "board_case": board_case}  # fmt: skip


def client(user) -> APIClient:
    c = APIClient()
    if user is not None:
        c.force_authenticate(user)
    return c


def create(world, user="alice", **body):
    payload = {"case": "smoke", "machine": "lab-1", **body}
    return client(world[user]).post("/api/v1/runs/", payload, format="json")


def test_create_queues_and_dispatches_on_commit(world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = create(world)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["outcome"] == "" and body["case_version"] == 1
    assert body["requested_by"] == "alice" and body["timeout"] == 1800
    assert len(callbacks) == 1  # the task is sent only once the run row is committed
    assert RunTransition.objects.filter(run_id=body["id"]).count() == 1


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"case": "nope"}, "case", "Invalid input"),
        ({"machine": None, "label": ""}, "machine", "either a machine or a machine label"),
        ({"label": "rack"}, "machine", "either a machine or a machine label"),
        ({"machine": None, "label": "no-such-label"}, "label", "There is no machine labelled"),
        ({"parameters": {"bad key": 1}}, "parameters", "Parameter name"),
        ({"parameters": {"k": {"nested": 1}}}, "parameters", "string or number"),
        ({"timeout": 1}, "timeout", "Invalid input"),
        ({"priority": 50}, "priority", "Only admins may raise"),
        ({"case": "on-board", "board": 999999}, "board", "Invalid input"),
    ],
)
def test_bad_run_input_is_a_400_naming_the_field(world, body, field, message):
    response = create(world, **body)
    assert response.status_code == 400, response.content
    payload = response.json()
    assert message in payload["message"]
    fields = set(payload["extra"].get("fields", {})) | {payload["extra"].get("field")}
    assert field in fields
    assert not TestRun.objects.exists()


def test_a_machine_not_assigned_to_you_is_not_found(world):
    response = create(world, user="bob")
    assert response.status_code == 404
    assert response.json()["message"] == "No such machine."


def test_a_board_case_needs_a_machine_with_such_a_board(world):
    other = make_machine("lab-2", users=[world["alice"]])
    response = create(world, case="on-board", machine=other.name)
    assert response.status_code == 400
    assert "needs a board" in response.json()["message"]


RUN_MATRIX = [
    ("get", "/api/v1/runs/{run}/", (403, 404, 200, 200)),
    ("get", "/api/v1/runs/{run}/events/", (403, 404, 200, 200)),
    ("get", "/api/v1/runs/{run}/log", (403, 404, 200, 200)),
    ("get", "/api/v1/runs/{run}/results/", (403, 404, 200, 200)),
    ("get", "/api/v1/runs/{run}/junit.xml", (403, 404, 200, 200)),
    ("get", "/api/v1/runs/{run}/artifacts/", (403, 404, 200, 200)),
    ("post", "/api/v1/runs/{run}/pause/", (403, 404, 409, 409)),
    ("post", "/api/v1/runs/{run}/resume/", (403, 404, 409, 409)),
    ("post", "/api/v1/runs/{run}/cancel/", (403, 404, 200, 200)),
]


@pytest.mark.parametrize(("method", "url", "expected"), RUN_MATRIX)
@pytest.mark.parametrize("who", [0, 1, 2, 3], ids=["anonymous", "other", "owner", "admin"])
def test_run_permission_matrix(world, method, url, expected, who):
    run = services.run_create(actor=world["alice"], case=world["case"], machine=world["machine"])
    user = [None, world["bob"], world["alice"], world["admin"]][who]
    response = getattr(client(user), method)(url.format(run=run.pk))
    assert response.status_code == expected[who], response.content


def test_history_is_your_own_and_admins_see_all(world):
    services.run_create(actor=world["alice"], case=world["case"], machine=world["machine"])
    services.run_create(actor=world["admin"], case=world["case"], machine=world["machine"])
    assert client(world["alice"]).get("/api/v1/runs/").json()["count"] == 1
    assert client(world["bob"]).get("/api/v1/runs/").json()["count"] == 0
    assert client(world["admin"]).get("/api/v1/runs/").json()["count"] == 2
    assert client(world["admin"]).get("/api/v1/runs/?user=alice").json()["count"] == 1
    assert client(world["admin"]).get("/api/v1/runs/?status=queued").json()["count"] == 2
    assert client(world["admin"]).get("/api/v1/runs/?outcome=passed").json()["count"] == 0


def test_cancelling_a_queued_run_ends_it_and_a_second_cancel_conflicts(world):
    run = services.run_create(actor=world["alice"], case=world["case"], machine=world["machine"])
    response = client(world["alice"]).post(f"/api/v1/runs/{run.pk}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "done" and response.json()["outcome"] == "cancelled"
    again = client(world["alice"]).post(f"/api/v1/runs/{run.pk}/cancel/")
    assert again.status_code == 409
    assert again.json()["message"] == f"Run {run.pk} has already finished."


def test_retry_makes_a_linked_run_of_the_same_version(world):
    run = services.run_create(actor=world["alice"], case=world["case"], machine=world["machine"])
    services.run_cancel(run=run, actor=world["alice"])
    services.case_update(case=world["case"], actor=world["alice"], entry_point="main.py -v")
    response = client(world["alice"]).post(f"/api/v1/runs/{run.pk}/retry/")
    assert response.status_code == 201, response.content
    retry = TestRun.objects.get(pk=response.json()["id"])
    assert retry.retry_of == run and retry.case_version == run.case_version
    assert retry.case_version.number == 1 and world["case"].versions.count() == 2


def test_every_edit_of_a_case_is_a_version_and_runs_keep_theirs(world):
    alice = world["alice"]
    response = client(alice).patch(
        f"/api/v1/test-cases/{world['case'].pk}/",
        {"files": {"main.py": "print('v2')\n"}, "change_note": "louder"},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["current_version"]["number"] == 2
    versions = client(alice).get(f"/api/v1/test-cases/{world['case'].pk}/versions/").json()
    assert [v["number"] for v in versions["results"]] == [2, 1]
    assert (
        client(world["bob"])
        .patch(f"/api/v1/test-cases/{world['case'].pk}/", {"description": "x"}, format="json")
        .status_code
        == 403
    )


@pytest.mark.parametrize(
    "files", [{"../escape.py": ""}, {"/etc/passwd": ""}, {"C:/x.py": ""}, {".ssh/keys": ""}]
)
def test_case_files_stay_inside_the_workspace(world, files):
    response = client(world["alice"]).post(
        "/api/v1/test-cases/",
        {"name": "evil", "kind": "script", "entry_point": "x.py", "files": {"x.py": "", **files}},
        format="json",
    )
    assert response.status_code == 400
    assert "inside the workspace" in response.json()["message"]


def _events(*types_and_data):
    now = timezone.now().isoformat()
    return [
        {"seq": i, "ts": now, "type": kind, **data}
        for i, (kind, data) in enumerate(types_and_data, start=1)
    ]


def test_events_become_results_and_storing_twice_changes_nothing(world):
    run = services.run_create(actor=world["alice"], case=world["case"], machine=world["machine"])
    events = _events(
        ("run_start", {"mode": "pytest"}),
        ("plan", {"tests": [{"id": "t.py::a", "name": "a", "file": "t.py"},
                            {"id": "t.py::b", "name": "b", "file": "t.py"}]}),
        ("test_start", {"test": "t.py::a"}),
        ("log", {"source": "test", "level": "INFO", "message": "hello", "test": "t.py::a"}),
        ("test_end", {"test": "t.py::a", "outcome": "passed", "duration_s": 0.5}),
        ("test_start", {"test": "t.py::b"}),
        ("test_end", {"test": "t.py::b", "outcome": "failed", "duration_s": 0.25,
                      "message": "assert 1 == 2"}),
        ("run_end", {"exit_code": 1, "reason": "failed"}),
    )  # fmt: skip
    assert services.events_store(run=run, events=events, events_offset=999) == 8
    assert services.events_store(run=run, events=events) == 0  # a resumed worker re-reads
    run.refresh_from_db()
    assert RunEvent.objects.filter(run=run).count() == 8
    assert (run.planned, run.passed, run.failed, run.last_seq, run.events_offset) == (
        2, 1, 1, 8, 999,
    )  # fmt: skip
    junit = ElementTree.fromstring(services.junit_xml(run))  # noqa: S314  # our own XML
    suite = junit.find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    failure = junit.find(".//testcase[@name='b']/failure")
    assert failure is not None and failure.text == "assert 1 == 2"
    log = "\n".join(services.log_lines(run))
    assert "hello" in log and "t.py::b FAILED in 0.250s" in log


def test_the_log_is_capped_with_a_marker_and_seq_stays_gap_free(world, settings):
    settings.RUN_LOG_MAX_BYTES = 100
    run = services.run_create(actor=world["alice"], case=world["case"], machine=world["machine"])
    events = _events(*[("log", {"message": "x" * 40, "level": "INFO"}) for _ in range(6)])
    services.events_store(run=run, events=events)
    run.refresh_from_db()
    stored = list(RunEvent.objects.filter(run=run).order_by("seq"))
    assert [e.seq for e in stored] == [1, 2, 3, 4, 5, 6]
    assert run.log_truncated and run.log_bytes <= 100
    assert "[log truncated" in stored[2].data["message"]
    assert stored[3].data == {"dropped": True}


def test_unfinished_tests_are_closed_when_the_run_ends(world):
    run = services.run_create(actor=world["alice"], case=world["case"], machine=world["machine"])
    services.events_store(
        run=run,
        events=_events(
            ("plan", {"tests": [{"id": "a"}, {"id": "b"}]}), ("test_start", {"test": "a"})
        ),
    )
    services.run_finish(run_id=run.pk, outcome="cancelled", message="stop", by="test")
    assert dict(TestResult.objects.filter(run=run).values_list("test_id", "outcome")) == {
        "a": "error", "b": "skipped",
    }  # fmt: skip


def test_waiting_runs_start_by_priority_then_age(world, django_capture_on_commit_callbacks):
    machine = world["machine"]
    admin = world["admin"]
    low = services.run_create(actor=admin, case=world["case"], machine=machine, priority=-5)
    old = services.run_create(actor=admin, case=world["case"], machine=machine)
    new = services.run_create(actor=admin, case=world["case"], machine=machine)
    urgent = services.run_create(actor=admin, case=world["case"], machine=machine, priority=10)
    TestRun.objects.filter(pk=new.pk).update(queued_at=timezone.now() + timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=False):
        chosen = runs_dispatch_waiting(machine_id=machine.pk)
    assert chosen == [urgent.pk, old.pk]  # two READY slots: the two best runs go
    assert low.pk not in chosen


def test_new_runs_are_sent_only_while_their_machine_has_room(
    world, django_capture_on_commit_callbacks, monkeypatch
):
    from test_runner.tasks import run_execute_task

    machine, admin = world["machine"], world["admin"]
    sent: list[int] = []
    # What is published, not the broker, is under test here.
    monkeypatch.setattr(run_execute_task, "apply_async", lambda args, **_kw: sent.append(args[0]))
    with django_capture_on_commit_callbacks(execute=True):
        runs = [
            services.run_create(actor=admin, case=world["case"], machine=machine) for _ in range(3)
        ]
    # Two READY slots: the first two runs go, the third waits unsent, and says why.
    assert sent == [runs[0].pk, runs[1].pk]
    third = TestRun.objects.get(pk=runs[2].pk)
    assert third.dispatched_at is None
    assert third.status_message == "Waiting for a free slot on machine lab-1."
    # A slot-freed wake-up does not send again what is in flight.
    with django_capture_on_commit_callbacks(execute=True):
        assert runs_dispatch_waiting(machine_id=machine.pk) == []
    # A worker that found no slot gives the message back (dispatched_at cleared): the next
    # wake-up sends that run again.
    TestRun.objects.filter(pk=runs[1].pk).update(dispatched_at=None)
    with django_capture_on_commit_callbacks(execute=True):
        assert runs_dispatch_waiting(machine_id=machine.pk) == [runs[1].pk]
    assert sent == [runs[0].pk, runs[1].pk, runs[1].pk]


def test_sweep_resumes_runs_whose_worker_went_quiet(world, django_capture_on_commit_callbacks):
    run = services.run_create(actor=world["alice"], case=world["case"], machine=world["machine"])
    TestRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, worker="gone:1",
        heartbeat_at=timezone.now() - timedelta(minutes=5),
        dispatched_at=timezone.now() - timedelta(minutes=5),
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = services.runs_sweep()
    assert result["resumed"] == 1 and len(callbacks) == 1
    TestRun.objects.filter(pk=run.pk).update(dispatch_count=99, dispatched_at=None)
    with django_capture_on_commit_callbacks(execute=False):
        result = services.runs_sweep()
    run.refresh_from_db()
    assert result["failed"] == 1
    assert run.outcome == "error" and run.error_category == "infrastructure"
    assert "Gave up after 99 attempts" in run.status_message


def test_large_batches_are_stored_once_even_when_they_overlap(world):
    # Large enough to take the COPY path on PostgreSQL (the plain INSERT one on SQLite).
    run = services.run_create(actor=world["alice"], case=world["case"], machine=world["machine"])
    lines = [
        ("log", {"message": f"line {i} <tag> 'q' \\u00e9", "level": "INFO"}) for i in range(180)
    ]
    events = _events(*lines)
    assert services.events_store(run=run, events=events[:120]) == 120
    run.last_seq = 60  # as if a resumed worker had lost track of what it stored
    assert services.events_store(run=run, events=events[60:]) == 120
    stored = list(RunEvent.objects.filter(run=run).order_by("seq").values_list("seq", "data"))
    assert [seq for seq, _ in stored] == list(range(1, 181))
    assert stored[0][1]["message"] == "line 0 <tag> 'q' \\u00e9"


def test_retention_drops_old_logs_and_keeps_runs_and_results(world, settings):
    settings.RUN_EVENT_RETENTION_DAYS = 30
    old = services.run_create(actor=world["alice"], case=world["case"], machine=world["machine"])
    new = services.run_create(actor=world["alice"], case=world["case"], machine=world["machine"])
    for run in (old, new):
        services.events_store(
            run=run,
            events=_events(
                ("plan", {"tests": [{"id": "t"}]}), ("test_end", {"test": "t", "outcome": "passed"})
            ),
        )
        services.run_finish(run_id=run.pk, outcome="passed", message="ok", by="test")
    TestRun.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=31))
    assert services.runs_retention() == 1
    assert not RunEvent.objects.filter(run=old).exists()
    assert RunEvent.objects.filter(run=new).count() == 2
    old.refresh_from_db()
    assert old.events_purged and old.outcome == "passed"
    assert TestResult.objects.get(run=old).outcome == "passed"  # history stays
    assert services.runs_retention() == 0  # once


def test_pausing_is_refused_on_windows_and_when_not_running(world):
    run = services.run_create(actor=world["alice"], case=world["case"], machine=world["machine"])
    response = client(world["alice"]).post(f"/api/v1/runs/{run.pk}/pause/")
    assert response.status_code == 409
    assert "only a running run can be paused" in response.json()["message"]
    Machine.objects.filter(pk=world["machine"].pk).update(os="windows")
    TestRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, machine=world["machine"])
    response = client(world["alice"]).post(f"/api/v1/runs/{run.pk}/pause/")
    assert response.status_code == 409
    assert "not supported on Windows" in response.json()["message"]
