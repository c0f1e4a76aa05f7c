"""Storing runner events in batches, the per-test results they imply, and exports (log, JUnit)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree as ET

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from test_runner.models import RunEvent, TestResult, TestRun

# Log-carrying events past the run's cap keep their row (seq stays gap-free) but not their text.
LOG_TYPES = frozenset({"log", "serial"})
FINAL_OUTCOMES = {
    "passed": TestResult.Outcome.PASSED,
    "failed": TestResult.Outcome.FAILED,
    "error": TestResult.Outcome.ERROR,
    "skipped": TestResult.Outcome.SKIPPED,
    "xfailed": TestResult.Outcome.XFAILED,
    "xpassed": TestResult.Outcome.XPASSED,
}


def _ts(value: Any) -> dt.datetime:
    parsed = parse_datetime(str(value)) if value else None
    if parsed is None:
        return timezone.now()
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, dt.UTC)


def _text_size(event: dict[str, Any]) -> int:
    return len(str(event.get("message", ""))) + len(str(event.get("data", "")))


def events_store(
    *, run: TestRun, events: list[dict[str, Any]], events_offset: int | None = None
) -> int:
    """Stores events with seq above the run's last one, applies them to the results, and
    advances the run's read position, all in one transaction. Returns how many were new."""
    fresh = sorted(
        (e for e in events if int(e.get("seq", 0)) > run.last_seq), key=lambda e: e["seq"]
    )
    cap = settings.RUN_LOG_MAX_BYTES
    log_bytes = run.log_bytes
    truncated = run.log_truncated
    rows = []
    for event in fresh:
        data = {k: v for k, v in event.items() if k not in ("seq", "ts", "type")}
        if event.get("type") in LOG_TYPES:
            size = _text_size(event)
            if log_bytes + size > cap:
                if not truncated:
                    data = {
                        "source": "server", "level": "WARNING", "truncated": True,
                        "message": f"[log truncated: this run's log passed {cap} bytes; later "
                        "log lines are dropped, test results are still recorded]",
                    }  # fmt: skip
                    truncated = True
                else:
                    data = {"dropped": True}
            else:
                log_bytes += size
        rows.append(
            RunEvent(
                run_id=run.pk, seq=int(event["seq"]), ts=_ts(event.get("ts")),
                type=str(event.get("type", ""))[:20], data=data,
            )
        )  # fmt: skip
    with transaction.atomic():
        _insert_events(rows)
        _apply(run, fresh)
        updates: dict[str, Any] = {"heartbeat_at": timezone.now()}
        if fresh:
            updates.update(last_seq=fresh[-1]["seq"], log_bytes=log_bytes, log_truncated=truncated)
        if events_offset is not None:
            updates["events_offset"] = events_offset
        TestRun.objects.filter(pk=run.pk).update(**updates)
    for key, value in updates.items():
        setattr(run, key, value)
    return len(fresh)


# Batches this small are not worth a COPY.
COPY_THRESHOLD = 50


