"""Run-finished callbacks: a URL registered on a run is POSTed to once the run has finished.

Delivery never holds a run up: the run finishes as always, and a periodic sweep claims the
callbacks of finished runs that are due and hands each to its own task. A failed POST is
retried with exponential backoff (5 s doubling, up to 10 minutes, 10 attempts in all); every
attempt is recorded on the callback, which the API shows.

Only hosts listed in ``RUN_CALLBACK_ALLOWED_HOSTS`` may be called, checked when the callback
is registered and again when it is sent, and redirects are not followed: otherwise anyone
with an account could make this service send requests to internal addresses it can reach
(server-side request forgery).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from jenkins.models import RunCallback
from machines.services.audit import Actor, as_user, audit_record
from test_management_system.errors import ApplicationError
from test_runner.models import RunStatus, TestRun

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 10
BACKOFF = 5.0
BACKOFF_MAX = 600.0
# A claimed callback is left alone this long by other sweeps: more than one delivery takes.
CLAIM = timedelta(seconds=60)
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
# Callbacks claimed per sweep; the rest wait for the next one (every 5 s).
SWEEP_BATCH = 100
MAX_ERROR_TEXT = 2000


def _allowed_hosts() -> list[str]:
    return [h.strip().lower().rstrip(".") for h in settings.RUN_CALLBACK_ALLOWED_HOSTS if h.strip()]


def callback_host_allowed(host: str, allowed: list[str]) -> bool:
    """``host`` equals an entry, or is ``d`` or under it for an entry ``.d``."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        if entry.startswith("."):
            if host == entry[1:] or host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False


def callback_url_check(url: str) -> str:
    """The URL, stripped, if callbacks may be sent there; ApplicationError saying why not."""
    url = url.strip()
    allowed = _allowed_hosts()
    if not allowed:
        raise ApplicationError(
            "Run callbacks are disabled on this server: an admin must list the hosts they may "
            "go to in RUN_CALLBACK_ALLOWED_HOSTS (for example the Jenkins controller).",
            extra={"field": "url"},
        )
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError:
        raise ApplicationError(f"Not a valid URL: {url!r}.", extra={"field": "url"}) from None
    if parts.scheme not in ("http", "https") or not host:
        raise ApplicationError(
            "A callback URL must be an http:// or https:// URL with a host.", extra={"field": "url"}
        )
    if parts.username is not None or parts.password is not None:
        raise ApplicationError(
            "A callback URL must not carry credentials (they would be stored and shown).",
            extra={"field": "url"},
        )
    if not callback_host_allowed(host, allowed):
        raise ApplicationError(
            f"Callbacks to {host} are not allowed on this server; allowed hosts: "
            f"{', '.join(allowed)} (RUN_CALLBACK_ALLOWED_HOSTS).",
            extra={"field": "url"},
        )
    return url


@transaction.atomic
def run_callback_create(
    *, run: TestRun, url: str, actor: Actor, source: str, base_url: str = ""
) -> tuple[RunCallback, bool]:
    """Registers ``url`` to be told when ``run`` finishes; (callback, created). Registering the
    same URL twice returns the first one, so a client may safely send the request again."""
    url = callback_url_check(url)
    existing = RunCallback.objects.filter(run=run, url=url).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            callback = RunCallback.objects.create(
                run=run,
                url=url,
                base_url=base_url.rstrip("/"),
                created_by=as_user(actor),
                next_attempt_at=timezone.now(),
            )
    except IntegrityError:  # the same request, twice at once
        return RunCallback.objects.get(run=run, url=url), False
    audit_record(
        actor=actor, source=source, action="run_callback.create", target=callback,
        changes={"run": run.pk, "url": url},
    )  # fmt: skip
    return callback, True


def _delay(attempts: int) -> float:
    return min(BACKOFF_MAX, BACKOFF * 2 ** max(0, attempts - 1))


def run_callbacks_claim_due(*, now: datetime | None = None) -> list[int]:
    """Ids of pending callbacks whose run has finished and whose time has come, each claimed
    (its next attempt moved past the claim period) so that no other sweep takes it."""
    now = now or timezone.now()
    due = list(
        RunCallback.objects.filter(
            state=RunCallback.State.PENDING,
            run__status=RunStatus.DONE,
            next_attempt_at__lte=now,
        )
        .order_by("next_attempt_at", "id")
        .values_list("id", "next_attempt_at")[:SWEEP_BATCH]
    )
    claimed = []
    for callback_id, seen in due:
        if RunCallback.objects.filter(
            pk=callback_id, state=RunCallback.State.PENDING, next_attempt_at=seen
        ).update(next_attempt_at=now + CLAIM):
            claimed.append(callback_id)
    return claimed


