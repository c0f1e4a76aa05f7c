"""Reads, with access checks.

Servers (and their settings) are for admins. Jobs and builds are visible to every signed-in
user: a lab shares its CI. Tokens are their owner's; admins see all of them, to revoke a leaked
one.
"""

from __future__ import annotations

from django.db.models import QuerySet

from jenkins.models import ApiToken, JenkinsBuild, JenkinsJob, JenkinsServer, RunCallback
from machines.selectors import User, is_admin
from test_runner import selectors as run_selectors
from test_runner.models import TestRun


def server_list(*, user: User) -> QuerySet[JenkinsServer]:
    if not is_admin(user):
        return JenkinsServer.objects.none()
    return JenkinsServer.objects.all()


def job_list(*, user: User) -> QuerySet[JenkinsJob]:
    if not user.is_authenticated:
        return JenkinsJob.objects.none()
    return JenkinsJob.objects.select_related("server")


def build_list(*, user: User) -> QuerySet[JenkinsBuild]:
    if not user.is_authenticated:
        return JenkinsBuild.objects.none()
    return JenkinsBuild.objects.select_related("job__server", "triggered_by")


def run_visible(*, user: User, run_id: int) -> TestRun | None:
    """The run if ``user`` may see it (their own, or any for an admin), else None."""
    return run_selectors.run_list(user=user).filter(pk=run_id).first()


def user_can_control_run(*, user: User, run: TestRun) -> bool:
    return run_selectors.user_can_control_run(user=user, run=run)


def run_build_list(*, user: User, run: TestRun) -> QuerySet[JenkinsBuild]:
    return build_list(user=user).filter(run=run)


def run_callback_list(*, run: TestRun) -> QuerySet[RunCallback]:
    return RunCallback.objects.filter(run=run).select_related("created_by")


def user_can_cancel_build(*, user: User, build: JenkinsBuild) -> bool:
    return is_admin(user) or (user.is_authenticated and build.triggered_by_id == user.pk)


def token_list(*, user: User) -> QuerySet[ApiToken]:
    if not user.is_authenticated:
        return ApiToken.objects.none()
    qs = ApiToken.objects.select_related("user")
    return qs if is_admin(user) else qs.filter(user_id=user.pk)
