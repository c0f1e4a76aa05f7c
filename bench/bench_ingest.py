"""Log ingest: lines/s stored by ``events_store`` on PostgreSQL, vs the naive design.

Ours: the bytes of an events file as the runner writes it (one JSON object a line, ``log``
events with 80-120 character messages, seq increasing) are fed in batches of 1,000 lines the
way the executor does after each read: ``RunExecutor._parse`` then ``events_store`` (one
transaction per batch: bulk insert, apply to the results, advance the run's read position).
200,000 lines into one run.

Naive: the original plan's design, one text column holding the whole log and
``run.log += line; run.save()`` per line (a table of its own: status, log, updated_at). Each
save rewrites the whole text, so its cost grows with the log; it is measured on 5,000 lines
and extrapolated to 200,000 (both a flat extrapolation at the measured rate, which flatters
it, and one that follows the measured growth per line).

Also: reading the stored log back as text (``log_lines``), and the time each batch takes to
commit (the part of "written to the events file -> visible to a reader" that ingest adds;
bench_dispatch.py measures the whole of it on a live run).

python bench/bench_ingest.py [--lines N] [--batch N] [--naive-lines N]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    bench_django,
    describe,
    machine_info,
    ms,
    percentile,
    postgres_unavailable,
    result,
    skipped,
)

# The machine is never connected to; a password is required to create one.
UNUSED_PASSWORD = "not-used-0001"  # noqa: S105
WORDS = [
    "sensor",
    "channel",
    "voltage",
    "current",
    "temperature",
    "reading",
    "calibrate",
    "register",
    "firmware",
    "flash",
    "erase",
    "verify",
    "block",
    "checksum",
    "retry",
    "timeout",
    "uart",
    "frame",
    "ack",
    "nack",
    "boot",
    "reset",
    "watchdog",
    "interrupt",
    "dma",
    "buffer",
    "overflow",
    "threshold",
    "sample",
    "adc",
    "dac",
    "pwm",
    "gpio",
]


def make_message(rng: random.Random, i: int) -> str:
    """A log line of 80-120 characters, like a test's output."""
    target = rng.randint(80, 120)
    text = f"[{i:07d}] ch{rng.randint(0, 15)} value=0x{rng.getrandbits(16):04X} "
    while len(text) < target:
        text += rng.choice(WORDS) + " "
    return text[:target].rstrip().ljust(target, ".")


def make_blobs(run_id: int, lines: int, batch: int) -> tuple[list[bytes], int]:
    """The events file, cut into batches of ``batch`` complete lines."""
    rng = random.Random(7)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    blobs, total = [], 0
    for first in range(0, lines, batch):
        chunk = []
        for i in range(first, min(first + batch, lines)):
            ts = start + timedelta(milliseconds=i)
            event = {
                "seq": i + 1,
                "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
                "type": "log",
                "run_id": run_id,
                "source": "child",
                "stream": "stdout",
                "message": make_message(rng, i),
                "level": "INFO",
            }
            chunk.append(json.dumps(event, separators=(",", ":")))
        blob = ("\n".join(chunk) + "\n").encode("ascii")
        total += len(blob)
        blobs.append(blob)
    return blobs, total


def setup_run():
    from machines import services as machine_services
    from test_runner import services
    from test_runner.models import RunStatus, TestRun
    from tests.factories import make_user

    user = make_user("bench-ingest", admin=True)
    machine = machine_services.machine_create(
        actor=None, source="bench", name="ingest-host", hostname="127.0.0.1",
        username="bench", password=UNUSED_PASSWORD,
    )  # fmt: skip
    case = services.case_create(
        actor=user, name="ingest-case", kind="script", entry_point="main.py",
        files={"main.py": "print('hi')\n"},
    )  # fmt: skip
    assert case.current_version is not None
    return TestRun.objects.create(
        case=case, case_version=case.current_version, requested_machine=machine,
        machine=machine, requested_by=user, timeout=3600, status=RunStatus.RUNNING,
    )  # fmt: skip


