from __future__ import annotations

from celery import shared_task

from test_runner import services
from test_runner.execution import run_execute


# acks_late + reject_on_worker_lost: a worker killed mid-run gives the message back, and the
# task is idempotent (it resumes from the last stored seq), so a second delivery is safe.
@shared_task(name="runs.execute", acks_late=True, reject_on_worker_lost=True)
def run_execute_task(run_id: int) -> str:
    return run_execute(run_id=run_id)


@shared_task(name="runs.dispatch_waiting")
def runs_dispatch_waiting_task(machine_id: int) -> list[int]:
    """Sent when a slot frees on a machine (a venv became READY): start who waits for it."""
    return services.runs_dispatch_waiting(machine_id=machine_id)


@shared_task(name="runs.sweep")
def runs_sweep_task() -> dict[str, int]:
    return services.runs_sweep()


@shared_task(name="runs.retention")
def runs_retention_task() -> int:
    return services.runs_retention()


from test_runner.ingest.tasks import external_runs_timeout_task  # noqa: E402, F401  # registered
