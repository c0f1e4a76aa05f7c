"""The lifecycle of a run: create, transitions, cancel, pause/resume, retry, finish.

Every status change goes through ``run_transition``: a conditional UPDATE (so two workers can
never both move a run) plus a ``RunTransition`` row saying who or what moved it and why.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from machines import selectors as machine_selectors
from machines import services as machine_services
from machines.models import Board, Machine
from machines.services.audit import Actor, as_user
from test_management_system.errors import ApplicationError, ConflictError, NotFoundError
from test_runner.models import (
    ErrorCategory,
    RunOutcome,
    RunSource,
    RunStatus,
    RunTransition,
    TestCase,
    TestRun,
)

logger = logging.getLogger(__name__)

ACTIVE = (RunStatus.PROVISIONING, RunStatus.RUNNING, RunStatus.FINISHING)
PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_PARAMETERS = 50


def run_transition(
    *,
    run_id: int,
    to: str,
    allowed_from: tuple[str, ...],
    actor: Actor = None,
    by: str = "",
    message: str = "",
    **fields: Any,
) -> TestRun | None:
    """Moves the run to ``to`` if it is in one of ``allowed_from``; None if it was not."""
    with transaction.atomic():
        current = (
            TestRun.objects.select_for_update()
            .filter(pk=run_id, status__in=allowed_from)
            .values_list("status", flat=True)
            .first()
        )
        if current is None:
            return None
        updates: dict[str, Any] = {"status": to, **fields}
        if message:
            updates["status_message"] = message
        TestRun.objects.filter(pk=run_id).update(**updates)
        RunTransition.objects.create(
            run_id=run_id,
            from_status=current,
            to_status=to,
            outcome=fields.get("outcome", ""),
            actor=as_user(actor),
            by=by,
            message=message,
        )
    return TestRun.objects.get(pk=run_id)


def run_note(*, run_id: int, by: str, message: str) -> None:
    """Records something that happened to a run without moving it (a lost database connection
    it rode through): a RunTransition from and to its current status, and its status message,
    so the run's history says so."""
    current = TestRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
    if current is None:
        return
    with transaction.atomic():
        TestRun.objects.filter(pk=run_id).update(status_message=message)
        RunTransition.objects.create(
            run_id=run_id, from_status=current, to_status=current, by=by, message=message
        )


# --- Create -----------------------------------------------------------------------------------


def _check_parameters(parameters: Any) -> dict[str, str]:
    if not isinstance(parameters, dict):
        raise ApplicationError(
            "parameters must be an object of name -> value.", extra={"field": "parameters"}
        )
    if len(parameters) > MAX_PARAMETERS:
        raise ApplicationError(
            f"At most {MAX_PARAMETERS} parameters.", extra={"field": "parameters"}
        )
    clean: dict[str, str] = {}
    for key, value in parameters.items():
        if not PARAMETER_NAME.match(str(key)):
            raise ApplicationError(
                f"Parameter name {key!r} must be a letter or _ followed by letters, digits, _.",
                extra={"field": "parameters"},
            )
        if not isinstance(value, str | int | float | bool) or len(str(value)) > 4096:
            raise ApplicationError(
                f"Parameter {key!r} must be a string or number of at most 4096 characters.",
                extra={"field": "parameters"},
            )
        clean[str(key)] = str(value)
    return clean


def candidate_machines(
    *, case: TestCase, user: Actor, machine: Machine | None, label: str
) -> list[Machine]:
    """The machines this run may use, whether free now or not."""
    if machine is not None:
        machines = [machine]
    else:
        # A run whose requester was deleted keeps the machines it could ask for.
        visible = (
            machine_selectors.machine_list(user=user) if user is not None else Machine.objects.all()
        )
        machines = list(visible.filter(labels__name=label, enabled=True).distinct())
    if case.required_os:
        machines = [m for m in machines if m.os == case.required_os]
    return machines


def _board_labels(case: TestCase) -> list[str]:
    return list(case.board_labels.values_list("name", flat=True))


def _matching_boards(machine: Machine, case: TestCase, board: Board | None) -> list[Board]:
    boards = machine.boards.all()
    if board is not None:
        boards = boards.filter(pk=board.pk)
    for label in _board_labels(case):
        boards = boards.filter(labels__name=label)
    return list(boards)


