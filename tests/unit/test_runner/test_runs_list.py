"""The runs list API (GET /api/v1/runs/): rows, counts, pages, and the SQL it costs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework import serializers
from rest_framework.test import APIClient

from test_runner import pagination, selectors, services
from test_runner.models import RunStatus, TestRun
from test_runner.serializers import RunListOutput
from tests.factories import make_board, make_finished_run, make_machine, make_ready_venvs, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    admin = make_user("boss", admin=True)
    alice = make_user("alice")
    machine = make_machine("lab-1", users=[alice], labels=["rack"], max_concurrent_runs=2)
    other = make_machine("lab-2", users=[alice], labels=["rack"])
    make_ready_venvs(machine, 2)
    board = make_board(machine, "b1", labels=["stm32"])
    case = services.case_create(
        actor=alice, name="smoke", kind="script", entry_point="main.py",
        files={"main.py": "print('hi')\n"},
    )  # fmt: skip
    return {"admin": admin, "alice": alice, "machine": machine, "other": other, "board": board,
            "case": case}  # fmt: skip


def client(user) -> APIClient:
    c = APIClient()
    c.force_authenticate(user)
    return c


def many_runs(world, count: int, user: str = "alice") -> list[int]:
    """``count`` queued runs, a second apart, oldest first: ids in creation order."""
    runs = [
        services.run_create(actor=world[user], case=world["case"], machine=world["machine"])
        for _ in range(count)
    ]
    start = timezone.now() - timedelta(hours=1)
    for i, run in enumerate(runs):
        TestRun.objects.filter(pk=run.pk).update(queued_at=start + timedelta(seconds=i))
    return [r.pk for r in runs]


def varied_runs(world) -> list[TestRun]:
    """Runs of every shape a row shows: queued on a label (no machine yet), finished with
    counts, on a board, and one whose requester was deleted."""
    by_label = services.run_create(actor=world["alice"], case=world["case"], label="rack")
    finished = make_finished_run(world["alice"], world["machine"], outcome="failed")
    TestRun.objects.filter(pk=finished.pk).update(
        planned=4, passed=2, failed=1, skipped=1, exit_code=1, error_category=""
    )
    on_board = services.run_create(actor=world["admin"], case=world["case"], machine=world["other"])
    TestRun.objects.filter(pk=on_board.pk).update(
        board=world["board"], machine=world["machine"], status=RunStatus.RUNNING,
        started_at=timezone.now(), status_message="Running on the board.",
    )  # fmt: skip
    orphan = make_user("gone")
    left_behind = services.run_create(actor=world["alice"], case=world["case"], label="rack")
    TestRun.objects.filter(pk=left_behind.pk).update(requested_by=orphan)
    orphan.delete()
    return [by_label, finished, on_board, left_behind]


def test_a_row_is_the_detail_s_fields_for_the_same_run(world):
    runs = varied_runs(world)
    rows = client(world["admin"]).get("/api/v1/runs/").json()["results"]
    assert [r["id"] for r in rows] == sorted((r.pk for r in runs), reverse=True)
    for row in rows:
        detail = client(world["admin"]).get(f"/api/v1/runs/{row['id']}/").json()
        assert set(row) < set(detail)
        assert row == {k: detail[k] for k in row}, row["id"]
    shown = {r["id"]: r for r in rows}
    assert shown[runs[2].pk]["board"] == "lab-1/b1" and shown[runs[2].pk]["machine"] == "lab-1"
    assert shown[runs[0].pk]["machine"] is None and shown[runs[0].pk]["requested_label"] == "rack"
    assert shown[runs[3].pk]["requested_by"] is None
    assert shown[runs[1].pk]["progress"] == {"planned": 4, "done": 4, "percent": 100.0}


def test_the_written_out_row_is_what_drf_s_generic_path_gives(world):
    varied_runs(world)
    rows = selectors.run_summaries_named(list(selectors.run_summaries(user=world["admin"])))
    output = RunListOutput()
    for row in rows:
        assert output.to_representation(row) == serializers.Serializer.to_representation(
            output, row
        )
    assert set(output.fields) == set(output.to_representation(rows[0]))


def test_the_query_count_does_not_grow_with_the_page_size(world):
    varied_runs(world)
    many_runs(world, 30)
    counts = {}
    for size in (2, 10, 30):
        with CaptureQueriesContext(connection) as captured:
            body = client(world["admin"]).get(f"/api/v1/runs/?page_size={size}").json()
        assert len(body["results"]) == size
        counts[size] = len(captured.captured_queries)
    # The page (one row more than shown), the names of everything on it, the bounded count.
    assert counts == {2: 3, 10: 3, 30: 3}


def test_pages_link_to_each_other_and_cover_every_run_once(world):
    ids = many_runs(world, 7)
    api = client(world["alice"])
    first = api.get("/api/v1/runs/?page_size=3&status=queued").json()
    assert first["count"] == 7 and first["count_is_estimate"] is False
    assert (
        first["previous"] is None and "page=2" in first["next"] and "status=queued" in first["next"]
    )
    second = api.get(first["next"]).json()
    assert second["previous"].endswith("?page_size=3&status=queued")
    third = api.get(second["next"]).json()
    assert third["next"] is None and "page=2" in third["previous"]
    seen = [r["id"] for page in (first, second, third) for r in page["results"]]
    assert seen == list(reversed(ids))


def test_a_page_past_the_end_or_not_a_page_is_not_found(world):
    many_runs(world, 3)
    api = client(world["alice"])
    assert api.get("/api/v1/runs/?page_size=3&page=2").status_code == 404
    assert api.get("/api/v1/runs/?page=0").status_code == 404
    assert api.get("/api/v1/runs/?page=last").status_code == 404
    assert api.get(f"/api/v1/runs/?page={10**30}").status_code == 404
    empty = client(make_user("nobody")).get("/api/v1/runs/").json()
    assert empty == {"count": 0, "count_is_estimate": False, "next": None, "previous": None,
                     "results": []}  # fmt: skip


def test_the_page_size_is_capped(world):
    many_runs(world, 3)
    body = client(world["alice"]).get("/api/v1/runs/?page_size=100000").json()
    assert len(body["results"]) == 3
    assert pagination.RunPagination.max_page_size == 100


def test_sorting_on_a_column_with_ties_still_shows_every_run_once(world):
    # Every run has the same status and priority: only the tie-breaker orders them.
    ids = many_runs(world, 9)
    api = client(world["alice"])
    for ordering in ("status", "-priority", "outcome"):
        seen = []
        for page in (1, 2, 3):
            body = api.get(f"/api/v1/runs/?ordering={ordering}&page_size=4&page={page}")
            if body.status_code == 404:
                break
            seen += [r["id"] for r in body.json()["results"]]
        assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen)), ordering


def test_above_the_exact_limit_other_databases_still_count_exactly(world, monkeypatch):
    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL estimates above the limit: see the test below")
    monkeypatch.setattr(pagination, "EXACT_COUNT_LIMIT", 4)
    many_runs(world, 9)
    body = client(world["alice"]).get("/api/v1/runs/?page_size=2").json()
    assert body["count"] == 9 and body["count_is_estimate"] is False


@pytest.mark.postgres
def test_above_the_exact_limit_postgresql_gives_its_estimate_and_says_so(world, monkeypatch):
    monkeypatch.setattr(pagination, "EXACT_COUNT_LIMIT", 4)
    many_runs(world, 9)
    many_runs(world, 3, user="admin")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE test_runner_testrun")
    api = client(world["admin"])
    body = api.get("/api/v1/runs/?page_size=2").json()
    assert body["count_is_estimate"] is True
    # The planner's figure, from the statistics ANALYZE just took; never below what is known.
    assert body["count"] == 12
    deep = api.get("/api/v1/runs/?page_size=2&page=5").json()
    assert deep["count_is_estimate"] is True and deep["count"] >= 11
    # Few enough to count: exact. The last page: exact, whatever the limit.
    assert api.get("/api/v1/runs/?page_size=2&user=admin").json()["count_is_estimate"] is False
    last = api.get("/api/v1/runs/?page_size=5&page=3").json()
    assert last["count"] == 12 and last["count_is_estimate"] is False and last["next"] is None
