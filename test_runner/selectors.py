"""Reads with access checks: a user's history is their own runs; admins see everyone's."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import CharField, QuerySet, Value
from django.db.models.functions import Cast, Concat

from machines.models import Board, Machine
from machines.selectors import User, is_admin
from test_runner.models import RunEvent, TestCase, TestCaseVersion, TestResult, TestRun


def case_list(*, user: User) -> QuerySet[TestCase]:
    if not user.is_authenticated:
        return TestCase.objects.none()
    return TestCase.objects.select_related("owner", "current_version").prefetch_related(
        "labels", "board_labels"
    )


def user_can_edit_case(*, user: User, case: TestCase) -> bool:
    return is_admin(user) or (user.is_authenticated and case.owner_id == user.pk)


def run_list(*, user: User) -> QuerySet[TestRun]:
    qs = TestRun.objects.select_related(
        "case", "case_version", "machine", "board__machine", "requested_by", "requested_machine"
    )
    if is_admin(user):
        return qs
    if not user.is_authenticated:
        return qs.none()
    return qs.filter(requested_by_id=user.pk)


# The columns a row of the runs list reads (test_runner.serializers.RunListOutput shows them).
RUN_SUMMARY_COLUMNS = (
    "id", "uid", "case_id", "case_version_id", "requested_machine_id", "requested_label",
    "machine_id", "board_id", "requested_by_id", "source", "priority", "status", "outcome",
    "error_category", "status_message", "exit_code", "queued_at", "started_at", "finished_at",
    "planned", "passed", "failed", "errors", "skipped",
)  # fmt: skip


def run_summaries(*, user: User) -> QuerySet[TestRun, dict[str, Any]]:
    """The runs of ``run_list`` as rows of plain values, for a page of the runs list; give
    the page to ``run_summaries_named`` for the names it shows.

    No joins: with the seven of ``run_list`` PostgreSQL spends 15 to 60 ms planning each page
    query (its search over join orders), far more than running it; the runs table alone plans
    in well under a millisecond.
    """
    qs = TestRun.objects.values(*RUN_SUMMARY_COLUMNS)
    if is_admin(user):
        return qs
    if not user.is_authenticated:
        return qs.none()
    return qs.filter(requested_by_id=user.pk)


def run_summaries_named(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adds to each row of ``run_summaries`` the names it shows (``case``, ``case_version``
    number, ``machine``, ``requested_machine``, ``board`` as "machine/board", and
    ``requested_by``), read in one query for the whole page, whatever its size, and the
    ``progress`` of each."""
    ids: dict[str, set[int]] = {kind: set() for kind in ("case", "version", "machine", "board")}
    ids["user"] = set()
    for row in rows:
        ids["case"].add(row["case_id"])
        ids["version"].add(row["case_version_id"])
        ids["machine"].update(row[k] for k in ("machine_id", "requested_machine_id") if row[k])
        if row["board_id"]:
            ids["board"].add(row["board_id"])
        if row["requested_by_id"]:
            ids["user"].add(row["requested_by_id"])
    text: CharField[str, str] = CharField()
    parts = [
        TestCase.objects.filter(pk__in=ids["case"]).values_list(
            Value("case", output_field=text), "pk", "name"
        ),
        TestCaseVersion.objects.filter(pk__in=ids["version"]).values_list(
            Value("version", output_field=text), "pk", Cast("number", text)
        ),
        Machine.objects.filter(pk__in=ids["machine"]).values_list(
            Value("machine", output_field=text), "pk", "name"
        ),
        Board.objects.filter(pk__in=ids["board"]).values_list(  # as Board.__str__ shows it
            Value("board", output_field=text),
            "pk",
            Concat("machine__name", Value("/"), "name", output_field=text),
        ),
        get_user_model()
        .objects.filter(pk__in=ids["user"])
        .values_list(Value("user", output_field=text), "pk", "username"),
    ]
    names: dict[tuple[str, int], str] = {}
    if rows:
        # Unordered: a part of a UNION may not have its own ORDER BY (SQLite refuses it).
        first, *others = (part.order_by() for part in parts)
        names = {(kind, pk): name for kind, pk, name in first.union(*others, all=True)}
    for row in rows:
        row["case"] = names.get(("case", row["case_id"]))
        number = names.get(("version", row["case_version_id"]))
        row["case_version"] = int(number) if number is not None else None
        row["machine"] = names.get(("machine", row["machine_id"]))
        row["requested_machine"] = names.get(("machine", row["requested_machine_id"]))
        row["board"] = names.get(("board", row["board_id"]))
        row["requested_by"] = names.get(("user", row["requested_by_id"]))
        done = row["passed"] + row["failed"] + row["errors"] + row["skipped"]  # as done_tests
        row["progress"] = run_progress(planned=row["planned"], done=done)
    return rows


def run_progress(*, planned: int, done: int) -> dict[str, Any]:
    return {
        "planned": planned,
        "done": done,
        "percent": round(100 * done / planned, 1) if planned else None,
    }


def user_can_control_run(*, user: User, run: TestRun) -> bool:
    return is_admin(user) or (user.is_authenticated and run.requested_by_id == user.pk)


def run_events(*, run: TestRun, after: int, limit: int) -> QuerySet[RunEvent]:
    return RunEvent.objects.filter(run=run, seq__gt=after).order_by("seq")[:limit]


def run_results(*, run: TestRun) -> QuerySet[TestResult]:
    return TestResult.objects.filter(run=run).order_by("order", "id")
