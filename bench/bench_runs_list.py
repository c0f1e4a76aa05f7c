"""The runs list API (GET /api/v1/runs/) with 100,000 runs on PostgreSQL: latency and queries.

Data: 100,000 runs bulk-created over 40 cases, 12 machines (4 boards), 21 users (one admin),
a year of dates; most DONE (passed/failed/error/cancelled/timed out), some queued or running;
one run in ten on a board. Then ANALYZE, as autovacuum would.

Requests go through Django's test client (the whole stack: middleware, cookie login, DRF,
filters, pagination, serializer, JSON), in this process, so network time is not included.
Five scenarios, 40 timed requests each after 5 warm-up requests (200 in all): p50 / p95.
Then the SQL queries per request (CaptureQueriesContext) for page sizes 10, 50 and 100; the
API's page size is fixed (50), so for this count only the view's paginator is swapped, in this
process, for one with the page size wanted. Deep pages and search are timed on the side.

python bench/bench_runs_list.py [--runs N] [--requests N]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    bench_django,
    describe,
    machine_info,
    ms,
    percentile,
    postgres_unavailable,
    result,
    skipped,
)

# The machines are never connected to; a password is required to create one.
UNUSED_PASSWORD = "not-used-0001"  # noqa: S105
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
OUTCOMES = [("passed", 70), ("failed", 15), ("error", 7), ("cancelled", 5), ("timed_out", 3)]


def make_data(total: int) -> dict[str, Any]:
    from machines import services as machine_services
    from machines.models import Venv
    from test_runner import services
    from test_runner.models import TestRun
    from tests.factories import make_board, make_user

    rng = random.Random(11)
    admin = make_user("bench-admin", admin=True)
    users = [make_user(f"user{i:02d}") for i in range(20)]
    machines = [
        machine_services.machine_create(
            actor=None,
            source="bench",
            name=f"lab-{i:02d}",
            hostname=f"10.0.0.{i + 1}",
            username="lab",
            password=UNUSED_PASSWORD,
            labels=["linux", f"rack{i % 3}"],
            max_concurrent_runs=2,
        )
        for i in range(12)
    ]
    board_of = {machines[i].pk: make_board(machines[i], f"board-{i}") for i in range(4)}
    venvs = {
        m.pk: [
            Venv.objects.create(machine=m, slot=s, path=f"/srv/tms/venvs/slot-{s}")
            for s in range(2)
        ]
        for m in machines
    }
    cases = [
        services.case_create(
            actor=admin,
            name=f"case-{i:02d}",
            kind="script",
            entry_point="main.py",
            files={"main.py": "print('ok')\n"},
        )
        for i in range(40)
    ]
    versions = {c.pk: int(c.current_version_id or 0) for c in cases}
    people = [admin, *users]
    weights = [5] + [1] * len(users)
    outcome_names = [o for o, _ in OUTCOMES]
    outcome_weights = [w for _, w in OUTCOMES]
    # queued_at is auto_now_add: let bulk_create keep the dates given here (this process only).
    TestRun._meta.get_field("queued_at").auto_now_add = False
    start = time.perf_counter()
    batch: list[TestRun] = []
    for i in range(total):
        case = cases[rng.randrange(len(cases))]
        machine = machines[rng.randrange(len(machines))]
        queued = NOW - timedelta(seconds=rng.randrange(365 * 24 * 3600))
        by_label = rng.random() < 0.3
        roll = rng.random()
        fields: dict[str, Any] = {}
        if i >= total - 200 and roll < 0.5:
            status, outcome = "queued", ""
        elif i >= total - 200:
            status, outcome = "running", ""
            fields.update(started_at=queued + timedelta(seconds=2), venv=venvs[machine.pk][0])
        else:
            status = "done"
            outcome = rng.choices(outcome_names, outcome_weights)[0]
            started = queued + timedelta(seconds=rng.uniform(0.2, 30))
            fields.update(
                started_at=started,
                finished_at=started + timedelta(seconds=rng.uniform(5, 1800)),
                venv=venvs[machine.pk][rng.randrange(2)],
                exit_code=0 if outcome == "passed" else 1,
                planned=10, passed=10 if outcome == "passed" else 8,
                failed=0 if outcome == "passed" else 2,
            )  # fmt: skip
        board = board_of.get(machine.pk) if rng.random() < 0.3 else None
        batch.append(
            TestRun(
                case=case,
                case_version_id=versions[case.pk],
                requested_machine=None if by_label else machine,
                requested_label="linux" if by_label else "",
                machine=machine,
                board=board,
                requested_by=rng.choices(people, weights)[0],
                source=rng.choice(["api", "ui", "jenkins"]),
                timeout=1800,
                status=status,
                outcome=outcome,
                queued_at=queued,
                status_message="Done.",
                **fields,
            )
        )
        if len(batch) == 5000:
            TestRun.objects.bulk_create(batch)
            batch = []
    if batch:
        TestRun.objects.bulk_create(batch)
    elapsed = time.perf_counter() - start
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    with_board = TestRun.objects.filter(board__isnull=False).count()
    print(
        f"data: {total} runs bulk-created in {elapsed:.1f} s ({with_board} on a board), "
        f"{len(cases)} cases, {len(machines)} machines, {len(people)} users; ANALYZE done"
    )
    return {
        "admin": admin,
        "user": users[3],
        "machines": machines,
        "cases": cases,
        "create_seconds": round(elapsed, 1),
        "runs_with_board": with_board,
    }


def client_for(user: Any) -> Any:
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_login(user)  # logged in as the web UI is
    return client


def get(client: Any, url: str) -> Any:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.content[:300])
    return response


def scenarios(data: dict[str, Any]) -> list[tuple[str, Any, str]]:
    admin, user = data["admin"], data["user"]
    machine = data["machines"][3].name
    case = data["cases"][7].name
    after = (NOW - timedelta(days=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    before = (NOW - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        ("admin, all runs", admin, "/api/v1/runs/"),
        ("user, own runs", user, "/api/v1/runs/"),
        (
            "user, status+outcome+machine",
            user,
            f"/api/v1/runs/?status=done&outcome=failed&machine={machine}",
        ),
        (
            "admin, case + 30-day window",
            admin,
            f"/api/v1/runs/?case={case}&queued_after={after}&queued_before={before}",
        ),
        (
            "admin, user filter + outcome",
            admin,
            f"/api/v1/runs/?user={user.username}&outcome=passed",
        ),
    ]


def time_requests(data: dict[str, Any], per_scenario: int) -> dict[str, Any]:
    all_times: list[float] = []
    by_scenario = {}
    for name, user, url in scenarios(data):
        client = client_for(user)
        for _ in range(5):
            get(client, url)
        times = []
        for _ in range(per_scenario):
            t0 = time.perf_counter()
            response = get(client, url)
            times.append(time.perf_counter() - t0)
        count = response.json()["count"]
        all_times += times
        by_scenario[name] = {
            "url": url,
            "matching_runs": count,
            "p50_ms": ms(percentile(times, 50)),
            "p95_ms": ms(percentile(times, 95)),
            "samples": len(times),
        }
        print(
            f"  {name:32} {count:6} runs match   p50 {ms(percentile(times, 50)):6.1f} ms   "
            f"p95 {ms(percentile(times, 95)):6.1f} ms   ({len(times)} requests)"
        )
    return {
        "p50_ms": ms(percentile(all_times, 50)),
        "p95_ms": ms(percentile(all_times, 95)),
        "max_ms": ms(max(all_times)),
        "samples": len(all_times),
        "scenarios": by_scenario,
    }


def query_counts(data: dict[str, Any]) -> dict[str, Any]:
    """SQL per request by page size; the queries that repeat per row are the N+1."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.pagination import PageNumberPagination

    from test_runner import apis

    original = apis.RunListApi.pagination_class
    out: dict[str, Any] = {}
    try:
        for name, user, url in scenarios(data)[:3]:
            client = client_for(user)
            get(client, url)
            row: dict[str, Any] = {}
            for size in (10, 50, 100):
                apis.RunListApi.pagination_class = type(
                    f"Page{size}", (PageNumberPagination,), {"page_size": size}
                )
                with CaptureQueriesContext(connection) as captured:
                    t0 = time.perf_counter()
                    response = get(client, url)
                    elapsed = time.perf_counter() - t0
                results = response.json()["results"]
                on_board = sum(1 for r in results if r["board"])
                shapes = Counter(_shape(q["sql"]) for q in captured.captured_queries)
                repeated = {sql: n for sql, n in shapes.items() if n > 1}
                sql_ms = sum(float(q["time"]) for q in captured.captured_queries) * 1000
                slowest = max(captured.captured_queries, key=lambda q: float(q["time"]))
                row[str(size)] = {
                    "queries": len(captured.captured_queries),
                    "rows": len(results),
                    "rows_with_board": on_board,
                    "repeated_queries": repeated,
                    "sql_ms": round(sql_ms, 1),
                    "request_ms": ms(elapsed),
                    "slowest_query_ms": round(float(slowest["time"]) * 1000, 1),
                    "slowest_query": slowest["sql"][:300],
                }
            out[name] = row
            counts = ", ".join(
                f"page {s}: {row[s]['queries']} queries ({row[s]['rows_with_board']} rows on a "
                f"board)"
                for s in row
            )
            print(f"  {name:32} {counts}")
            for page, figures in row.items():
                for sql, n in figures["repeated_queries"].items():
                    print(f"      page {page}: {n} x {sql[:150]}")
    finally:
        apis.RunListApi.pagination_class = original
    return out