def bench_ours(lines: int, batch: int) -> dict:
    from test_runner.execution import RunExecutor
    from test_runner.models import RunEvent, TestRun
    from test_runner.services import events_store, log_lines

    run = setup_run()
    blobs, size = make_blobs(run.pk, lines, batch)
    print(
        f"ours: {lines} log lines in {len(blobs)} batches of {batch}, "
        f"{size / lines:.0f} bytes a line in the events file ({size / 1e6:.1f} MB)"
    )
    run = TestRun.objects.get(pk=run.pk)
    offset = 0
    parse_s = 0.0
    store_times = []
    start = time.perf_counter()
    for blob in blobs:
        t0 = time.perf_counter()
        events = RunExecutor._parse(blob)
        t1 = time.perf_counter()
        offset += len(blob)
        events_store(run=run, events=events, events_offset=offset)
        t2 = time.perf_counter()
        parse_s += t1 - t0
        store_times.append(t2 - t1)
    elapsed = time.perf_counter() - start
    stored = RunEvent.objects.filter(run=run).count()
    run.refresh_from_db()
    assert stored == lines, f"stored {stored} of {lines}"
    assert run.last_seq == lines and run.events_offset == size
    store_s = sum(store_times)
    rate = lines / elapsed
    print(
        f"ours: {lines} lines stored in {elapsed:.2f} s = {rate:,.0f} lines/s "
        f"(parse {parse_s:.2f} s, events_store {store_s:.2f} s = {lines / store_s:,.0f} lines/s)"
    )
    p50, p95 = percentile(store_times, 50), percentile(store_times, 95)
    print(
        f"ours: one batch of {batch} commits in p50 {ms(p50)} ms, p95 {ms(p95)} ms, "
        f"max {ms(max(store_times))} ms"
    )
    start = time.perf_counter()
    count = sum(1 for line in log_lines(run) if line)
    read_s = time.perf_counter() - start
    print(f"ours: the log read back as text (log_lines): {count} lines in {read_s:.2f} s "
          f"= {count / read_s:,.0f} lines/s")  # fmt: skip
    return {
        "lines": lines,
        "batch": batch,
        "bytes_per_line": round(size / lines),
        "seconds": round(elapsed, 2),
        "lines_per_s": round(rate),
        "parse_seconds": round(parse_s, 2),
        "store_seconds": round(store_s, 2),
        "store_only_lines_per_s": round(lines / store_s),
        "batch_commit_ms": {
            "p50": ms(p50),
            "p95": ms(p95),
            "max": ms(max(store_times)),
            "samples": len(store_times),
        },
        "log_read_lines_per_s": round(count / read_s),
    }


def bench_copy_reference(lines: int, batch: int) -> dict:
    """Not project code: the same parsed batches written with COPY into a temporary table and
    INSERT ... ON CONFLICT DO NOTHING (keeps the "stored twice adds nothing" property), to
    show how much of events_store's time is the database and how much is Python."""
    from django.db import connection, transaction

    from test_runner.execution import RunExecutor
    from test_runner.models import RunEvent, TestRun

    source = TestRun.objects.order_by("pk").first()
    assert source is not None
    run = TestRun.objects.create(
        case=source.case, case_version=source.case_version, machine=source.machine,
        requested_machine=source.machine, timeout=3600, status=source.status,
    )  # fmt: skip
    blobs, _size = make_blobs(run.pk, lines, batch)
    skip = {"seq", "ts", "type"}
    start = time.perf_counter()
    for blob in blobs:
        events = RunExecutor._parse(blob)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE IF NOT EXISTS bench_event_stage (run_id bigint, seq integer, "
                "ts timestamptz, type varchar(20), data jsonb) ON COMMIT DELETE ROWS"
            )
            copy_sql = "COPY bench_event_stage (run_id, seq, ts, type, data) FROM STDIN"
            with cursor.cursor.copy(copy_sql) as copy:
                for e in events:
                    data = json.dumps({k: v for k, v in e.items() if k not in skip})
                    copy.write_row((run.pk, e["seq"], e["ts"], e["type"], data))
            cursor.execute(
                "INSERT INTO test_runner_runevent (run_id, seq, ts, type, data) "
                "SELECT run_id, seq, ts, type, data FROM bench_event_stage "
                "ON CONFLICT DO NOTHING"
            )
            TestRun.objects.filter(pk=run.pk).update(last_seq=events[-1]["seq"])
    elapsed = time.perf_counter() - start
    assert RunEvent.objects.filter(run=run).count() == lines
    rate = lines / elapsed
    print(
        f"reference (not project code): the same batches via COPY + INSERT ON CONFLICT: "
        f"{lines} lines in {elapsed:.2f} s = {rate:,.0f} lines/s"
    )
    return {"lines": lines, "seconds": round(elapsed, 2), "lines_per_s": round(rate)}


