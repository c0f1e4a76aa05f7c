"""Builds: trigger, follow (queue item -> build number -> result), cancel, and recover.

The database row is the state; Jenkins is asked, never assumed. Every write after a call to
Jenkins is a compare-and-set on ``version``, so two poll chains for one build (a lost chain
re-dispatched by the sweep while the old one was only late) never both append the console: the
second one sees the version moved and stops.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from jenkins.client import (
    ConsoleChunk,
    JenkinsClient,
    JenkinsError,
    JenkinsNotFound,
    JenkinsRejected,
)
from jenkins.models import TRIGGER_PARAMETER, JenkinsBuild, JenkinsJob
from machines.services.audit import Actor, as_user, audit_record
from test_management_system.errors import ApplicationError, ConflictError
from test_runner.models import TestRun

logger = logging.getLogger(__name__)

# Poll every POLL_MIN seconds while something changes, slowing by half each time nothing does,
# up to POLL_MAX. Errors back off from ERROR_BACKOFF doubling up to ERROR_BACKOFF_MAX.
POLL_MIN = 1.0
POLL_MAX = 30.0
ERROR_BACKOFF = 5.0
ERROR_BACKOFF_MAX = 300.0
TRIGGER_MAX_ATTEMPTS = 5
# A build whose next poll is this overdue has lost its poll chain (a worker died, the broker
# lost the message); the sweep starts a new one.
LOST_CHAIN_GRACE = timedelta(minutes=2)
# Console kept per build; beyond it the start is dropped and the tail kept.
CONSOLE_LIMIT = 1_000_000
# At most this many progressiveText reads per poll, so that one poll never runs for long.
CONSOLE_READS_PER_POLL = 8
# Test cases kept from a report, and the length of each text field of a case.
MAX_TEST_CASES = 5000
MAX_CASE_TEXT = 10_000


@dataclass
class PollOutcome:
    """What a poll left: ``delay`` until the next poll, None when this chain should stop."""

    build: JenkinsBuild
    delay: float | None


@dataclass
class TriggerOutcome:
    build: JenkinsBuild
    # Seconds until the next attempt when Jenkins could not be reached; None otherwise.
    retry_in: float | None = None


def _now() -> datetime:
    return timezone.now()


def _error_delay(failures: int) -> float:
    return min(ERROR_BACKOFF_MAX, ERROR_BACKOFF * 2 ** max(0, failures - 1))


def _idle_delay(idle_polls: int) -> float:
    return min(POLL_MAX, POLL_MIN * 1.5**idle_polls)


def _save(build: JenkinsBuild, **fields: Any) -> bool:
    """Writes ``fields`` if nobody wrote the build since it was read; True if written."""
    now = _now()
    written = JenkinsBuild.objects.filter(pk=build.pk, version=build.version).update(
        version=F("version") + 1, updated_at=now, **fields
    )
    if written:
        for key, value in fields.items():
            setattr(build, key, value)
        build.version += 1
        build.updated_at = now
    return bool(written)


def _done_fields(result: str, message: str, finished_at: datetime | None = None) -> dict[str, Any]:
    return {
        "status": JenkinsBuild.Status.DONE,
        "result": result,
        "status_message": message,
        "finished_at": finished_at or _now(),
        "next_poll_at": None,
    }


def _too_old(build: JenkinsBuild) -> bool:
    hours = build.job.server.give_up_after_hours
    return _now() - build.created_at > timedelta(hours=hours)


def _give_up_fields(build: JenkinsBuild) -> dict[str, Any]:
    hours = build.job.server.give_up_after_hours
    last = build.status_message or "no news from Jenkins"
    return _done_fields(
        "",
        f"Stopped tracking this build: it did not finish within {hours} h of being triggered "
        f"(the server's limit). Last known state: {last}",
    )


# --- trigger ----------------------------------------------------------------------------------


@transaction.atomic
def jenkins_build_create(
    *,
    job: JenkinsJob,
    actor: Actor,
    source: str,
    parameters: dict[str, Any] | None = None,
    run: TestRun | None = None,
) -> JenkinsBuild:
    """Records a build to start and hands it to a worker once this transaction commits.
    ``run``: the test run it belongs to (the caller checked that the actor may see it)."""
    parameters = dict(parameters or {})
    if not job.enabled or not job.server.enabled:
        raise ConflictError(f"Job {job} is disabled here; an admin can enable it.")
    if TRIGGER_PARAMETER in parameters:
        raise ApplicationError(
            f"{TRIGGER_PARAMETER} is set by this service; do not send it.",
            extra={"field": "parameters"},
        )
    trigger_id = uuid.uuid4().hex
    sent = {
        **{k: str(v) for k, v in (job.parameter_defaults or {}).items()},
        **{k: "" if v is None else str(v) for k, v in parameters.items()},
        TRIGGER_PARAMETER: trigger_id,
    }
    build = JenkinsBuild.objects.create(
        job=job,
        trigger_id=trigger_id,
        parameters=sent,
        triggered_by=as_user(actor),
        run=run,
        status=JenkinsBuild.Status.QUEUED,
        status_message="Waiting to be sent to Jenkins.",
        next_poll_at=_now(),
    )
    audit_record(
        actor=actor, source=source, action="jenkins_build.trigger", target=build,
        changes={"job": str(job), "parameters": {k: v for k, v in sent.items()},
                 "run": run.pk if run is not None else None},
    )  # fmt: skip
    from jenkins.tasks import jenkins_build_trigger_task

    transaction.on_commit(lambda: jenkins_build_trigger_task.delay(build.pk))
    return build


def _parameters_of(entry: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for action in entry.get("actions") or []:
        for parameter in (action or {}).get("parameters") or []:
            if isinstance(parameter, dict) and "name" in parameter:
                found[parameter["name"]] = parameter.get("value")
    return found


def _find_by_trigger_id(client: JenkinsClient, build: JenkinsBuild) -> dict[str, Any] | None:
    """The queue item or build carrying our trigger id: {queue_id, number?, url?}, or None."""
    for item in client.queue_items():
        if _parameters_of(item).get(TRIGGER_PARAMETER) == build.trigger_id:
            return {"queue_id": item["id"]}
    for entry in client.builds(build.job.full_name):
        if _parameters_of(entry).get(TRIGGER_PARAMETER) == build.trigger_id:
            return {"queue_id": entry.get("queueId"), "number": entry["number"],
                    "url": entry.get("url", "")}  # fmt: skip
    return None


def _diagnose_trigger_error(
    client: JenkinsClient, job: JenkinsJob, error: JenkinsError
) -> JenkinsError:
    """A 500 to buildWithParameters is what Jenkins answers for a job without parameters: say
    so, and do not retry, rather than report an outage."""
    if error.extra.get("jenkins_status") != 500:
        return error
    try:
        info = client.job_info(job.full_name)
    except JenkinsError:
        return error
    defined = {
        p.get("name")
        for prop in info.get("property") or []
        for p in (prop or {}).get("parameterDefinitions") or []
    }
    if TRIGGER_PARAMETER in defined:
        return error
    return JenkinsRejected(
        f"Job {job.full_name} does not define the string parameter {TRIGGER_PARAMETER}, which "
        "this service sends with every build to recognise it (Jenkins refuses or drops "
        "parameters a job does not define). Add it to the job in Jenkins (default empty).",
        extra=error.extra,
    )


def jenkins_build_trigger(*, build: JenkinsBuild) -> TriggerOutcome:
    """Sends the build to Jenkins and records its queue item. Safe to call again: a second
    attempt first looks for our trigger id in Jenkins (the first may have arrived although we
    saw a timeout), and two callers never both send (the attempt is claimed first)."""
    build = JenkinsBuild.objects.select_related("job__server").get(pk=build.pk)
    if build.status != JenkinsBuild.Status.QUEUED or build.queue_id is not None:
        return TriggerOutcome(build)
    if _too_old(build):
        _save(build, **_give_up_fields(build))
        return TriggerOutcome(build)
    attempt = build.trigger_attempts + 1
    if not _save(build, trigger_attempts=attempt, next_poll_at=_now() + LOST_CHAIN_GRACE):
        return TriggerOutcome(build)  # another worker has this attempt

    job = build.job
    client = JenkinsClient.for_server(job.server)
    try:
        found = _find_by_trigger_id(client, build) if attempt > 1 else None
        queue_id = found["queue_id"] if found else client.build_job(job.full_name, build.parameters)
    except JenkinsError as exc:
        exc = _diagnose_trigger_error(client, job, exc)
        if exc.retryable and attempt < TRIGGER_MAX_ATTEMPTS:
            delay = _error_delay(attempt)
            _save(
                build,
                status_message=f"Could not send the build to Jenkins (attempt {attempt} of "
                f"{TRIGGER_MAX_ATTEMPTS}): {exc.message} Trying again in {delay:.0f} s.",
                next_poll_at=_now() + timedelta(seconds=delay),
            )
            return TriggerOutcome(build, retry_in=delay)
        tried = f" after {attempt} attempts" if attempt > 1 else ""
        _save(
            build,
            **_done_fields(
                JenkinsBuild.Result.NOT_BUILT, f"Jenkins did not start the build{tried}: "
                f"{exc.message}",
            ),
        )  # fmt: skip
        return TriggerOutcome(build)

    fields: dict[str, Any] = {
        "queue_id": queue_id,
        "status_message": "In the Jenkins queue.",
        "next_poll_at": _now() + timedelta(seconds=POLL_MIN),
        "poll_failures": 0,
    }
    if found and found.get("number"):
        fields.update(
            number=found["number"], url=found.get("url", ""), status=JenkinsBuild.Status.BUILDING,
            status_message=f"Build #{found['number']} found by its trigger id.",
        )  # fmt: skip
    # Conditional on still being QUEUED: a cancel may have come while we were sending.
    written = JenkinsBuild.objects.filter(
        pk=build.pk, status=JenkinsBuild.Status.QUEUED, queue_id__isnull=True
    ).update(version=F("version") + 1, updated_at=_now(), **fields)
    build.refresh_from_db()
    if not written and build.status == JenkinsBuild.Status.DONE and queue_id:
        # Cancelled while in flight: take it out of Jenkins' queue again.
        try:
            client.cancel_queue(queue_id)
        except JenkinsError as exc:
            logger.warning("Could not cancel queue item %s of %s: %s", queue_id, build, exc)
        JenkinsBuild.objects.filter(pk=build.pk).update(queue_id=queue_id)
        build.refresh_from_db()
    return TriggerOutcome(build)


# --- poll -------------------------------------------------------------------------------------


def append_console(text: str, dropped: int, new: str, limit: int | None = None) -> tuple[str, int]:
    """``text`` + ``new``, keeping at most ``limit`` characters (the tail) -> (text, dropped)."""
    limit = CONSOLE_LIMIT if limit is None else limit
    combined = text + new
    if len(combined) <= limit:
        return combined, dropped
    cut = len(combined) - limit
    # Cut at a line start when one is near, so the kept text does not begin mid-line.
    newline = combined.find("\n", cut, cut + 200)
    if newline != -1:
        cut = newline + 1
    return combined[cut:], dropped + cut


def console_marker(build: JenkinsBuild) -> str:
    """The line shown in place of the dropped start of a long console."""
    if not build.console_dropped:
        return ""
    where = f" The full log is at {build.url}consoleText." if build.url else ""
    return (
        f"[... the first {build.console_dropped} characters of this log are not kept here "
        f"(limit {CONSOLE_LIMIT} characters).{where} ...]\n"
    )


def _read_console(client: JenkinsClient, build: JenkinsBuild, number: int) -> dict[str, Any]:
    text, dropped, offset = build.console_text, build.console_dropped, build.console_offset
    chunk = ConsoleChunk(text="", next_offset=offset, more=True)
    for _ in range(CONSOLE_READS_PER_POLL):
        chunk = client.console(build.job.full_name, number, offset)
        if chunk.text:
            text, dropped = append_console(text, dropped, chunk.text)
        offset = chunk.next_offset
        if not chunk.more or not chunk.text:
            break
    return {
        "console_text": text,
        "console_dropped": dropped,
        "console_offset": offset,
        "console_complete": not chunk.more,
    }


def _clip(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_CASE_TEXT:
        return value[:MAX_CASE_TEXT] + "\n[... cut ...]"
    return value


def import_test_report(report: dict[str, Any]) -> dict[str, Any]:
    """Jenkins' testReport JSON -> our shape: counts plus a flat, bounded list of cases."""
    cases: list[dict[str, Any]] = []
    total = 0
    for suite in report.get("suites") or []:
        for case in suite.get("cases") or []:
            total += 1
            if len(cases) >= MAX_TEST_CASES:
                continue
            status = str(case.get("status") or "")
            cases.append(
                {
                    "suite": suite.get("name") or "",
                    "class_name": case.get("className") or "",
                    "name": case.get("name") or "",
                    "status": status,
                    # FIXED passed now; REGRESSION failed now: keep Jenkins' word, add ours.
                    "outcome": {"FIXED": "passed", "PASSED": "passed", "SKIPPED": "skipped",
                                "FAILED": "failed", "REGRESSION": "failed"}.get(status, "failed"),
                    "duration": case.get("duration") or 0.0,
                    "error_details": _clip(case.get("errorDetails")),
                    "error_stack_trace": _clip(case.get("errorStackTrace")),
                    "stdout": _clip(case.get("stdout")),
                    "stderr": _clip(case.get("stderr")),
                }
            )  # fmt: skip
    return {
        "passed": int(report.get("passCount") or 0),
        "failed": int(report.get("failCount") or 0),
        "skipped": int(report.get("skipCount") or 0),
        "duration": float(report.get("duration") or 0.0),
        "total_cases": total,
        "cases_truncated": total > len(cases),
        "cases": cases,
    }


