"""Liveness (``/health/``) and readiness (``/health/ready/``) for load balancers and operators."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError, connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from kombu import Connection

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 3


def check_database() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker() -> None:
    with Connection(
        settings.CELERY_BROKER_URL,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        connect_timeout=BROKER_TIMEOUT_SECONDS,
    ) as conn:
        conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
        # Opening a channel makes the transport really talk to the server (Redis: a PING).
        conn.default_channel  # noqa: B018


def database_wait(*, timeout: float) -> bool:
    """After a lost database connection (the server restarted, a failover): drops this
    thread's broken connections and tries again, with backoff, until the database answers.
    False if it did not within ``timeout`` seconds. Django reconnects only between requests
    and tasks; a long task (a run streaming for hours) calls this to carry on."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        for conn in connections.all(initialized_only=True):
            with contextlib.suppress(DatabaseError):  # it is broken: that is why it goes
                conn.close()
        try:
            check_database()
            return True
        except DatabaseError as exc:
            if time.monotonic() + delay > deadline:
                logger.error("The database did not come back in %.0f s: %s", timeout, exc)
                return False
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


CHECKS: dict[str, Callable[[], None]] = {"database": check_database, "broker": check_broker}


def _safe_reason(exc: Exception) -> str:
    # Connection errors can carry the URL; never echo credentials back.
    text = f"{type(exc).__name__}: {exc}"
    for secret_url in (settings.CELERY_BROKER_URL, settings.REDIS_URL):
        if secret_url:
            text = text.replace(secret_url, "<broker url>")
    password = settings.DATABASES["default"].get("PASSWORD")
    if password:
        text = text.replace(str(password), "***")
    return text[:300]


@never_cache
@require_GET
def live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def ready(request: HttpRequest) -> JsonResponse:
    results: dict[str, dict[str, object]] = {}
    down: list[str] = []
    for name, check in CHECKS.items():
        started = time.monotonic()
        try:
            check()
        except Exception as exc:  # noqa: BLE001  # any failure means "not ready", with the reason
            logger.warning("Readiness check %s failed: %s", name, _safe_reason(exc))
            results[name] = {"ok": False, "error": _safe_reason(exc)}
            down.append(name)
        else:
            results[name] = {"ok": True}
        results[name]["ms"] = round((time.monotonic() - started) * 1000, 1)
    body: dict[str, object] = {"status": "ok" if not down else "unavailable", "checks": results}
    if down:
        body["down"] = down
    return JsonResponse(body, status=503 if down else 200)