@transaction.atomic
def run_create(
    *,
    actor: Actor,
    case: TestCase,
    machine: Machine | None = None,
    label: str = "",
    board: Board | None = None,
    parameters: dict[str, Any] | None = None,
    timeout: int | None = None,
    priority: int = 0,
    source: str = RunSource.API,
    retry_of: TestRun | None = None,
    case_version_id: int | None = None,
) -> TestRun:
    if case.archived:
        raise ConflictError(f"Test case {case.name} is archived.")
    if case.current_version_id is None:
        raise ConflictError(f"Test case {case.name} has no version to run.")
    if (machine is None) == (not label):
        raise ApplicationError(
            "Give either a machine or a machine label, not both.", extra={"field": "machine"}
        )
    if machine is not None and (
        actor is None or not machine_selectors.user_can_use_machine(user=actor, machine=machine)
    ):
        raise NotFoundError("No such machine.", extra={"field": "machine"})
    if board is not None:
        if machine is None or board.machine_id != machine.pk:
            raise ApplicationError(
                "A board can only be asked for together with its machine.",
                extra={"field": "board"},
            )
        if not case.needs_board:
            raise ApplicationError(
                f"Test case {case.name} does not use a board.", extra={"field": "board"}
            )
    if priority > 0 and not machine_selectors.is_admin(actor):  # type: ignore[arg-type]
        raise ApplicationError(
            "Only admins may raise a run's priority above 0.", extra={"field": "priority"}
        )
    machines = candidate_machines(case=case, user=actor, machine=machine, label=label)
    if not machines:
        where = f"machine {machine.name}" if machine else f"machine labelled {label!r}"
        os_note = f" running {case.required_os}" if case.required_os else ""
        raise ApplicationError(
            f"There is no {where}{os_note} you may use for this case.",
            extra={"field": "machine" if machine else "label"},
        )
    if case.needs_board and not any(_matching_boards(m, case, board) for m in machines):
        wanted = ", ".join(_board_labels(case)) or "any"
        raise ApplicationError(
            f"Test case {case.name} needs a board (labels: {wanted}) and none of the chosen "
            "machines has one.",
            extra={"field": "board"},
        )
    version = case.current_version
    if case_version_id is not None:
        version = case.versions.filter(pk=case_version_id).first()
        if version is None:
            raise NotFoundError("No such version of this case.", extra={"field": "case_version"})
    run = TestRun(
        case=case,
        case_version=version,
        requested_machine=machine,
        requested_label=label,
        requested_board=board,
        requested_by=as_user(actor),
        source=source,
        parameters=_check_parameters(parameters or {}),
        priority=priority,
        timeout=timeout or case.default_timeout,
        retry_of=retry_of,
        status_message="Queued.",
    )
    run.full_clean()
    run.save()
    RunTransition.objects.create(
        run=run, from_status=RunStatus.QUEUED, to_status=RunStatus.QUEUED, actor=as_user(actor),
        message="created",
    )  # fmt: skip
    from test_runner.services.scheduling import runs_dispatch_new

    runs_dispatch_new(run=run)
    return run


BROKER_DOWN_MESSAGE = "Queued; the task queue is unreachable, the run will be sent when it is back."


def run_dispatch_on_commit(*, run_ids: list[int]) -> None:
    """Sends the runs to the workers once the transaction commits. If the broker is down the
    runs stay QUEUED (nothing is lost), say so in their status message, and the periodic sweep
    sends them when it is back.

    A publish is tried once, without waiting for the broker (see
    CELERY_BROKER_TRANSPORT_OPTIONS): the caller, often an API request, gets its answer at
    once instead of after seconds of reconnect attempts."""

    def send() -> None:
        from test_runner.tasks import run_execute_task

        for index, run_id in enumerate(run_ids):
            TestRun.objects.filter(pk=run_id).update(dispatched_at=timezone.now())
            try:
                run_execute_task.apply_async(args=(run_id,), retry=False)
            except Exception as exc:  # noqa: BLE001  # any broker failure: the sweep retries
                unsent = run_ids[index:]
                logger.error(
                    "Could not dispatch runs %s (broker down?): %s",
                    ", ".join(map(str, unsent)), exc,
                )  # fmt: skip
                # Never sent: the sweep sends them on its next round, not a lost-message
                # timeout later. The rest are not tried: the broker is down for them too.
                TestRun.objects.filter(pk__in=unsent).update(dispatched_at=None)
                TestRun.objects.filter(pk__in=unsent, status=RunStatus.QUEUED).update(
                    status_message=BROKER_DOWN_MESSAGE
                )
                return

    transaction.on_commit(send)


# --- Control ----------------------------------------------------------------------------------


