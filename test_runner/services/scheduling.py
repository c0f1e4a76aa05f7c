"""When runs start: on an event (a slot freed), with a periodic sweep as the safety net."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from machines.models import Machine, Venv
from test_runner.models import ErrorCategory, RunEvent, RunOutcome, RunSource, RunStatus, TestRun
from test_runner.services.runs import (
    ACTIVE,
    run_dispatch_on_commit,
    run_finish,
    runs_needing_machine,
)

logger = logging.getLogger(__name__)


def stale_heartbeat() -> timedelta:
    """A worker silent this long is presumed dead; its run is resumed by another."""
    return timedelta(seconds=settings.RUN_STALE_HEARTBEAT_SECONDS)


# A QUEUED run sent this long ago and never picked up was lost on the way (broker trouble).
LOST_DISPATCH = timedelta(seconds=60)
# A run resumed this many times is failing for a reason resuming will not fix.
MAX_DISPATCHES = 25


def runs_dispatch_waiting(*, machine_id: int) -> list[int]:
    """Sends the best waiting runs (priority, then age) that could use ``machine_id`` now: as
    many as it has room for, less the runs already sent to it and not yet taken.

    A run whose message is in flight is not sent again (a worker that finds no slot clears
    ``dispatched_at``, so the run is considered at the next slot freed): a burst of runs then
    costs one message each instead of one per wake-up, and the messages that free slots
    (resets) are not queued behind hundreds of runs that could only bounce."""
    machine = Machine.objects.filter(pk=machine_id).first()
    if machine is None or not machine.is_usable:
        return []
    venvs = Venv.objects.filter(machine=machine)
    ready = venvs.filter(state=Venv.State.READY).count()
    leased = venvs.filter(state=Venv.State.LEASED).count()
    room = min(ready, machine.max_concurrent_runs - leased)
    if room <= 0:
        return []
    in_flight = Q(dispatched_at__gte=timezone.now() - LOST_DISPATCH)
    waiting = TestRun.objects.filter(runs_needing_machine(machine))
    room -= waiting.filter(in_flight).count()
    if room <= 0:
        return []
    with transaction.atomic():
        # Marked in flight at once, so that a second wake-up (another task, a new run's
        # commit) does not pick the same runs; a run locked by another dispatcher is skipped.
        ids = list(
            waiting.exclude(in_flight)
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("-priority", "queued_at", "pk")
            .values_list("pk", flat=True)[:room]
        )
        TestRun.objects.filter(pk__in=ids).update(dispatched_at=timezone.now())
    if ids:
        run_dispatch_on_commit(run_ids=ids)
    return ids


def runs_dispatch_new(*, run: TestRun) -> None:
    """Once a new run is committed, sends what its machines have room for: the run itself, or
    better runs that waited longer. If they are all busy it waits, unsent, for a slot to free
    (the sweep is the safety net)."""
    if run.requested_machine_id:
        machine_ids = [run.requested_machine_id]
    else:
        machine_ids = list(
            Machine.objects.filter(labels__name=run.requested_label, enabled=True)
            .distinct()
            .values_list("pk", flat=True)
        )

    def send() -> None:
        sent: list[int] = []
        for machine_id in machine_ids:
            sent += runs_dispatch_waiting(machine_id=machine_id)
        if run.pk not in sent:
            where = (
                f"machine {run.requested_machine}"
                if run.requested_machine_id
                else (f"the machines labelled {run.requested_label}")
            )
            TestRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED, dispatched_at=None).update(
                status_message=f"Waiting for a free slot on {where}."
            )

    transaction.on_commit(send)


def runs_sweep() -> dict[str, int]:
    """Periodic: resume runs whose worker died, re-send runs whose message was lost, and end
    runs that cannot be helped. Nothing stays RUNNING forever."""
    now = timezone.now()
    resumed, resent, failed = [], [], 0
    # Runs reported by an external runner have no worker to resume: they time out on their own.
    ours = TestRun.objects.exclude(source=RunSource.EXTERNAL)
    stale = ours.filter(status__in=ACTIVE).filter(
        Q(heartbeat_at__lt=now - stale_heartbeat()) | Q(heartbeat_at__isnull=True)
    )
    for run in stale.only("pk", "dispatch_count", "worker", "dispatched_at"):
        if run.dispatched_at and run.dispatched_at > now - stale_heartbeat():
            continue  # just re-sent; give the new worker time to take it
        if run.dispatch_count >= MAX_DISPATCHES:
            run_finish(
                run_id=run.pk, outcome=RunOutcome.ERROR,
                error_category=ErrorCategory.INFRASTRUCTURE, by="sweep",
                message=f"Gave up after {run.dispatch_count} attempts to run or resume it; the "
                f"last worker was {run.worker or 'unknown'}.",
            )  # fmt: skip
            failed += 1
            continue
        logger.warning("Run %s: worker %s went quiet; resuming it", run.pk, run.worker)
        resumed.append(run.pk)
    lost = ours.filter(status=RunStatus.QUEUED).filter(
        Q(dispatched_at__lt=now - LOST_DISPATCH) | Q(dispatched_at__isnull=True),
        queued_at__lt=now - timedelta(seconds=5),
    )
    # A QUEUED run that waits for a slot is not lost: it is sent again when one frees. Only
    # runs whose machine has a free slot right now are re-sent.
    free_machines = set(
        Venv.objects.filter(state=Venv.State.READY).values_list("machine_id", flat=True)
    )
    for run in lost.select_related("requested_machine").only(
        "pk", "requested_machine", "requested_label"
    ):
        if run.requested_machine_id and run.requested_machine_id not in free_machines:
            continue
        if (
            not run.requested_machine_id
            and not Machine.objects.filter(
                pk__in=free_machines, labels__name=run.requested_label
            ).exists()
        ):
            continue
        resent.append(run.pk)
    for run_id in resumed + resent:
        TestRun.objects.filter(pk=run_id).update(dispatched_at=now)
    if resumed or resent:
        run_dispatch_on_commit(run_ids=resumed + resent)
    return {"resumed": len(resumed), "resent": len(resent), "failed": failed}


def runs_retention(*, now: datetime | None = None) -> int:
    """Drops event logs and artifacts of runs finished more than RUN_EVENT_RETENTION_DAYS ago;
    the runs and their per-test results stay, so years of history stay cheap."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.RUN_EVENT_RETENTION_DAYS)
    old = TestRun.objects.filter(status=RunStatus.DONE, finished_at__lt=cutoff, events_purged=False)
    count = 0
    for run in old.iterator(chunk_size=200):
        RunEvent.objects.filter(run=run).delete()
        for artifact in run.artifacts.all():
            artifact.file.delete(save=False)
            artifact.delete()
        TestRun.objects.filter(pk=run.pk).update(events_purged=True)
        count += 1
    return count