def _shape(sql: str) -> str:
    """The query with its literal values taken out, so repeats show up as one shape."""
    import re

    return re.sub(r"\b\d+\b|'[^']*'", "?", sql)


def _explain(sql: str, params: Any) -> tuple[float, list[str]]:
    import re

    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE) " + sql, params)
        plan = [row[0] for row in cursor.fetchall()]
    found = re.search(r"Execution Time: ([\d.]+) ms", plan[-1])
    return (float(found.group(1)) if found else float("nan")), plan


def ordering_index_check(data: dict[str, Any], per_scenario: int) -> dict[str, Any]:
    """The admin list's page query: its plan, then the same with an index matching the list's
    ordering (-queued_at, -id). The index is made in this benchmark's database only, and
    dropped after: it shows what such an index would change, it changes no project code."""
    from django.db import connection

    from test_runner import selectors

    sql, params = selectors.run_list(user=data["admin"])[:50].query.sql_with_params()
    before, plan = _explain(sql, params)
    notes = [
        line.strip()
        for line in plan
        if "Seq Scan on test_runner_testrun" in line or "Sort Key" in line or "Index Scan" in line
    ]
    count_ms, _ = _explain("SELECT COUNT(*) FROM test_runner_testrun", None)
    print(f"  page query (admin, no filter): {before:.1f} ms in PostgreSQL; plan: {notes[:3]}")
    print(f"  its COUNT(*) for the paginator: {count_ms:.1f} ms")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE INDEX bench_run_queued ON test_runner_testrun (queued_at DESC, id DESC)"
        )
        cursor.execute("ANALYZE test_runner_testrun")
    try:
        after, plan = _explain(sql, params)
        uses = any("bench_run_queued" in line for line in plan)
        client = client_for(data["admin"])
        for _ in range(5):
            get(client, "/api/v1/runs/")
        times = []
        for _ in range(per_scenario):
            t0 = time.perf_counter()
            get(client, "/api/v1/runs/")
            times.append(time.perf_counter() - t0)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP INDEX bench_run_queued")
    figures = {
        "page_query_ms": round(before, 1),
        "page_query_plan": notes[:3],
        "count_query_ms": round(count_ms, 1),
        "with_index_page_query_ms": round(after, 1),
        "with_index_plan_uses_it": uses,
        "with_index_request_p50_ms": ms(percentile(times, 50)),
        "with_index_request_p95_ms": ms(percentile(times, 95)),
        "samples": len(times),
    }
    print(
        f"  with an index on (queued_at DESC, id DESC): page query {after:.1f} ms (used: {uses});"
        f" request p50 {figures['with_index_request_p50_ms']} ms, p95 "
        f"{figures['with_index_request_p95_ms']} ms ({len(times)} requests)"
    )
    return figures


