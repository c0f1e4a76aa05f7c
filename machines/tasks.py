from __future__ import annotations

from celery import shared_task

from machines import services
from machines.models import Machine, Venv


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
    return [f"{v.slot}:{v.state}" for v in venvs]


@shared_task(name="machines.venv_reset", acks_late=True)
def venv_reset_task(venv_id: int) -> str:
    venv = Venv.objects.filter(pk=venv_id).first()
    if venv is None:
        return "gone"
    return services.venv_reset(venv=venv).state


@shared_task(name="machines.leases_expire")
def leases_expire_task() -> dict[str, int]:
    """Periodic: frees leases whose holder stopped renewing them (a dead worker, a lost run)."""
    return services.leases_expire()
