"""The runs list API (GET /api/v1/runs/) with 100,000 runs on PostgreSQL: latency and queries,
ours and the naive design side by side in one run.

Data: 100,000 runs bulk-created over 40 cases, 12 machines (4 boards), 21 users (one admin),
a year of dates; most DONE (passed/failed/error/cancelled/timed out), some queued or running;
one run in ten on a board. Then ANALYZE, as autovacuum would.

Requests go through Django's test client (the whole stack: middleware, cookie login, DRF,
filters, pagination, serializer, JSON), in this process, so network time is not included.
Five scenarios, 40 timed requests each after 5 warm-up requests (200 in all): p50 / p95, for
ours and then for the naive design on the same data, same filters, same logins.

Ours: a page of summaries read from the runs table alone (no joins), the names it shows in
one more query, page numbers with a count that is exact up to 1,000 matching runs and
PostgreSQL's estimate above (flagged ``count_is_estimate``).
Naive (the original plan): a plain ModelSerializer of every field, relations shown by name
(``str()``, the same names ours shows), no select_related or prefetch (so N+1), and
limit/offset pagination with an exact COUNT(*). It is mounted at /bench/naive-runs/ in this
process only.

Then the SQL queries per request (CaptureQueriesContext) for page sizes 10, 50 and 100
(``?page_size=`` for ours, ``?limit=`` for the naive one), what PostgreSQL spends planning
and running the page query and the count either way, and deep pages, search and sorting on
the side.

python bench/bench_runs_list.py [--runs N] [--requests N]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    bench_django,
    comparison,
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
        "runs": total,
        "runs_with_board": with_board,
    }


NAIVE_URL = "/bench/naive-runs/"


def mount_naive() -> None:
    """The naive design's runs list, at NAIVE_URL in this process only."""
    from django.urls import clear_url_caches, path
    from rest_framework import generics, permissions, serializers
    from rest_framework.pagination import LimitOffsetPagination

    from machines.selectors import is_admin
    from test_management_system import urls
    from test_runner.filters import RunFilter
    from test_runner.models import TestRun

    class NaiveRunOutput(serializers.ModelSerializer):
        # Every relation by its name, as str() gives it: one query per relation and row.
        case: Any = serializers.StringRelatedField()
        case_version: Any = serializers.StringRelatedField()
        requested_machine: Any = serializers.StringRelatedField()
        requested_board: Any = serializers.StringRelatedField()
        machine: Any = serializers.StringRelatedField()
        venv: Any = serializers.StringRelatedField()
        board: Any = serializers.StringRelatedField()
        requested_by: Any = serializers.StringRelatedField()
        retry_of: Any = serializers.StringRelatedField()

        class Meta:
            model = TestRun
            fields = "__all__"

    class NaiveRunList(generics.ListAPIView):
        permission_classes = [permissions.IsAuthenticated]
        serializer_class = NaiveRunOutput
        pagination_class = LimitOffsetPagination  # limit = PAGE_SIZE (50); exact COUNT(*)
        filterset_class = RunFilter
        search_fields = ["case__name", "status_message", "machine__name"]
        ordering_fields = ["queued_at", "started_at", "finished_at", "priority", "status"]

        def get_queryset(self) -> Any:
            user = self.request.user
            runs = TestRun.objects.all()
            return runs if is_admin(user) else runs.filter(requested_by_id=user.pk)

    urls.urlpatterns.insert(0, path(NAIVE_URL.strip("/") + "/", NaiveRunList.as_view()))
    clear_url_caches()


def naive(url: str) -> str:
    """The same request for the naive list: ?page=N becomes ?offset=."""
    from urllib.parse import parse_qsl, urlencode, urlsplit

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    page = int(query.pop("page", 1))
    if page > 1:
        query["offset"] = str((page - 1) * 50)
    return NAIVE_URL + ("?" + urlencode(query) if query else "")


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