def run_cancel(*, run: TestRun, actor: Actor, reason: str = "") -> TestRun:
    """A queued run ends at once; a running one is stopped by its worker within a second
    (TERM to the remote process group, KILL after a grace period)."""
    who = as_user(actor)
    message = reason or f"Cancelled by {who.get_username() if who else 'the system'}."
    done = run_transition(
        run_id=run.pk, to=RunStatus.DONE, allowed_from=(RunStatus.QUEUED,), actor=actor,
        message=message, outcome=RunOutcome.CANCELLED, finished_at=timezone.now(),
        cancel_requested=True,
    )  # fmt: skip
    if done is not None:
        _release(done)
        return done
    updated = TestRun.objects.filter(pk=run.pk, status__in=ACTIVE).update(
        cancel_requested=True, status_message=f"Cancelling: {message}"
    )
    if not updated:
        raise ConflictError(f"Run {run.pk} has already finished.")
    RunTransition.objects.create(
        run_id=run.pk, from_status=run.status, to_status=run.status, actor=who,
        message=f"cancel requested: {message}",
    )  # fmt: skip
    return TestRun.objects.get(pk=run.pk)


def _check_pausable(run: TestRun) -> None:
    if run.status != RunStatus.RUNNING:
        raise ConflictError(f"Run {run.pk} is {run.status}; only a running run can be paused.")
    if run.machine is not None and run.machine.os == Machine.Os.WINDOWS:
        raise ConflictError(
            "Pausing is not supported on Windows machines (there is no safe way to suspend a "
            "process tree there); cancel the run instead."
        )


def run_pause(*, run: TestRun, actor: Actor) -> TestRun:
    _check_pausable(run)
    TestRun.objects.filter(pk=run.pk).update(pause_requested=True)
    RunTransition.objects.create(
        run_id=run.pk, from_status=run.status, to_status=run.status, actor=as_user(actor),
        message="pause requested",
    )  # fmt: skip
    return TestRun.objects.get(pk=run.pk)


def run_resume(*, run: TestRun, actor: Actor) -> TestRun:
    if run.status != RunStatus.RUNNING or not (run.pause_requested or run.paused_at):
        raise ConflictError(f"Run {run.pk} is not paused.")
    TestRun.objects.filter(pk=run.pk).update(pause_requested=False)
    RunTransition.objects.create(
        run_id=run.pk, from_status=run.status, to_status=run.status, actor=as_user(actor),
        message="resume requested",
    )  # fmt: skip
    return TestRun.objects.get(pk=run.pk)


def run_retry(*, run: TestRun, actor: Actor) -> TestRun:
    """A new run of the same case version, on the same request, linked to this one."""
    if not run.is_finished:
        raise ConflictError(f"Run {run.pk} has not finished; cancel it first.")
    return run_create(
        actor=actor,
        case=run.case,
        case_version_id=run.case_version_id,
        machine=run.requested_machine,
        label=run.requested_label,
        board=run.requested_board,
        parameters=run.parameters,
        timeout=run.timeout,
        priority=min(run.priority, 0) if not machine_selectors.is_admin(actor) else run.priority,  # type: ignore[arg-type]
        source=RunSource.RETRY,
        retry_of=run,
    )


# --- Finish -----------------------------------------------------------------------------------


def _release(run: TestRun) -> None:
    """Gives back the run's leases and lets waiting runs at the freed machine go."""
    machine_services.venv_release(holder=run.holder, reset=True)
    machine_services.board_release(holder=run.holder)
    machine_id = run.machine_id
    if machine_id is not None:
        from test_runner.services.scheduling import runs_dispatch_waiting

        # The freed board, or another READY slot of the machine, can serve a waiting run now;
        # the venv this run used joins later, when its reset makes it READY.
        transaction.on_commit(lambda: runs_dispatch_waiting(machine_id=machine_id))


@transaction.atomic  # DONE and the released leases are seen together, never one without the other
def run_finish(
    *,
    run_id: int,
    outcome: str,
    message: str,
    by: str,
    error_category: str = ErrorCategory.NONE,
    exit_code: int | None = None,
) -> TestRun | None:
    run = run_transition(
        run_id=run_id, to=RunStatus.DONE,
        allowed_from=(RunStatus.QUEUED, *ACTIVE), by=by, message=message,
        outcome=outcome, error_category=error_category, exit_code=exit_code,
        finished_at=timezone.now(), pause_requested=False, paused_at=None,
    )  # fmt: skip
    if run is not None:
        from test_runner.services.results import results_close_open

        results_close_open(run=run)
        _release(run)
    return run


def runs_needing_machine(machine: Machine) -> Q:
    """QUEUED runs that could use ``machine``."""
    labels = list(machine.labels.values_list("name", flat=True))
    return (
        Q(status=RunStatus.QUEUED)
        & ~Q(source=RunSource.EXTERNAL)
        & (
            Q(requested_machine=machine)
            | Q(requested_machine__isnull=True, requested_label__in=labels)
        )
    )