def callback_payload(callback: RunCallback) -> dict[str, Any]:
    run = callback.run
    api = f"{callback.base_url}/api/v1/runs/{run.pk}/"
    return {
        "event": "run.finished",
        "run": {
            "id": run.pk,
            "case": run.case.name,
            "status": run.status,
            "outcome": run.outcome,
            "error_category": run.error_category,
            "status_message": run.status_message,
            "machine": run.machine.name if run.machine_id and run.machine else None,
            "source": run.source,
            "counts": {
                "planned": run.planned,
                "passed": run.passed,
                "failed": run.failed,
                "errors": run.errors,
                "skipped": run.skipped,
            },
            "queued_at": run.queued_at.isoformat() if run.queued_at else None,
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        },
        "links": {
            "run": api,
            "events": f"{api}events/",
            "log": f"{api}log",
            "results": f"{api}results/",
            "junit": f"{api}junit.xml",
        },
    }


def _record(callback: RunCallback, **fields: Any) -> RunCallback:
    for key, value in fields.items():
        setattr(callback, key, value)
    callback.save(update_fields=[*fields, "updated_at"])
    return callback


def run_callback_deliver(*, callback_id: int) -> RunCallback | None:
    """One delivery attempt: POST the payload; record the answer; schedule the next attempt
    on failure, or give up after MAX_ATTEMPTS. Idempotent: a delivered one is left alone."""
    callback = (
        RunCallback.objects.select_related("run__case", "run__machine")
        .filter(pk=callback_id)
        .first()
    )
    if callback is None or callback.state != RunCallback.State.PENDING:
        return callback
    if not callback.run.is_finished:
        return callback
    now = timezone.now()
    attempts = callback.attempts + 1
    try:
        callback_url_check(callback.url)
    except ApplicationError as exc:
        # The allowed hosts changed since it was registered: never send it.
        return _record(
            callback, state=RunCallback.State.FAILED, attempts=attempts, last_attempt_at=now,
            last_error=f"Not sent: {exc.message}", next_attempt_at=None,
        )  # fmt: skip
    body = json.dumps(callback_payload(callback)).encode("utf-8")
    error, status_code = "", None
    try:
        response = requests.post(
            callback.url,
            data=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": "tms-run-callback/1",
                "X-TMS-Event": "run.finished",
                "X-TMS-Delivery": f"{callback.pk}.{attempts}",
            },
            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            allow_redirects=False,
        )
        status_code = response.status_code
        if not 200 <= status_code < 300:
            text = response.text[:300].strip()
            error = f"HTTP {status_code}" + (f": {text}" if text else "")
            if 300 <= status_code < 400:
                error += " (redirects are not followed)"
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}: {exc}"
    if not error:
        logger.info("Run %s callback %s delivered", callback.run_id, callback.pk)
        return _record(
            callback, state=RunCallback.State.DELIVERED, attempts=attempts, last_attempt_at=now,
            last_status_code=status_code, last_error="", delivered_at=timezone.now(),
            next_attempt_at=None,
        )  # fmt: skip
    error = error[:MAX_ERROR_TEXT]
    if attempts >= MAX_ATTEMPTS:
        logger.warning(
            "Run %s callback %s failed for good: %s", callback.run_id, callback.pk, error
        )
        return _record(
            callback, state=RunCallback.State.FAILED, attempts=attempts, last_attempt_at=now,
            last_status_code=status_code, next_attempt_at=None,
            last_error=f"Gave up after {attempts} attempts. Last: {error}",
        )  # fmt: skip
    delay = _delay(attempts)
    logger.info(
        "Run %s callback %s failed (%s); retry in %.0f s",
        callback.run_id,
        callback.pk,
        error,
        delay,
    )
    return _record(
        callback, attempts=attempts, last_attempt_at=now, last_status_code=status_code,
        last_error=error, next_attempt_at=now + timedelta(seconds=delay),
    )  # fmt: skip
