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

Live viewer: the same 200,000 lines stored again into a fresh run while a viewer follows it
the way the run page does, through the real Server-Sent Events endpoint
(``/runs/<id>/stream/``, test_runner/web/sse.py) served by uvicorn on the benchmark database,
read by a client in a process of its own. For every line: the time the client received it
minus the time its batch was handed to storage (the executor has just read the lines from the
events file), p50 / p95 / max over all lines, and that no line was lost or shown twice (count
and seq set). The naive design's viewer polls its text column at the stream's interval; it is
measured on its sample with the lines arriving as fast as ours took them (it falls further
behind with every line) and at its own pace (one line handed over after the previous save).

Also: reading the stored log back as text (``log_lines``), and the time each batch takes to
commit (the part of "written to the events file -> visible to a reader" that ingest adds;
bench_dispatch.py measures the whole of it on a live run).

python bench/bench_ingest.py [--lines N] [--batch N] [--naive-lines N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    REPO_ROOT,
    bench_django,
    comparison,
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
                "run_id": str(run_id),  # as the runner writes it (from its command line)
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


# --- A live viewer following the run while it is stored ---------------------------------------

# The stream polls every POLL_SECONDS (test_runner/web/sse.py); the naive viewer polls its text
# column at the same interval, so the two differ only by design.
VIEWER_DEADLINE = 900.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The project under uvicorn on a free loopback port, on the benchmark database (the
    environment bench_django set up), as tests/liveserver.py starts it for the tests."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "test_management_system.asgi:application",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/health/", timeout=2):  # noqa: S310
                return proc, url
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"uvicorn not up after 60 s:\n{log.read_text()}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def follow_stream(url: str, cookie: str, run_id: int, expected: int, out: Connection) -> None:
    """The live viewer, in a process of its own: reads ``/runs/<id>/stream/`` as the run page
    does, and notes for every log line the wall-clock time its event arrived. When the server
    ends the stream it reconnects after the last seq it was sent, as the page does. Sends
    ("ready",) once the stream is open, then ("done", seqs, times, figures)."""
    seqs: list[int] = []
    times: list[float] = []
    last = 0
    connections = 0
    deltas = 0
    received_bytes = 0
    error = ""
    ready = False
    host, _, port = url.removeprefix("http://").partition(":")
    deadline = time.monotonic() + VIEWER_DEADLINE
    ended = False
    while last < expected and not ended and time.monotonic() < deadline:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.request(
                "GET", f"/runs/{run_id}/stream/?after={last}",
                headers={"Cookie": cookie, "Accept": "text/event-stream"},
            )  # fmt: skip
            response = conn.getresponse()
            connections += 1
            if response.status != 200:
                error = f"stream answered {response.status}: {response.read(500)!r}"
                break
            event, data = "", []
            while last < expected:
                raw = response.readline()
                if not raw:
                    break  # the server ended this stream: open the next one after `last`
                received_bytes += len(raw)
                line = raw.decode("utf-8").rstrip("\r\n")
                if line:
                    field, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if field == "event":
                        event = value
                    elif field == "data":
                        data.append(value)
                    elif field == "retry" and not ready:
                        ready = True
                        out.send(("ready",))
                    continue
                now = time.time()  # a blank line: the event is complete, the viewer shows it
                if event == "delta":
                    delta = json.loads("\n".join(data))
                    deltas += 1
                    for item in delta["lines"]:
                        seqs.append(int(item["seq"]))
                        times.append(now)
                    last = max(last, int(delta["last_seq"]))
                elif event == "end":
                    ended = True  # the run is over: nothing more will come
                    break
                event, data = "", []
        except (OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        finally:
            conn.close()
    if not ready:
        out.send(("ready",))
    figures = {
        "connections": connections,
        "deltas": deltas,
        "bytes": received_bytes,
        "error": error,
    }
    out.send(("done", seqs, times, figures))


def session_cookie(user: Any) -> str:
    """A logged-in session for ``user``, as the browser's cookie header sends it."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def latency_figures(latencies: list[float]) -> dict[str, Any]:
    return {
        "p50": ms(percentile(latencies, 50)),
        "p95": ms(percentile(latencies, 95)),
        "max": ms(max(latencies)) if latencies else None,
        "samples": len(latencies),
    }


def bench_live_viewer(lines: int, batch: int, work_dir: Path) -> dict[str, Any]:
    """The same lines stored again, into a fresh run, while a live viewer follows it through
    the real Server-Sent Events endpoint, served by uvicorn. For every line: the time the
    viewer received it minus the time its batch was handed to storage (the executor has just
    read those lines from the events file: parse + events_store + the stream's poll + the
    delta query + HTTP), and minus the time its batch was committed."""
    from test_runner.execution import RunExecutor
    from test_runner.models import RunEvent, TestRun
    from test_runner.services import events_store

    source = TestRun.objects.order_by("pk").first()
    assert source is not None and source.requested_by is not None
    run = TestRun.objects.create(
        case=source.case, case_version=source.case_version, machine=source.machine,
        requested_machine=source.machine, requested_by=source.requested_by, timeout=3600,
        status=source.status,
    )  # fmt: skip
    blobs, size = make_blobs(run.pk, lines, batch)
    server, url = start_server(work_dir / "uvicorn.log")
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    viewer = context.Process(
        target=follow_stream,
        args=(url, session_cookie(source.requested_by), run.pk, lines, sender),
        daemon=True,
    )
    try:
        viewer.start()
        sender.close()
        if not receiver.poll(60) or receiver.recv() != ("ready",):
            raise RuntimeError("the live viewer did not open the stream within 60 s")
        run = TestRun.objects.get(pk=run.pk)
        handed: list[float] = []
        committed: list[float] = []
        offset = 0
        start = time.time()
        for blob in blobs:
            t0 = time.time()
            events = RunExecutor._parse(blob)
            offset += len(blob)
            events_store(run=run, events=events, events_offset=offset)
            handed.append(t0)
            committed.append(time.time())
        elapsed = time.time() - start
        if not receiver.poll(VIEWER_DEADLINE):
            raise RuntimeError("the live viewer sent nothing back")
        kind, seqs, times, viewer_figures = receiver.recv()
        assert kind == "done"
        viewer.join(30)
    finally:
        if viewer.is_alive():
            viewer.terminate()
        stop_server(server)
    stored = RunEvent.objects.filter(run=run).count()
    assert stored == lines, f"stored {stored} of {lines}"
    unique = set(seqs)
    lost = lines - len(unique & set(range(1, lines + 1)))
    doubled = len(seqs) - len(unique)
    to_viewer = [t - handed[(s - 1) // batch] for s, t in zip(seqs, times, strict=True)]
    after_commit = [t - committed[(s - 1) // batch] for s, t in zip(seqs, times, strict=True)]
    from_start = [t - start for t in times]
    rate = lines / elapsed
    handed_to_viewer = latency_figures(to_viewer)
    commit_to_viewer = latency_figures(after_commit)
    print(
        f"live viewer: {lines} lines stored in {elapsed:.2f} s = {rate:,.0f} lines/s while the "
        f"viewer followed the SSE stream ({viewer_figures['deltas']} deltas, "
        f"{viewer_figures['bytes'] / 1e6:.1f} MB, {viewer_figures['connections']} connection(s))"
    )
    problem = f"; error: {viewer_figures['error']}" if viewer_figures["error"] else ""
    print(
        f"live viewer: received {len(seqs)} lines, {len(unique)} distinct seqs, lost {lost}, "
        f"doubled {doubled}{problem}"
    )
    print(
        f"live viewer: handed to storage -> shown p50 {handed_to_viewer['p50']} ms, "
        f"p95 {handed_to_viewer['p95']} ms, max {handed_to_viewer['max']} ms; committed -> "
        f"shown p50 {commit_to_viewer['p50']} ms, p95 {commit_to_viewer['p95']} ms"
    )
    return {
        "lines": lines,
        "batch": batch,
        "bytes": size,
        "seconds": round(elapsed, 2),
        "lines_per_s": round(rate),
        "received": len(seqs),
        "distinct": len(unique),
        "lost": lost,
        "doubled": doubled,
        "handed_to_viewer_ms": handed_to_viewer,
        "commit_to_viewer_ms": commit_to_viewer,
        "flood_start_to_viewer_ms": latency_figures(from_start),
        "viewer": viewer_figures,
        # For the naive design's side: when each batch was handed over, from the start.
        "batch_offsets_s": [t - start for t in handed],
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


def follow_naive(run_pk: int, total: int, seen: list[float], stop: threading.Event) -> None:
    """The naive design's live viewer: polls the text column at the stream's interval and
    shows what was appended since the last poll (only the new part is fetched, ``substr``,
    which flatters it); notes when each line was first seen."""
    from django.db import connection

    from test_runner.web.sse import POLL_SECONDS

    shown = 0  # characters of the text already shown
    deadline = time.monotonic() + VIEWER_DEADLINE
    try:
        while len(seen) < total and time.monotonic() < deadline:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT substr(log, %s) FROM bench_naive_run WHERE id = %s", [shown + 1, run_pk]
                )
                row = cursor.fetchone()
            now = time.perf_counter()
            text = row[0] if row else ""
            complete = text[: text.rfind("\n") + 1]
            seen.extend([now] * complete.count("\n"))
            shown += len(complete)
            if stop.is_set() and not complete:
                break
            time.sleep(POLL_SECONDS)
    finally:
        connection.close()


def bench_naive(lines: int, offered: list[float] | None = None, batch: int = 1000) -> dict:
    """``offered``: when ours was handed each batch (seconds from its start), to measure the
    naive viewer's lag under the same offered load."""
    from django.db import connection, models

    from test_runner.web.sse import POLL_SECONDS

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
    handed: list[float] = []
    seen: list[float] = []
    stop = threading.Event()
    viewer = threading.Thread(target=follow_naive, args=(run.pk, lines, seen, stop), daemon=True)
    viewer.start()
    start = time.perf_counter()
    for first in range(0, lines, segment):
        t0 = time.perf_counter()
        for line in text[first : first + segment]:
            handed.append(time.perf_counter())
            run.log += line  # the original plan: append, save the row
            run.save()
        segments.append((time.perf_counter() - t0) / len(text[first : first + segment]))
    elapsed = time.perf_counter() - start
    stop.set()
    viewer.join(VIEWER_DEADLINE)
    stored = NaiveRun.objects.get(pk=run.pk).log  # it really is stored
    assert stored == "".join(text)
    own_pace = [s - h for s, h in zip(seen, handed, strict=False)]
    viewer_figures: dict[str, Any] = {
        "received": len(seen),
        "lost": lines - len(seen),
        "handed_to_viewer_ms": latency_figures(own_pace),
    }
    print(
        f"naive viewer (polls the text column every {POLL_SECONDS} s): saw {len(seen)} of "
        f"{lines} lines; "
        f"a line saved -> shown p50 {viewer_figures['handed_to_viewer_ms']['p50']} ms, "
        f"p95 {viewer_figures['handed_to_viewer_ms']['p95']} ms at its own pace"
    )
    if offered:
        # Line i arrives when ours was handed line i; the naive design takes it when it is
        # through with the lines before it.
        same_load = [
            s - (start + offered[i // batch])
            for i, s in enumerate(seen)
            if i // batch < len(offered)
        ]
        viewer_figures["same_load_arrival_to_viewer_ms"] = latency_figures(same_load)
        print(
            f"naive viewer, lines arriving as fast as ours took them: arrival -> shown p50 "
            f"{ms(percentile(same_load, 50)):,} ms, p95 {ms(percentile(same_load, 95)):,} ms, "
            f"max {ms(max(same_load)):,} ms over its {lines} lines (and growing with each line)"
        )
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
    # One segment (a sample of 1,000 lines or fewer) shows no growth to fit.
    b = (
        sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, segments, strict=True)) / var
        if var
        else 0.0
    )
    a = mean_y - b * mean_x
    with connection.schema_editor() as editor:
        editor.delete_model(NaiveRun)
    return {
        "lines_measured": lines,
        "seconds": round(elapsed, 2),
        "lines_per_s": round(rate),
        "segment_lines_per_s": per_segment,
        "per_line_growth_us_per_1000_lines": round(b * 1000 * 1e6, 1),
        "viewer": viewer_figures,
        "fit": (a, b),
    }


def _poll_seconds() -> float:
    from test_runner.web.sse import POLL_SECONDS  # after django.setup()

    return POLL_SECONDS


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
        live = bench_live_viewer(args.lines, args.batch, Path(os.environ["TMS_VAR_DIR"]))
        reference = bench_copy_reference(min(args.lines, 50_000), args.batch)
        naive = bench_naive(args.naive_lines, live.pop("batch_offsets_s"), args.batch)
        load_at_end = machine_info().get("load_average_1m")
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
    latency_goal_ms = 500
    p95 = live["handed_to_viewer_ms"]["p95"]
    complete = live["lost"] == 0 and live["doubled"] == 0
    latency_met = p95 < latency_goal_ms and complete
    print(
        f"goal live viewer p95 < {latency_goal_ms} ms with no line lost or doubled: "
        f"{'met' if latency_met else 'MISSED'} (p95 {p95} ms, lost {live['lost']}, "
        f"doubled {live['doubled']})"
    )
    naive_viewer = naive["viewer"]
    naive_same_load = naive_viewer.get("same_load_arrival_to_viewer_ms", {})
    comparisons = [
        comparison(
            "ingest",
            metric="lines/s stored",
            unit="lines/s",
            ours=float(ours["lines_per_s"]),
            naive=float(naive["lines_per_s"]),
            higher_is_better=True,
            goal=">= 20,000 lines/s and >= 50x naive",
            met=ours["lines_per_s"] >= goal and ratio >= 50,
            note=(
                f"ours {n:,} lines in batches of {args.batch} (parse + events_store); naive "
                f"run.log += line; run.save() on {args.naive_lines:,} lines, where it is at its "
                f"fastest ({n:,} extrapolated: >= {flat_s:,.0f} s); with the live viewer "
                f"attached ours stored {live['lines_per_s']:,} lines/s; where the time goes: "
                f"parsing (RunExecutor._parse, test_runner/event_lines.py) {ours['parse_seconds']}"
                f" s, events_store {ours['store_seconds']} s "
                f"({ours['store_only_lines_per_s']:,} lines/s alone); load average "
                f"{info.get('load_average_1m')} at start, {load_at_end} at end"
            ),
        ),
        comparison(
            "ingest live viewer",
            metric="p95 line arrives -> shown by a live viewer",
            unit="ms",
            ours=p95,
            naive=naive_same_load.get("p95", float("nan")),
            higher_is_better=False,
            goal="p95 < 500 ms",
            met=latency_met,
            note=(
                f"ours: the real SSE endpoint under uvicorn, {n:,} lines, from the batch "
                f"handed to storage to the event read by the client (p50 "
                f"{live['handed_to_viewer_ms']['p50']} ms, max {live['handed_to_viewer_ms']['max']}"
                f" ms; {live['received']:,} received, lost {live['lost']}, doubled "
                f"{live['doubled']}); of which committed -> shown p50 "
                f"{live['commit_to_viewer_ms']['p50']} ms, p95 {live['commit_to_viewer_ms']['p95']}"
                f" ms (the stream polls every {_poll_seconds()} s), the rest is the batch's parse "
                f"+ store; naive: a viewer polling the text column at the same "
                f"{_poll_seconds()} s, lines arriving as fast as ours took them, over its "
                f"{args.naive_lines:,}-line sample: it falls behind by about a second every "
                f"{naive['lines_per_s']:,} lines, without bound (at its own pace, one line a "
                f"save, saved -> shown p95 is {naive_viewer['handed_to_viewer_ms']['p95']} ms)"
            ),
        ),
    ]
    result(
        {
            "machine": info,
            "load_average_1m_at_end": load_at_end,
            "comparisons": comparisons,
            "ours": ours,
            "ours_with_live_viewer": live,
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