def time_requests(data: dict[str, Any], per_scenario: int, *, design: str) -> dict[str, Any]:
    all_times: list[float] = []
    by_scenario = {}
    for name, user, ours_url in scenarios(data):
        url = ours_url if design == "ours" else naive(ours_url)
        client = client_for(user)
        for _ in range(5):
            get(client, url)
        times = []
        for _ in range(per_scenario):
            t0 = time.perf_counter()
            response = get(client, url)
            times.append(time.perf_counter() - t0)
        body = response.json()
        count, estimated = body["count"], bool(body.get("count_is_estimate"))
        all_times += times
        by_scenario[name] = {
            "url": url,
            "matching_runs": count,
            "count_is_estimate": estimated,
            "p50_ms": ms(percentile(times, 50)),
            "p95_ms": ms(percentile(times, 95)),
            "samples": len(times),
        }
        shown = f"~{count}" if estimated else str(count)
        print(
            f"  {design:5} {name:32} {shown:>7} runs match   p50 "
            f"{ms(percentile(times, 50)):6.1f} ms   p95 {ms(percentile(times, 95)):6.1f} ms   "
            f"({len(times)} requests)"
        )
    return {
        "p50_ms": ms(percentile(all_times, 50)),
        "p95_ms": ms(percentile(all_times, 95)),
        "max_ms": ms(max(all_times)),
        "samples": len(all_times),
        "scenarios": by_scenario,
    }