def bench_naive(lines: int) -> dict:
    from django.db import connection, models

    class NaiveRun(models.Model):
        status = models.CharField(max_length=12, default="running")
        log = models.TextField(blank=True, default="")
        updated_at = models.DateTimeField(auto_now=True)
        objects: models.Manager[NaiveRun] = models.Manager()

        class Meta:
            app_label = "bench"
            db_table = "bench_naive_run"

        def __str__(self) -> str:
            return f"naive run {self.pk}"

    with connection.schema_editor() as editor:
        editor.create_model(NaiveRun)
    rng = random.Random(7)
    text = [f"00:00:00.000 INFO    [child] {make_message(rng, i)}\n" for i in range(lines)]
    run = NaiveRun.objects.create()
    segment = 1000
    segments = []
    start = time.perf_counter()
    for first in range(0, lines, segment):
        t0 = time.perf_counter()
        for line in text[first : first + segment]:
            run.log += line  # the original plan: append, save the row
            run.save()
        segments.append((time.perf_counter() - t0) / len(text[first : first + segment]))
    elapsed = time.perf_counter() - start
    NaiveRun.objects.get(pk=run.pk)  # it really is stored
    rate = lines / elapsed
    per_segment = [round(1 / s) for s in segments]
    print(
        f"naive: {lines} lines, one save() each, in {elapsed:.2f} s = {rate:,.0f} lines/s "
        f"(per 1,000-line segment: {', '.join(f'{r:,}' for r in per_segment)} lines/s)"
    )
    # Cost of line i grows with the text already stored: fit seconds = a + b * i.
    xs = [segment * (k + 0.5) for k in range(len(segments))]
    mean_x, mean_y = sum(xs) / len(xs), sum(segments) / len(segments)
    var = sum((x - mean_x) ** 2 for x in xs)
    b = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, segments, strict=True)) / var
    a = mean_y - b * mean_x
    with connection.schema_editor() as editor:
        editor.delete_model(NaiveRun)
    return {
        "lines_measured": lines,
        "seconds": round(elapsed, 2),
        "lines_per_s": round(rate),
        "segment_lines_per_s": per_segment,
        "per_line_growth_us_per_1000_lines": round(b * 1000 * 1e6, 1),
        "fit": (a, b),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--naive-lines", type=int, default=5000)
    args = parser.parse_args()
    reason = postgres_unavailable()
    if reason:
        return skipped(f"bench_ingest needs PostgreSQL: {reason}")
    with bench_django("ingest"):
        info = machine_info()
        print(describe(info))
        ours = bench_ours(args.lines, args.batch)
        reference = bench_copy_reference(min(args.lines, 50_000), args.batch)
        naive = bench_naive(args.naive_lines)
    a, b = naive.pop("fit")
    n = args.lines
    flat_s = n / naive["lines_per_s"]
    grown_s = max(flat_s, n * a + b * n * n / 2)
    ratio = ours["lines_per_s"] / naive["lines_per_s"]
    print(
        f"naive, extrapolated to {n} lines: >= {flat_s:,.0f} s at the measured rate; "
        f"~{grown_s:,.0f} s following the measured growth of the cost per line"
    )
    print(
        f"ratio: ours stores {ratio:,.0f}x more lines/s than the naive design "
        f"(ours over {n} lines vs naive over its {args.naive_lines}-line sample, where it "
        "is at its fastest)"
    )
    goal = 20_000
    print(
        f"goal >= {goal:,} lines/s stored: {'met' if ours['lines_per_s'] >= goal else 'MISSED'}"
        f" ({ours['lines_per_s']:,} lines/s)"
    )
    result(
        {
            "machine": info,
            "ours": ours,
            "naive": {
                **naive,
                "extrapolated_seconds_for_lines": n,
                "extrapolated_seconds_flat": round(flat_s),
                "extrapolated_seconds_with_growth": round(grown_s),
            },
            "ratio_ours_over_naive": round(ratio, 1),
            "reference_copy_not_project_code": reference,
            "goal_lines_per_s": goal,
            "goal_met": ours["lines_per_s"] >= goal,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
