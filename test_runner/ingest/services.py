"""Runs reported by machines that drive their own suites.

A dry run announces the whole plan (master scenario -> scenarios -> test scripts); the machine
then reports each test's start and stop. The plan becomes a run (source: external) of a case
named after the machine and master scenario, with one result per test, in plan order.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import secrets
from collections import Counter
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from machines.models import Machine
from test_management_system.errors import ApplicationError, NotFoundError
from test_management_system.tokens import token_hash
from test_runner.models import (
    IngestToken,
    RunEvent,
    RunOutcome,
    RunSource,
    RunStatus,
    RunTransition,
    TestCase,
    TestResult,
    TestRun,
)
from test_runner.services.cases import check_files
from test_runner.services.results import _recount
from test_runner.services.runs import run_finish, run_transition

TOKEN_PREFIX = "tmsi_"  # noqa: S105  # a marker, not a secret
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
MAX_TESTS = 5000

# Stop status -> (test outcome, note on the result)
STATUS_OUTCOMES: dict[str, tuple[str, str]] = {
    "passed": (TestResult.Outcome.PASSED, ""),
    "failed": (TestResult.Outcome.FAILED, ""),
    "error": (TestResult.Outcome.ERROR, ""),
    "warning": (TestResult.Outcome.PASSED, "passed with a warning"),
    "cancelled": (TestResult.Outcome.SKIPPED, "cancelled on the machine"),
    "unknown": (TestResult.Outcome.ERROR, "the machine reported an unknown status"),
}
NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
DRIVE = re.compile(r"^[A-Za-z]:")


# --- Tokens -----------------------------------------------------------------------------------


@transaction.atomic
def ingest_token_create(*, machine: Machine, name: str) -> tuple[IngestToken, str]:
    """A new ingest token for ``machine``; returns it with the secret, shown only this once."""
    name = name.strip()
    if not name:
        raise ApplicationError("Give the token a name.", extra={"field": "name"})
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            token = IngestToken.objects.create(
                machine=machine, name=name[:100], prefix=raw[: len(TOKEN_PREFIX) + 6],
                key_hash=token_hash(raw),
            )  # fmt: skip
    except IntegrityError:  # pragma: no cover  # a 256-bit collision
        raise ApplicationError("Could not create the token; try again.") from None
    return token, raw


def ingest_token_revoke(*, token: IngestToken) -> IngestToken:
    IngestToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    token.refresh_from_db()
    return token


def ingest_token_mark_used(*, token: IngestToken) -> None:
    """Records use, at most once a minute, in one conditional UPDATE."""
    now = timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < LAST_USED_RESOLUTION:
        return
    IngestToken.objects.filter(pk=token.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now)
    token.last_used_at = now


# --- Parsing ----------------------------------------------------------------------------------


def parse_timestamp(value: Any, *, field: str) -> dt.datetime:
    """ "2018-12-30 13:01:57.461401" or ISO 8601; naive times are in the TIME_ZONE setting."""
    try:
        parsed = parse_datetime(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise ApplicationError(
            f"{field}: not a date and time; send e.g. 2018-12-30 13:01:57.461401 or ISO 8601.",
            extra={"field": field},
        )
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, timezone.get_default_timezone())
    return parsed


def machine_for(name: str, *, token: IngestToken) -> Machine:
    """The machine named in a message. Names this service does not allow ("machine #1") match
    the machine whose name is that one with each run of other characters made a '-'."""
    machine = Machine.objects.filter(name=name).first()
    if machine is None:
        normal = NAME_UNSAFE.sub("-", name).strip("-._")
        machine = Machine.objects.filter(name=normal).first() if normal else None
    if machine is None:
        raise NotFoundError(f"No machine named {name!r}.", extra={"field": "machine_name"})
    if machine.pk != token.machine_id:
        raise ApplicationError(
            f"This ingest token belongs to machine {token.machine.name}, not {machine.name}.",
            extra={"field": "machine_name"},
            status_code=403,
        )
    return machine


def _relative(file_path: str, file_name: str, *, field: str) -> str:
    if file_name in (".", "..") or "/" in file_name or "\\" in file_name:
        raise ApplicationError(
            f"{field}.file_name must be a plain file name, not {file_name[:100]!r}.",
            extra={"field": f"{field}.file_name"},
        )
    folder = DRIVE.sub("", file_path.replace("\\", "/")).lstrip("/")
    path = posixpath.join(folder, file_name) if folder else file_name
    try:
        check_files({path: ""})
    except ApplicationError:
        raise ApplicationError(
            f"{field}.file_path {file_path[:200]!r} leaves the suite's folder or has hidden or "
            "drive parts.",
            extra={"field": f"{field}.file_path"},
        ) from None
    return posixpath.normpath(path)


# --- Dry run ----------------------------------------------------------------------------------


def _case_name(machine: Machine, master: str) -> str:
    stem = master[:-3] if master.endswith(".py") else master
    stem = NAME_UNSAFE.sub("-", stem).strip("-._") or "suite"
    return f"external-{machine.name}-{stem}"[:100].rstrip("-._")


def _quiet() -> dt.timedelta:
    return dt.timedelta(minutes=settings.EXTERNAL_RUN_QUIET_MINUTES)


def _unfinished(machine: Machine) -> Any:
    return TestRun.objects.filter(
        machine=machine, source=RunSource.EXTERNAL, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
    )


def dry_run(*, token: IngestToken, data: dict[str, Any]) -> TestRun:
    """Builds the run for a plan. A machine runs one suite at a time: its previous unfinished
    external run is closed first (outcome error, "a new dry run started")."""
    from test_runner.services import case_create, case_update

    started = parse_timestamp(data["timestamp"], field="timestamp")
    master = data["master_scenario"]
    files: dict[str, str] = {}
    entry = _relative(master["file_path"], master["file_name"], field="master_scenario")
    files[entry] = master["script"]
    plan: list[tuple[str, str]] = []  # (scenario file name, test file name)
    for i, scenario in enumerate(master["scenarios"]):
        where = f"master_scenario.scenarios[{i}]"
        path = _relative(scenario["file_path"], scenario["file_name"], field=where)
        files[path] = scenario["script"]
        for j, test in enumerate(scenario["tests"]):
            path = _relative(test["file_path"], test["file_name"], field=f"{where}.tests[{j}]")
            files[path] = test["script"]
            plan.append((scenario["file_name"], test["file_name"]))
    if len(plan) > MAX_TESTS:
        raise ApplicationError(f"At most {MAX_TESTS} tests in one plan.", extra={"field": "tests"})
    try:
        files = check_files(files)
    except ApplicationError as exc:
        raise ApplicationError(exc.message, extra={"field": "master_scenario"}) from None

    with transaction.atomic():
        found = machine_for(data["machine_name"], token=token)
        machine = Machine.objects.select_for_update().get(pk=found.pk)
        for previous in _unfinished(machine).values_list("pk", flat=True):
            run_finish(
                run_id=previous, outcome=RunOutcome.ERROR, by=f"ingest:{token.name}",
                message=f"Closed: a new dry run started on {machine.name}.",
            )  # fmt: skip
        name = _case_name(machine, master["file_name"])
        case = TestCase.objects.filter(name=name).first()
        description = f"Suite run and reported by machine {machine.name}."
        if case is None:
            case = case_create(
                actor=None, name=name, kind=TestCase.Kind.SCRIPT, entry_point=entry, files=files,
                description=description,
            )  # fmt: skip
        else:
            case = case_update(
                case=case, actor=None, files=files, entry_point=entry, kind=TestCase.Kind.SCRIPT,
                change_note=f"plan reported by {machine.name}",
            )  # fmt: skip
        version = case.current_version
        assert version is not None  # case_create and case_update always leave one
        timeout = min(max(int(_quiet().total_seconds()), 5), 7 * 24 * 3600)
        run = TestRun.objects.create(
            case=case, case_version=version, requested_machine=machine,
            machine=machine, source=RunSource.EXTERNAL, timeout=timeout,
            status=RunStatus.QUEUED, status_message=f"Reported by {machine.name}.",
            planned=len(plan),
        )  # fmt: skip
        RunTransition.objects.create(
            run=run, from_status=RunStatus.QUEUED, to_status=RunStatus.QUEUED,
            by=f"ingest:{token.name}", message="created from a dry run",
        )  # fmt: skip
        seen: Counter[str] = Counter()
        results = []
        for order, (scenario, test) in enumerate(plan):
            base = f"{scenario}::{test}"
            seen[base] += 1
            test_id = base if seen[base] == 1 else f"{base}#{seen[base]}"
            results.append(
                TestResult(run=run, order=order, test_id=test_id, name=test, file=scenario)
            )
        TestResult.objects.bulk_create(results)
        _record(
            run, "plan", started,
            {"tests": [{"id": r.test_id, "name": r.name, "file": r.file} for r in results]},
        )  # fmt: skip
        moved = run_transition(
            run_id=run.pk, to=RunStatus.RUNNING, allowed_from=(RunStatus.QUEUED,),
            by=f"ingest:{token.name}", message=f"Running on {machine.name} (reported).",
            started_at=started, heartbeat_at=timezone.now(),
        )  # fmt: skip
        assert moved is not None  # created above, in this transaction
        if not plan:
            run_finish(run_id=run.pk, outcome=RunOutcome.PASSED, by=f"ingest:{token.name}",
                       message="The plan has no tests.")  # fmt: skip
    return TestRun.objects.get(pk=run.pk)


def _record(run: TestRun, kind: str, at: dt.datetime, data: dict[str, Any]) -> None:
    """Adds the message to the run's event stream, as a runner's event would be, so that the
    live page (which follows last_seq) and the log show reported runs like any other. The
    run row is locked by the caller, so seq stays gap-free."""
    seq = TestRun.objects.filter(pk=run.pk).values_list("last_seq", flat=True).get() + 1
    RunEvent.objects.create(run=run, seq=seq, ts=at, type=kind, data=data)
    TestRun.objects.filter(pk=run.pk).update(last_seq=seq)
    run.last_seq = seq


# --- Start and stop ---------------------------------------------------------------------------


def _current_run(machine: Machine) -> TestRun:
    run = (
        TestRun.objects.select_for_update()
        .filter(machine=machine, source=RunSource.EXTERNAL, status=RunStatus.RUNNING)
        .order_by("-queued_at", "-id")
        .first()
    )
    if run is None:
        raise NotFoundError(
            f"Machine {machine.name} has no unfinished reported run; send a dry run first.",
            extra={"field": "machine_name"},
        )
    return run


def _locked(run: TestRun, name: str, outcomes: list[str]) -> TestResult | None:
    return (
        TestResult.objects.select_for_update()
        .filter(run=run, name=name, outcome__in=outcomes)
        .order_by("order", "id")
        .first()
    )


@transaction.atomic
def test_start(*, token: IngestToken, data: dict[str, Any]) -> TestResult:
    at = parse_timestamp(data["timestamp_start"], field="timestamp_start")
    machine = machine_for(data["machine_name"], token=token)
    run = _current_run(machine)  # locked: the run's messages apply one at a time
    name = data["file_name"]
    running = (
        TestResult.objects.filter(run=run, name=name, outcome=TestResult.Outcome.RUNNING)
        .filter(started_at=at)
        .first()
    )
    if running is not None:
        return running  # the same start again
    result = _locked(run, name, [TestResult.Outcome.PLANNED])
    if result is None:
        raise NotFoundError(
            f"Run {run.pk} has no planned test {name[:200]!r}.", extra={"field": "file_name"}
        )
    result.outcome = TestResult.Outcome.RUNNING
    result.started_at = at
    result.save(update_fields=["outcome", "started_at"])
    _record(run, "test_start", at, {"test": result.test_id})
    TestRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
    return result


@transaction.atomic
def test_stop(*, token: IngestToken, data: dict[str, Any]) -> TestResult:
    at = parse_timestamp(data["timestamp_stop"], field="timestamp_stop")
    outcome, note = STATUS_OUTCOMES[data["status"]]
    machine = machine_for(data["machine_name"], token=token)
    name = data["file_name"]
    try:
        run = _current_run(machine)
    except NotFoundError:
        replay = _replayed_stop(machine, name, outcome, at)
        if replay is None:
            raise
        return replay
    replay = _replayed_stop(machine, name, outcome, at, run=run)
    if replay is not None:
        return replay
    # A test whose start was never received is stopped from planned.
    result = _locked(run, name, [TestResult.Outcome.RUNNING]) or _locked(
        run, name, [TestResult.Outcome.PLANNED]
    )
    if result is None:
        finished = (
            TestResult.objects.filter(run=run, name=name, outcome=outcome)
            .order_by("-order")
            .first()
        )
        if finished is not None:
            return finished  # a replay of a stop already applied
        raise NotFoundError(
            f"Run {run.pk} has no planned or running test {name[:200]!r}.",
            extra={"field": "file_name"},
        )
    result.outcome = outcome
    result.finished_at = at
    result.message = note
    if result.started_at is not None:
        result.duration = max((at - result.started_at).total_seconds(), 0.0)
    result.save(update_fields=["outcome", "finished_at", "message", "duration"])
    _record(
        run, "test_end", at,
        {"test": result.test_id, "outcome": outcome, "duration_s": result.duration,
         "message": note},
    )  # fmt: skip
    TestRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
    _recount(run)
    open_tests = TestResult.objects.filter(
        run=run, outcome__in=[TestResult.Outcome.PLANNED, TestResult.Outcome.RUNNING]
    )
    if not open_tests.exists():
        bad = run.failed + run.errors
        run_finish(
            run_id=run.pk, outcome=RunOutcome.FAILED if bad else RunOutcome.PASSED,
            by=f"ingest:{token.name}",
            message=f"All {run.planned} tests reported: {run.passed} passed, {run.failed} "
            f"failed, {run.errors} errors, {run.skipped} skipped.",
        )  # fmt: skip
    return result


def _replayed_stop(
    machine: Machine, name: str, outcome: str, at: dt.datetime, run: TestRun | None = None
) -> TestResult | None:
    """The result this exact stop (same test, status and time) was already applied to."""
    runs = [run] if run is not None else list(
        TestRun.objects.filter(machine=machine, source=RunSource.EXTERNAL)
        .order_by("-queued_at", "-id")[:1]
    )  # fmt: skip
    if not runs:
        return None
    return TestResult.objects.filter(
        run=runs[0], name=name, outcome=outcome, finished_at=at
    ).first()


# --- Quiet machines and the tree --------------------------------------------------------------


def external_runs_timeout(*, now: dt.datetime | None = None) -> int:
    """Ends reported runs that heard nothing (no dry run, start or stop) for
    EXTERNAL_RUN_QUIET_MINUTES, as timed out."""
    now = now or timezone.now()
    cutoff = now - _quiet()
    quiet = TestRun.objects.filter(
        source=RunSource.EXTERNAL, status=RunStatus.RUNNING, heartbeat_at__lt=cutoff
    )
    count = 0
    for run in quiet.values_list("pk", flat=True):
        done = run_finish(
            run_id=run, outcome=RunOutcome.TIMED_OUT, by="ingest-timeout",
            message=f"The machine reported nothing for {settings.EXTERNAL_RUN_QUIET_MINUTES} "
            "minutes.",
        )  # fmt: skip
        count += done is not None
    return count


def roll_up(outcomes: list[str]) -> str:
    """A scenario's status from its tests': running while any runs; then the worst final one;
    planned while none started; passed when all passed (skipped ones aside)."""
    present = set(outcomes)
    if not present:
        return "passed"
    if "running" in present or ("planned" in present and present - {"planned"}):
        return "running"
    for status in ("error", "failed", "planned"):
        if status in present:
            return status
    if present <= {"skipped"}:
        return "skipped"
    return "passed"


def run_tree(*, run: TestRun) -> dict[str, Any]:
    scenarios: dict[str, list[TestResult]] = {}
    for result in run.results.order_by("order", "id"):
        scenarios.setdefault(result.file, []).append(result)
    tree = [
        {
            "file_name": file,
            "status": roll_up([r.outcome for r in results]),
            "tests": [
                {
                    "test_id": r.test_id,
                    "file_name": r.name,
                    "status": r.outcome,
                    "started_at": r.started_at,
                    "finished_at": r.finished_at,
                    "message": r.message,
                }
                for r in results
            ],
        }
        for file, results in scenarios.items()
    ]
    last = run.results.aggregate(at=Max("finished_at"))["at"]
    return {
        "run": run.pk, "case": run.case.name, "machine": run.machine.name if run.machine else "",
        "status": run.status, "outcome": run.outcome, "last_finished_at": last,
        "counts": {"planned": run.planned, "passed": run.passed, "failed": run.failed,
                   "errors": run.errors, "skipped": run.skipped},
        "scenarios": tree,
    }  # fmt: skip