def _insert_events(rows: list[RunEvent]) -> None:
    """Inserts the rows, skipping any (run, seq) already stored: a batch stored twice (a
    resumed worker) adds nothing. On PostgreSQL through COPY, which is several times faster
    than an INSERT whose every value psycopg must quote in Python."""
    if connection.vendor != "postgresql" or len(rows) < COPY_THRESHOLD:
        RunEvent.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
        return
    table = connection.ops.quote_name(RunEvent._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS tms_event_batch (run_id bigint, seq integer, "
            "ts timestamptz, type varchar(20), data jsonb) ON COMMIT DELETE ROWS"
        )
        raw = cursor.cursor  # the psycopg cursor under Django's wrapper
        with raw.copy("COPY tms_event_batch (run_id, seq, ts, type, data) FROM STDIN") as copy:
            for row in rows:
                copy.write_row((row.run_id, row.seq, row.ts, row.type, json.dumps(row.data)))
        cursor.execute(
            f"INSERT INTO {table} (run_id, seq, ts, type, data) "  # noqa: S608  # quoted name
            "SELECT run_id, seq, ts, type, data FROM tms_event_batch "
            "ON CONFLICT (run_id, seq) DO NOTHING"
        )


def _apply(run: TestRun, events: list[dict[str, Any]]) -> None:
    touched_results = False
    child_pid = None
    for event in events:
        kind = event.get("type")
        if kind == "plan":
            tests = event.get("tests") or []
            existing = set(TestResult.objects.filter(run=run).values_list("test_id", flat=True))
            TestResult.objects.bulk_create(
                [
                    TestResult(
                        run=run,
                        order=i,
                        test_id=str(t.get("id"))[:1000],
                        name=str(t.get("name") or t.get("id"))[:500],
                        file=str(t.get("file") or "")[:500],
                    )
                    for i, t in enumerate(tests)
                    if str(t.get("id")) not in existing
                ],
                ignore_conflicts=True,
            )
            TestRun.objects.filter(pk=run.pk).update(planned=len(tests))
            run.planned = len(tests)
        elif kind == "test_start":
            test_id = str(event.get("test"))[:1000]
            updated = TestResult.objects.filter(run=run, test_id=test_id).update(
                outcome=TestResult.Outcome.RUNNING, started_at=_ts(event.get("ts"))
            )
            if not updated:
                order = TestResult.objects.filter(run=run).count()
                TestResult.objects.create(
                    run=run, order=order, test_id=test_id, name=test_id[:500],
                    outcome=TestResult.Outcome.RUNNING, started_at=_ts(event.get("ts")),
                )  # fmt: skip
        elif kind == "test_end":
            test_id = str(event.get("test"))[:1000]
            fields = {
                "outcome": FINAL_OUTCOMES.get(str(event.get("outcome")), TestResult.Outcome.ERROR),
                "duration": event.get("duration_s"),
                "message": str(event.get("message") or "")[:8192],
                "assertions": event.get("assertions") or [],
                "finished_at": _ts(event.get("ts")),
            }
            if not TestResult.objects.filter(run=run, test_id=test_id).update(**fields):
                order = TestResult.objects.filter(run=run).count()
                TestResult.objects.create(
                    run=run, order=order, test_id=test_id, name=test_id[:500], **fields
                )
            touched_results = True
        elif kind == "heartbeat" and event.get("child_pid"):
            child_pid = event.get("child_pid")
    if touched_results:
        _recount(run)
    if child_pid:
        run.child_pid = int(child_pid)  # type: ignore[attr-defined]  # read by the executor


def _recount(run: TestRun) -> None:
    outcomes = TestResult.Outcome
    counts = TestResult.objects.filter(run=run).aggregate(
        passed=Count("pk", filter=Q(outcome__in=[outcomes.PASSED, outcomes.XFAILED])),
        failed=Count("pk", filter=Q(outcome__in=[outcomes.FAILED, outcomes.XPASSED])),
        errors=Count("pk", filter=Q(outcome=outcomes.ERROR)),
        skipped=Count("pk", filter=Q(outcome=outcomes.SKIPPED)),
    )
    TestRun.objects.filter(pk=run.pk).update(**counts)
    for key, value in counts.items():
        setattr(run, key, value)


def results_close_open(*, run: TestRun) -> None:
    """Tests still planned or running when a run ends did not pass: mark what happened."""
    outcome = (
        TestResult.Outcome.SKIPPED
        if run.outcome in ("cancelled", "timed_out", "error")
        else TestResult.Outcome.ERROR
    )
    note = f"not finished: the run ended ({run.outcome})"
    TestResult.objects.filter(run=run, outcome=TestResult.Outcome.PLANNED).update(
        outcome=outcome, message=note
    )
    TestResult.objects.filter(run=run, outcome=TestResult.Outcome.RUNNING).update(
        outcome=TestResult.Outcome.ERROR, message=note
    )
    _recount(run)


# --- Exports ----------------------------------------------------------------------------------


def log_lines(run: TestRun, *, after: int = 0) -> Iterator[str]:
    """The run's log as text lines: log events, test boundaries, errors and the end."""
    events = (
        RunEvent.objects.filter(run=run, seq__gt=after)
        .exclude(type__in=["heartbeat", "serial", "plan"])
        .order_by("seq")
        .values_list("seq", "ts", "type", "data")
        .iterator(chunk_size=2000)
    )
    for seq, ts, kind, data in events:
        yield format_event_line(seq, ts, kind, data)


def format_event_line(seq: int, ts: dt.datetime, kind: str, data: dict[str, Any]) -> str:
    stamp = ts.strftime("%H:%M:%S.%f")[:-3]
    if kind == "log":
        if data.get("dropped"):
            return ""
        where = data.get("test") or data.get("source") or ""
        return f"{stamp} {data.get('level', 'INFO'):7} [{where}] {data.get('message', '')}"
    if kind == "test_start":
        return f"{stamp} ----- {data.get('test')} started"
    if kind == "test_end":
        line = f"{stamp} ----- {data.get('test')} {str(data.get('outcome', '')).upper()}"
        if data.get("duration_s") is not None:
            line += f" in {float(data['duration_s']):.3f}s"
        if data.get("message"):
            line += "\n" + str(data["message"])
        return line
    if kind == "error":
        return f"{stamp} ERROR   [{data.get('kind', '')}] {data.get('message', '')}"
    if kind == "run_end":
        return (
            f"{stamp} ===== run ended: {data.get('reason')} (exit {data.get('exit_code')}) "
            f"{data.get('message') or ''}"
        ).rstrip()
    if kind == "board_status":
        detail = data.get("message") or data.get("error") or ""
        return f"{stamp} board  {data.get('state')} {detail}".rstrip()
    if kind == "run_start":
        return f"{stamp} ===== run started ({data.get('mode')}) on {data.get('platform', '')}"
    return f"{stamp} {kind} {data}"


def _fmt_seconds(value: float | None) -> str:
    return f"{(value or 0.0):.3f}"


def junit_xml(run: TestRun) -> bytes:
    """JUnit XML as Jenkins' junit step reads it: one suite per file (or the run)."""
    results = list(TestResult.objects.filter(run=run).order_by("order", "id"))
    suites: dict[str, list[TestResult]] = {}
    for result in results:
        suites.setdefault(result.file or run.case.name, []).append(result)
    root = ET.Element("testsuites", name=f"{run.case.name} run {run.pk}")
    for suite_name, cases in suites.items():
        O = TestResult.Outcome  # noqa: E741  # short: it is used on every line below
        suite = ET.SubElement(
            root,
            "testsuite",
            name=suite_name,
            tests=str(len(cases)),
            failures=str(sum(r.outcome in (O.FAILED, O.XPASSED) for r in cases)),
            errors=str(sum(r.outcome in (O.ERROR, O.RUNNING, O.PLANNED) for r in cases)),
            skipped=str(sum(r.outcome == O.SKIPPED for r in cases)),
            time=_fmt_seconds(sum(r.duration or 0 for r in cases)),
            timestamp=(run.started_at or run.queued_at).strftime("%Y-%m-%dT%H:%M:%S"),
            hostname=run.machine.name if run.machine else "",
        )
        for result in cases:
            classname = result.file.replace("/", ".").removesuffix(".py") or run.case.name
            case = ET.SubElement(
                suite, "testcase", classname=classname, name=result.name,
                time=_fmt_seconds(result.duration),
            )  # fmt: skip
            first_line = (
                (result.message or result.outcome).splitlines()[0][:200]
                if (result.message or result.outcome)
                else ""
            )
            if result.outcome in (O.FAILED, O.XPASSED):
                node = ET.SubElement(case, "failure", message=first_line, type="AssertionError")
                node.text = result.message
            elif result.outcome in (O.ERROR, O.RUNNING, O.PLANNED):
                node = ET.SubElement(case, "error", message=first_line, type="Error")
                node.text = result.message
            elif result.outcome == O.SKIPPED:
                ET.SubElement(case, "skipped", message=first_line)
            if result.assertions:
                out = ET.SubElement(case, "system-out")
                out.text = "\n".join(_assertion_line(a) for a in result.assertions)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _assertion_line(assertion: dict[str, Any]) -> str:
    return (
        f"{assertion.get('result')}: {assertion.get('name')} expected={assertion.get('expected')}"
        f" actual={assertion.get('actual')} {assertion.get('details') or ''}"
    ).rstrip()