def query_counts(data: dict[str, Any], *, design: str) -> dict[str, Any]:
    """SQL per request by page size; the queries that repeat per row are the N+1."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    out: dict[str, Any] = {}
    for name, user, ours_url in scenarios(data)[:3]:
        client = client_for(user)
        base = ours_url if design == "ours" else naive(ours_url)
        param = "page_size" if design == "ours" else "limit"
        get(client, base)
        row: dict[str, Any] = {}
        for size in (10, 50, 100):
            url = f"{base}{'&' if '?' in base else '?'}{param}={size}"
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
            f"page {s}: {row[s]['queries']} ({row[s]['sql_ms']:.0f} ms SQL, "
            f"{row[s]['request_ms']:.0f} ms)"
            for s in row
        )
        print(f"  {design:5} {name:32} {counts}")
        for page, figures in row.items():
            for sql, n in list(figures["repeated_queries"].items())[:3]:
                print(f"      page {page}: {n} x {sql[:110]}")
    return out


def independent_of_page_size(counts: dict[str, Any]) -> bool:
    """No query repeats per row, and a bigger page never costs more queries. (Ours may cost
    one fewer on a page that holds every match: the last page needs no count.)"""
    for row in counts.values():
        sizes = [row[size] for size in ("10", "50", "100")]
        if any(figures["repeated_queries"] for figures in sizes):
            return False
        if any(b["queries"] > a["queries"] for a, b in pairwise(sizes)):
            return False
    return True


def _shape(sql: str) -> str:
    """The query with its literal values taken out, so repeats show up as one shape."""
    import re

    return re.sub(r"\b\d+\b|'[^']*'", "?", sql)


def _explain(sql: str, params: Any, runs: int = 9) -> dict[str, float]:
    """Median planning and execution time of a query (EXPLAIN ANALYZE, ``runs`` times)."""
    import re

    from django.db import connection

    planning: list[float] = []
    execution: list[float] = []
    for _ in range(runs):
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE) " + sql, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        for times, label in ((planning, "Planning"), (execution, "Execution")):
            found = re.search(label + r" Time: ([\d.]+) ms", plan)
            times.append(float(found.group(1)) if found else math.nan)
    return {
        "planning_ms": round(percentile(planning, 50), 2),
        "execution_ms": round(percentile(execution, 50), 2),
    }


def sql_costs(data: dict[str, Any]) -> dict[str, Any]:
    """Where PostgreSQL's time goes for one page of the admin list (50 runs, no filter):
    the page query as the detail reads runs (seven joins) and as the list reads them (the
    runs table alone), the names query, and the count: exact COUNT(*) against ours."""
    from django.db import connection

    from test_runner import pagination, selectors

    admin = data["admin"]
    joined = selectors.run_list(user=admin)[:51].query.sql_with_params()
    alone = selectors.run_summaries(user=admin)[:51].query.sql_with_params()
    figures: dict[str, Any] = {
        "page_query_7_joins": _explain(*joined),
        "page_query_runs_table_alone": _explain(*alone),
        "count_exact": _explain("SELECT COUNT(*) FROM test_runner_testrun", None),
        "count_bounded_1001": _explain(
            "SELECT COUNT(*) FROM (SELECT id FROM test_runner_testrun LIMIT 1001) s", None
        ),
    }
    for name, f in figures.items():
        print(f"  {name:28} planning {f['planning_ms']:6.2f} ms   run {f['execution_ms']:6.2f} ms")
    rows = list(selectors.run_summaries(user=admin)[:50])
    t0 = time.perf_counter()
    selectors.run_summaries_named(rows)
    figures["names_query_ms"] = ms(time.perf_counter() - t0)
    t0 = time.perf_counter()
    count, estimated = pagination.count_rows(selectors.run_summaries(user=admin))
    figures["count_rows_ms"] = ms(time.perf_counter() - t0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM test_runner_testrun")
        exact = cursor.fetchone()[0]
    figures["count_rows"] = {"count": count, "estimated": estimated, "exact": exact}
    print(
        f"  names of a 50-run page, one query: {figures['names_query_ms']} ms (from Python);"
        f" count_rows: {count} (estimate: {estimated}; exact {exact}) in "
        f"{figures['count_rows_ms']} ms"
    )
    return figures


def side_figures(data: dict[str, Any], *, design: str) -> dict[str, Any]:
    admin = data["admin"]
    client = client_for(admin)
    out = {}
    deep = max(2, data["runs"] // 100)  # half-way down the admin's list
    for name, ours_url in (
        (f"admin, page {deep} (OFFSET {(deep - 1) * 50:,})", f"/api/v1/runs/?page={deep}"),
        ("admin, search=case-07", "/api/v1/runs/?search=case-07"),
        ("admin, ordering=-finished_at", "/api/v1/runs/?ordering=-finished_at"),
    ):
        url = ours_url if design == "ours" else naive(ours_url)
        get(client, url)
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            get(client, url)
            times.append(time.perf_counter() - t0)
        out[name] = {"p50_ms": ms(percentile(times, 50)), "samples": len(times), "url": url}
        print(f"  {design:5} {name:36} p50 {ms(percentile(times, 50)):6.1f} ms (10 requests)")
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
        mount_naive()
        print(f"latency, page size 50, {args.requests} requests per scenario:")
        latency = time_requests(data, args.requests, design="ours")
        naive_latency = time_requests(data, args.requests, design="naive")
        for design, figures in (("ours", latency), ("naive", naive_latency)):
            print(
                f"  {design:5} all scenarios: p50 {figures['p50_ms']} ms, p95 "
                f"{figures['p95_ms']} ms, max {figures['max_ms']} ms over "
                f"{figures['samples']} requests"
            )
        print("SQL queries per request by page size:")
        queries = query_counts(data, design="ours")
        naive_queries = query_counts(data, design="naive")
        print("where PostgreSQL's time goes (admin list, page of 50, medians of 9):")
        sql = sql_costs(data)
        print("on the side (not in the p95):")
        side = side_figures(data, design="ours")
        naive_side = side_figures(data, design="naive")
        info["load_average_1m_end"] = machine_info().get("load_average_1m")
    fixed = independent_of_page_size(queries)
    naive_fixed = independent_of_page_size(naive_queries)
    ours_100 = max(row["100"]["queries"] for row in queries.values())
    naive_100 = max(row["100"]["queries"] for row in naive_queries.values())
    met = latency["p95_ms"] < 50
    print(
        f"goal p95 < 50 ms: {'met' if met else 'MISSED'} ({latency['p95_ms']} ms; naive "
        f"{naive_latency['p95_ms']} ms); goal queries independent of page size: "
        f"{'met' if fixed else 'MISSED'} (naive: {'yes' if naive_fixed else 'no'})"
    )
    load = f"load average {info.get('load_average_1m')} -> {info.get('load_average_1m_end')}"
    comparisons = [
        comparison(
            "runs list",
            metric="p95, 100,000 runs, 5 scenarios, page of 50",
            unit="ms",
            ours=latency["p95_ms"],
            naive=naive_latency["p95_ms"],
            higher_is_better=False,
            goal="p95 < 50 ms",
            met=met,
            note=f"p50 {latency['p50_ms']} vs {naive_latency['p50_ms']} ms; {load}"
            + ("" if met else "; missed: see latency.scenarios for the slowest"),
        ),
        comparison(
            "runs list",
            metric="queries per request, page of 100",
            unit="queries",
            ours=ours_100,
            naive=naive_100,
            higher_is_better=False,
            goal="independent of page size",
            met=fixed,
            note="ours at 10/50/100: "
            + "/".join(str(v["queries"]) for v in queries["admin, all runs"].values())
            + "; naive: "
            + "/".join(str(v["queries"]) for v in naive_queries["admin, all runs"].values())
            + " (admin, all runs)",
        ),
    ]
    result(
        {
            "machine": info,
            "runs": args.runs,
            "runs_with_board": data["runs_with_board"],
            "create_seconds": data["create_seconds"],
            "latency": latency,
            "queries": queries,
            "sql": sql,
            "side": side,
            "naive": {"latency": naive_latency, "queries": naive_queries, "side": naive_side},
            "goal_p95_ms": 50,
            "goal_p95_met": met,
            "goal_fixed_queries_met": fixed,
            "comparisons": comparisons,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