def _from_millis(value: Any) -> datetime | None:
    if not isinstance(value, int | float) or value <= 0:
        return None
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def _poll_queue(client: JenkinsClient, build: JenkinsBuild) -> dict[str, Any]:
    """Where the queue item stands: the fields to write (a number once it has one)."""
    assert build.queue_id is not None
    who = build.cancel_requested_by.get_username() if build.cancel_requested_by else "a user"
    item = client.queue_item(build.queue_id)
    if item is None:
        # Jenkins forgets left items after about five minutes: find the build by queue id.
        for entry in client.builds(build.job.full_name):
            if entry.get("queueId") == build.queue_id:
                return {
                    "number": entry["number"],
                    "url": entry.get("url", ""),
                    "status": JenkinsBuild.Status.BUILDING,
                    "status_message": f"Build #{entry['number']} found by its queue id.",
                }
        return _done_fields(
            "",
            f"Jenkins no longer knows queue item {build.queue_id} (it forgets items about five "
            f"minutes after they leave the queue) and no build of {build.job.full_name} has "
            "that queue id: the item was cancelled in Jenkins or its build was deleted.",
        )
    if item.get("cancelled"):
        by = f" (cancel requested by {who})" if build.cancel_requested_at else " in Jenkins"
        return _done_fields(JenkinsBuild.Result.ABORTED, f"Cancelled in the queue{by}.")
    executable = item.get("executable")
    if executable and executable.get("number"):
        return {
            "number": executable["number"],
            "url": executable.get("url") or "",
            "status": JenkinsBuild.Status.BUILDING,
            "status_message": f"Build #{executable['number']} started.",
        }
    if build.cancel_requested_at is not None and not str(item.get("_class", "")).endswith(
        "LeftItem"
    ):
        client.cancel_queue(build.queue_id)
    if str(item.get("_class", "")).endswith("LeftItem"):
        message = "Left the queue; waiting for Jenkins to name the build."
    else:
        message = f"In the Jenkins queue: {item.get('why') or 'waiting'}."
    return {"status_message": message}


