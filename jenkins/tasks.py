"""Thin tasks: take ids, call a service, schedule what comes next.

Polling is a chain, not a loop in one task: each poll schedules the next with a countdown, so no
worker is held while Jenkins builds, and a lost chain (a killed worker, a lost message) is
picked up by the periodic sweep. Both tasks are idempotent (see the services), so acks_late.
"""

from __future__ import annotations

from celery import shared_task

from jenkins import services
from jenkins.models import JenkinsBuild
from jenkins.services.builds import POLL_MIN


@shared_task(name="jenkins.build_trigger", acks_late=True)
def jenkins_build_trigger_task(build_id: int) -> str:
    build = JenkinsBuild.objects.filter(pk=build_id).first()
    if build is None:
        return "gone"
    outcome = services.jenkins_build_trigger(build=build)
    if outcome.retry_in is not None:
        jenkins_build_trigger_task.apply_async((build_id,), countdown=outcome.retry_in)
    elif outcome.build.queue_id is not None and not outcome.build.is_done:
        jenkins_build_poll_task.apply_async((build_id,), countdown=POLL_MIN)
    return outcome.build.status


@shared_task(name="jenkins.build_poll", acks_late=True)
def jenkins_build_poll_task(build_id: int) -> str:
    build = JenkinsBuild.objects.filter(pk=build_id).first()
    if build is None:
        return "gone"
    outcome = services.jenkins_build_poll(build=build)
    if outcome.delay is not None:
        jenkins_build_poll_task.apply_async((build_id,), countdown=outcome.delay)
    return outcome.build.status


@shared_task(name="jenkins.builds_sweep")
def jenkins_builds_sweep_task() -> dict[str, int]:
    """Periodic: restarts the trigger or poll chain of builds whose chain was lost."""
    lost = services.jenkins_builds_lost()
    for build_id in lost["trigger"]:
        jenkins_build_trigger_task.delay(build_id)
    for build_id in lost["poll"]:
        jenkins_build_poll_task.delay(build_id)
    return {kind: len(ids) for kind, ids in lost.items()}


@shared_task(name="jenkins.run_callbacks_sweep")
def run_callbacks_sweep_task() -> int:
    """Periodic (every 5 s): sends each due callback of a finished run in its own task."""
    claimed = services.run_callbacks_claim_due()
    for callback_id in claimed:
        run_callback_deliver_task.delay(callback_id)
    return len(claimed)


@shared_task(name="jenkins.run_callback_deliver")
def run_callback_deliver_task(callback_id: int) -> str:
    callback = services.run_callback_deliver(callback_id=callback_id)
    return callback.state if callback is not None else "gone"
