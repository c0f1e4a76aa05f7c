"""Reads with access checks: a user's history is their own runs; admins see everyone's."""

from __future__ import annotations

from django.db.models import QuerySet

from machines.selectors import User, is_admin
from test_runner.models import RunEvent, TestCase, TestResult, TestRun


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


def user_can_control_run(*, user: User, run: TestRun) -> bool:
    return is_admin(user) or (user.is_authenticated and run.requested_by_id == user.pk)


def run_events(*, run: TestRun, after: int, limit: int) -> QuerySet[RunEvent]:
    return RunEvent.objects.filter(run=run, seq__gt=after).order_by("seq")[:limit]


def run_results(*, run: TestRun) -> QuerySet[TestResult]:
    return TestResult.objects.filter(run=run).order_by("order", "id")