def _poll_build(client: JenkinsClient, build: JenkinsBuild, number: int) -> dict[str, Any]:
    job = build.job
    if build.cancel_requested_at is not None and build.status != JenkinsBuild.Status.DONE:
        client.stop_build(job.full_name, number)
    info = client.build_info(job.full_name, number)
    if info is None:
        return _done_fields(
            "",
            f"Build #{number} of {job.full_name} no longer exists in Jenkins (deleted, or "
            "discarded by the job's build rotation).",
        )
    fields: dict[str, Any] = {"url": info.get("url") or build.url}
    started = _from_millis(info.get("timestamp"))
    if started:
        fields["started_at"] = started
    # Read the console after the build info: once the info says finished, this read is final.
    fields.update(_read_console(client, build, number))
    result = info.get("result") or ""
    if info.get("building"):
        fields["status"] = JenkinsBuild.Status.BUILDING
        fields["status_message"] = f"Building #{number}" + (
            f"; result {result}, finishing." if result else "."
        )
        return fields
    report = client.test_report(job.full_name, number)
    fields["test_report"] = import_test_report(report) if report is not None else None
    duration = info.get("duration")
    finished = (
        started + timedelta(milliseconds=duration)
        if started and isinstance(duration, int | float)
        else None
    )
    tests = ""
    if fields["test_report"]:
        r = fields["test_report"]
        tests = f" Tests: {r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped."
    elif report is None:
        tests = " No test report."
    fields.update(_done_fields(result, f"Finished: {result or 'no result'}.{tests}", finished))
    return fields


