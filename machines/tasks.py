from __future__ import annotations

import logging

from celery import current_app, shared_task

from machines import services
from machines.models import Machine, Venv
from machines.signals import slot_freed

logger = logging.getLogger(__name__)


@shared_task(name="machines.check", acks_late=True)
def machine_check_task(machine_id: int) -> dict[str, object]:
    machine = Machine.objects.filter(pk=machine_id).first()
    if machine is None:
        return {"ok": False, "message": f"machine {machine_id} no longer exists"}
    result = services.machine_check(machine=machine, source="system")
    return {"ok": result.ok, "status": result.status, "message": result.message}


@shared_task(name="machines.check_all")
def machines_check_all_task() -> int:
    """Periodic: queues a check of every enabled machine (each its own task, in parallel)."""
    ids = list(Machine.objects.filter(enabled=True).values_list("pk", flat=True))
    for machine_id in ids:
        machine_check_task.delay(machine_id)
    return len(ids)


@shared_task(name="machines.pool_ensure", acks_late=True)
def venv_pool_ensure_task(machine_id: int, size: int, python: str | None = None) -> list[str]:
    machine = Machine.objects.filter(pk=machine_id).first()
    if machine is None:
        return []
    venvs = services.venv_pool_ensure(
        machine=machine, size=size, python=python, actor=None, source="system"
    )
    if any(v.state == Venv.State.READY for v in venvs):
        _slot_freed(machine.pk)
    return [f"{v.slot}:{v.state}" for v in venvs]


@shared_task(name="machines.venv_reset", acks_late=True)
def venv_reset_task(venv_id: int) -> str:
    venv = Venv.objects.filter(pk=venv_id).first()
    if venv is None:
        return "gone"
    state = services.venv_reset(venv=venv).state
    if state == Venv.State.READY:
        _slot_freed(venv.machine_id)
    return state


def _slot_freed(machine_id: int) -> None:
    # A slot is free: runs waiting for this machine start now, not at the next sweep, and in
    # this process (the app that runs tests listens to the signal) rather than after one more
    # trip through a queue that may be long. Without a listener, the task is sent by name.
    responses = slot_freed.send_robust(sender=Machine, machine_id=machine_id)
    failed = [response for _, response in responses if isinstance(response, Exception)]
    for error in failed:
        logger.error("Dispatching runs for machine %s failed: %r", machine_id, error)
    if not responses or failed:
        current_app.send_task("runs.dispatch_waiting", args=[machine_id])


@shared_task(name="machines.leases_expire")
def leases_expire_task() -> dict[str, int]:
    """Periodic: frees leases whose holder stopped renewing them (a dead worker, a lost run)."""
    return services.leases_expire()
