"""The Celery app. Every periodic task is listed here, in ``BEAT_SCHEDULE``, and nowhere else."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "test_management_system.settings")

app = Celery("test_management_system")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# name -> entry; the tasks themselves live in each app's tasks.py.
BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Leases whose holder stopped renewing them (a dead worker) are freed within a minute.
    "machines-leases-expire": {"task": "machines.leases_expire", "schedule": 30.0},
    "machines-check-all": {"task": "machines.check_all", "schedule": 300.0},
    # Jenkins builds whose trigger or poll chain was lost (a dead worker) are picked up again.
    "jenkins-builds-sweep": {"task": "jenkins.builds_sweep", "schedule": 60.0},
    # Run-finished callbacks due (a run just ended, or a retry's backoff is over) are sent.
    "jenkins-run-callbacks": {"task": "jenkins.run_callbacks_sweep", "schedule": 5.0},
    # Safety net only: runs start on events (slot freed, run created). This resumes runs whose
    # worker died and re-sends runs whose message the broker lost.
    "runs-sweep": {"task": "runs.sweep", "schedule": 10.0},
    "runs-retention": {"task": "runs.retention", "schedule": 24 * 3600.0},
    "runs-external-timeout": {"task": "runs.external_timeout", "schedule": 60.0},
}
app.conf.beat_schedule = BEAT_SCHEDULE


@task_prerun.connect
def _bind_task_id_to_logs(task_id: str | None = None, **_: Any) -> None:
    # Log lines written while a task runs carry its id, as request log lines carry theirs.
    from test_management_system.logging import request_id_var

    request_id_var.set(f"task:{task_id}" if task_id else "-")


@task_postrun.connect
def _unbind_task_id(**_: Any) -> None:
    from test_management_system.logging import request_id_var

    request_id_var.set("-")
