"""A small lab for the page tests: an admin, two users, a machine assigned to alice with a
board and a ready pool, a case, and runs with stored events (some of them hostile)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from test_runner import services
from test_runner.models import RunOutcome, RunStatus, TestCase, TestRun
from tests.factories import make_board, make_machine, make_ready_venvs, make_user

HOSTILE = "<script>alert('x')</script>\"quoted\" & \x1b[31mred\x1b[0m"


@dataclass
class World:
    admin: Any
    alice: Any
    bob: Any
    machine: Any
    board: Any
    case: TestCase
    run: TestRun  # alice's, finished, with events
    live: TestRun  # alice's, running

    def client(self, who: str | None) -> Client:
        client = Client()
        if who is not None:
            client.force_login(getattr(self, who))
        return client


def store(run: TestRun, events: list[dict[str, Any]]) -> None:
    run.refresh_from_db()
    services.events_store(run=run, events=events)


def sample_events(start: int = 1) -> list[dict[str, Any]]:
    ts = "2026-03-01T12:00:00.000Z"
    return [
        {"seq": start, "ts": ts, "type": "run_start", "mode": "pytest", "platform": "linux"},
        {"seq": start + 1, "ts": ts, "type": "plan", "tests": [
            {"id": "tests/test_a.py::test_one", "name": "test_one", "file": "tests/test_a.py"},
            {"id": "tests/test_a.py::test_two", "name": "test_two", "file": "tests/test_a.py"},
        ]},
        {"seq": start + 2, "ts": ts, "type": "test_start", "test": "tests/test_a.py::test_one"},
        {"seq": start + 3, "ts": ts, "type": "log", "level": "INFO", "source": "test",
         "message": HOSTILE},
        {"seq": start + 4, "ts": ts, "type": "heartbeat", "uptime_s": 1},
        {"seq": start + 5, "ts": ts, "type": "test_end", "test": "tests/test_a.py::test_one",
         "outcome": "passed", "duration_s": 0.5},
        {"seq": start + 6, "ts": ts, "type": "log", "level": "WARNING", "source": "test",
         "message": "x" * 10000},
    ]  # fmt: skip


def finish(run: TestRun, outcome: str = RunOutcome.PASSED) -> TestRun:
    now = timezone.now()
    TestRun.objects.filter(pk=run.pk).update(
        status=RunStatus.DONE, outcome=outcome, started_at=now - timedelta(seconds=75),
        finished_at=now, machine=run.requested_machine,
    )  # fmt: skip
    run.refresh_from_db()
    return run


@pytest.fixture
def world(db, django_capture_on_commit_callbacks) -> World:
    admin = make_user("boss", admin=True)
    alice = make_user("alice")
    bob = make_user("bob")
    machine = make_machine("lab-1", users=[alice], labels=["rack"], max_concurrent_runs=2)
    make_ready_venvs(machine, 2)
    board = make_board(machine, "b1", labels=["stm32"])
    case = services.case_create(
        actor=alice, name="smoke", kind="script", entry_point="main.py",
        files={"main.py": "print('hi')\n"}, description=HOSTILE,
    )  # fmt: skip
    # The task queue is not under test here: on-commit dispatch is captured, not run.
    with django_capture_on_commit_callbacks(execute=False):
        run = services.run_create(
            actor=alice, case=case, machine=machine, parameters={"P": HOSTILE}
        )
        live = services.run_create(actor=alice, case=case, machine=machine)
    store(run, sample_events())
    run = finish(run)
    TestRun.objects.filter(pk=live.pk).update(
        status=RunStatus.RUNNING, started_at=timezone.now(), machine=machine
    )
    store(live, sample_events()[:3])
    live.refresh_from_db()
    return World(admin, alice, bob, machine, board, case, run, live)
