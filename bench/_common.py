"""What every benchmark needs: a PostgreSQL database of its own, Django set up on it, the
machine described, percentiles, and the final ``RESULT_JSON`` line.

A benchmark never touches development or test data: it creates ``tms_bench_<name>`` on the
PostgreSQL server at ``BENCH_PG_URL`` (default ``postgres://root@127.0.0.1:5432``), migrates
it, and drops it at the end. Its ``var/`` (secrets, file broker, media) is a temporary
directory, removed at the end too.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

PG_SERVER = os.environ.get("BENCH_PG_URL", "postgres://root@127.0.0.1:5432").rstrip("/")


def _admin_connect() -> Any:
    import psycopg

    return psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=3, autocommit=True)


def postgres_unavailable() -> str | None:
    """Why the benchmark PostgreSQL server cannot be used, or None if it can."""
    try:
        with _admin_connect() as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL at {PG_SERVER} is not reachable ({type(exc).__name__}: {exc})"
    return None


def _drop(name: str) -> None:
    with _admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def bench_django(name: str, **env: str) -> Iterator[str]:
    """Creates ``tms_bench_<name>``, points Django at it (test profile), migrates, yields the
    database URL; drops the database and the temporary var directory at the end."""
    database = f"tms_bench_{name}"
    url = f"{PG_SERVER}/{database}"
    _drop(database)
    with _admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    var_dir = tempfile.mkdtemp(prefix=f"tms-bench-{name}-")
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "TMS_ENV": "test",
            "DATABASE_URL": url,
            "TMS_VAR_DIR": var_dir,
            "LOG_LEVEL": "WARNING",
            **env,
        }
    )
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0, interactive=False)
        yield url
    finally:
        with suppress(Exception):
            from django.db import connections

            connections.close_all()
        _drop(database)
        shutil.rmtree(var_dir, ignore_errors=True)


def machine_info() -> dict[str, Any]:
    """The machine and database the figures were taken on."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with suppress(OSError):
        # Other work on the machine while measuring (a test suite, say) shows up here.
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    with suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    with suppress(Exception):
        from django.db import connection

        info["db_vendor"] = connection.vendor
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            info["db_version"] = cursor.fetchone()[0]
    return info


def describe(info: dict[str, Any]) -> str:
    return (
        f"machine: {info.get('cpus')} CPUs, {info.get('memory_gib', '?')} GiB, Python "
        f"{info.get('python')}, {info.get('db_vendor', '?')} {info.get('db_version', '')}, "
        f"load average {info.get('load_average_1m', '?')}"
    )


def percentile(values: Iterable[float], p: float) -> float:
    """The p-th percentile (0-100), linear between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def result(figures: dict[str, Any]) -> None:
    print("RESULT_JSON " + json.dumps(figures, default=str))


def skipped(reason: str) -> int:
    """Says clearly why the benchmark did not run; still a success for the runner."""
    print(f"SKIPPED: {reason}")
    result({"skipped": reason, "machine": machine_info()})
    return 0


def comparison(
    name: str,
    *,
    metric: str,
    unit: str,
    ours: float,
    naive: float,
    higher_is_better: bool,
    goal: str = "",
    met: bool | None = None,
    note: str = "",
) -> dict[str, Any]:
    """One side-by-side figure for the table ``bench/run.py`` prints.

    ``ratio`` is how many times better ours is than the naive design (> 1: ours is better),
    whichever direction "better" is for the metric.
    """
    if higher_is_better:
        ratio = ours / naive if naive else math.inf
    else:
        ratio = naive / ours if ours else math.inf
    return {
        "name": name,
        "metric": metric,
        "unit": unit,
        "ours": round(ours, 3),
        "naive": round(naive, 3),
        # Two significant figures below 1 (ours slower), one decimal above.
        "ratio": round(ratio, 1) if ratio >= 1 else float(f"{ratio:.2g}"),
        "goal": goal,
        "met": met,
        "note": note,
    }
