from __future__ import annotations

import os
import socket

from celery import shared_task
from django.db import connection


@shared_task(name="system.ping", ignore_result=False)
def ping_task() -> dict[str, object]:
    """Proves a worker is alive and can reach the database (used by tests and operators)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (one,) = cursor.fetchone()
    return {
        "pong": True,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "database": connection.vendor,
        "database_ok": one == 1,
    }