def jenkins_build_poll(*, build: JenkinsBuild) -> PollOutcome:
    """Asks Jenkins once where the build is and records it. ``delay``: when to ask again."""
    build = JenkinsBuild.objects.select_related("job__server", "cancel_requested_by").get(
        pk=build.pk
    )
    if build.status == JenkinsBuild.Status.DONE:
        return PollOutcome(build, None)
    if _too_old(build):
        _save(build, **_give_up_fields(build))
        return PollOutcome(build, None)
    if build.queue_id is None:
        return PollOutcome(build, None)  # not sent yet: the trigger task has it

    now = _now()
    client = JenkinsClient.for_server(build.job.server)
    before = (build.status, build.number, build.console_offset)
    try:
        fields: dict[str, Any] = {}
        if build.number is None:
            fields = _poll_queue(client, build)
        number = fields.get("number") or build.number
        if number and fields.get("status") != JenkinsBuild.Status.DONE:
            fields.update(_poll_build(client, build, number))
    except JenkinsError as exc:
        failures = build.poll_failures + 1
        delay = _error_delay(failures)
        written = _save(
            build,
            poll_failures=failures,
            last_polled_at=now,
            next_poll_at=now + timedelta(seconds=delay),
            status_message=f"Cannot follow the build right now: {exc.message} "
            f"({failures} failed attempt{'s' if failures > 1 else ''} in a row; trying again "
            f"in {delay:.0f} s.)",
        )
        return PollOutcome(build, delay if written else None)
    if fields.get("status") == JenkinsBuild.Status.DONE:
        _save(build, last_polled_at=now, poll_failures=0, **fields)
        return PollOutcome(build, None)
    after = (
        fields.get("status", build.status),
        fields.get("number", build.number),
        fields.get("console_offset", build.console_offset),
    )
    idle = 0 if after != before else build.idle_polls + 1
    delay = _idle_delay(idle)
    written = _save(
        build,
        idle_polls=idle,
        poll_failures=0,
        last_polled_at=now,
        next_poll_at=now + timedelta(seconds=delay),
        **fields,
    )
    return PollOutcome(build, delay if written else None)


