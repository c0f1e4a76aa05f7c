"""A real Celery worker process on the test database and the configured broker."""

import pytest
from django.conf import settings

from test_management_system.celery import BEAT_SCHEDULE, app
from test_management_system.tasks import ping_task

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_worker_runs_a_task_that_reaches_the_database(celery_worker):
    result = ping_task.apply_async().get(timeout=30)
    assert result["pong"] is True
    assert result["database_ok"] is True
    expected_vendor = (
        "postgresql" if "postgresql" in settings.DATABASES["default"]["ENGINE"] else "sqlite"
    )
    assert result["database"] == expected_vendor


def test_worker_takes_tasks_one_at_a_time_from_the_test_queue(celery_worker):
    # prefetch 1: long runs must never wait behind another run on a busy worker.
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_default_queue == "tms-test"
    results = [ping_task.apply_async() for _ in range(6)]
    pids = {r.get(timeout=30)["pid"] for r in results}
    assert 1 <= len(pids) <= 2  # served by the worker's prefork children


def test_periodic_schedule_names_only_registered_tasks():
    app.loader.import_default_modules()  # what a worker does at start: autodiscover the tasks
    assert BEAT_SCHEDULE
    for entry in BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks
