from __future__ import annotations

from celery import shared_task

from test_runner.ingest import services


@shared_task(name="runs.external_timeout")
def external_runs_timeout_task() -> int:
    return services.external_runs_timeout()