# --- cancel -----------------------------------------------------------------------------------


def jenkins_build_cancel(*, build: JenkinsBuild, actor: Actor, source: str) -> JenkinsBuild:
    """Cancels a build: unsent -> aborted at once; queued -> cancelItem; running -> stop.

    The request is recorded before Jenkins is asked, so the poll finishes the job (cancelling
    or stopping again) if Jenkins cannot be reached now; a JenkinsError still tells the caller.
    """
    build = JenkinsBuild.objects.select_related("job__server").get(pk=build.pk)
    if build.status == JenkinsBuild.Status.DONE:
        raise ConflictError(f"Build {build} has already finished ({build.result or 'no result'}).")
    user = as_user(actor)
    who = user.get_username() if user else "the system"
    now = _now()
    JenkinsBuild.objects.filter(pk=build.pk).update(
        cancel_requested_at=now, cancel_requested_by=user, updated_at=now
    )
    audit_record(actor=actor, source=source, action="jenkins_build.cancel", target=build)
    unsent = JenkinsBuild.objects.filter(
        pk=build.pk, status=JenkinsBuild.Status.QUEUED, queue_id__isnull=True
    ).update(
        version=F("version") + 1,
        **_done_fields(
            JenkinsBuild.Result.ABORTED, f"Cancelled by {who} before it reached Jenkins."
        ),
    )
    build.refresh_from_db()
    if unsent:
        return build
    client = JenkinsClient.for_server(build.job.server)
    try:
        if build.number is None and build.queue_id is not None:
            client.cancel_queue(build.queue_id)
        elif build.number is not None:
            client.stop_build(build.job.full_name, build.number)
    except JenkinsNotFound:
        pass  # gone already: the poll records how it ended
    from jenkins.tasks import jenkins_build_poll_task

    transaction.on_commit(lambda: jenkins_build_poll_task.delay(build.pk))
    return build


# --- recovery ---------------------------------------------------------------------------------


def jenkins_builds_lost() -> dict[str, list[int]]:
    """Unfinished builds whose trigger or poll chain is overdue: {"trigger": ids, "poll": ids}."""
    overdue = JenkinsBuild.objects.exclude(status=JenkinsBuild.Status.DONE).filter(
        next_poll_at__lt=_now() - LOST_CHAIN_GRACE
    )
    return {
        "trigger": list(overdue.filter(queue_id__isnull=True).values_list("pk", flat=True)),
        "poll": list(overdue.filter(queue_id__isnull=False).values_list("pk", flat=True)),
    }