def side_figures(data: dict[str, Any]) -> dict[str, Any]:
    admin = data["admin"]
    client = client_for(admin)
    out = {}
    for name, url in (
        ("admin, page 1000 (OFFSET 49,950)", "/api/v1/runs/?page=1000"),
        ("admin, search=case-07", "/api/v1/runs/?search=case-07"),
        ("admin, ordering=-finished_at", "/api/v1/runs/?ordering=-finished_at"),
    ):
        get(client, url)
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            get(client, url)
            times.append(time.perf_counter() - t0)
        out[name] = {"p50_ms": ms(percentile(times, 50)), "samples": len(times), "url": url}
        print(f"  {name:36} p50 {ms(percentile(times, 50)):6.1f} ms (10 requests)")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=40, help="timed requests per scenario")
    args = parser.parse_args()
    reason = postgres_unavailable()
    if reason:
        return skipped(f"bench_runs_list needs PostgreSQL: {reason}")
    with bench_django("runs_list"):
        info = machine_info()
        print(describe(info))
        data = make_data(args.runs)
        print(f"latency, page size 50 (the API's), {args.requests} requests per scenario:")
        latency = time_requests(data, args.requests)
        print(
            f"all scenarios: p50 {latency['p50_ms']} ms, p95 {latency['p95_ms']} ms, "
            f"max {latency['max_ms']} ms over {latency['samples']} requests"
        )
        print("SQL queries per request by page size:")
        queries = query_counts(data)
        print("where the admin list's time goes:")
        ordering = ordering_index_check(data, args.requests)
        print("on the side (not in the p95):")
        side = side_figures(data)
        info["load_average_1m_end"] = machine_info().get("load_average_1m")
    fixed = all(len({v["queries"] for v in row.values()}) == 1 for row in queries.values())
    print(
        f"goal p95 < 50 ms: {'met' if latency['p95_ms'] < 50 else 'MISSED'} "
        f"({latency['p95_ms']} ms); goal queries independent of page size: "
        f"{'met' if fixed else 'MISSED'}"
    )
    result(
        {
            "machine": info,
            "runs": args.runs,
            "runs_with_board": data["runs_with_board"],
            "create_seconds": data["create_seconds"],
            "latency": latency,
            "queries": queries,
            "admin_list_ordering": ordering,
            "side": side,
            "goal_p95_ms": 50,
            "goal_p95_met": latency["p95_ms"] < 50,
            "goal_fixed_queries_met": fixed,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
