"""Dispatch latency over loopback SSH with a warm venv pool, with the real parts.

Parts: a throwaway OpenSSH server on 127.0.0.1 (tests/sshd.py), a real Celery worker process
(prefork, concurrency 2, as the test suite starts it) on this benchmark's own database, Redis
as broker (db 8, queue ``tms-bench``) when it answers at 127.0.0.1:6379, else the file-system
broker; a machine on that sshd with a pool of 2 venvs made READY first (the steps of
tests/integration/runs/conftest.py lab_machine). No beat: the periodic sweep does not run,
so everything measured here is event-driven.

1. Warm-up runs (not counted) until both venvs hold the runner's requirements and both
   worker processes hold an SSH connection; then one naive run (not counted).
2. N times (default 50), each with both venvs READY: POST /api/v1/runs/ (test client, in this
   process) for a script case that prints a few lines, then watch the database every 5 ms.
   Measured: POST -> the runner's ``run_start`` event (its ``ts`` is the runner's own UTC
   clock; same host, same clock), POST -> DONE (``finished_at``), and for every event its
   "written to the events file -> visible in the database" lag (event ``ts`` -> first seen
   by this process's 5 ms poll). The phases come from the run's RunTransition rows.
   Side by side, spread evenly between these runs (default 10; they are slow: a venv and a
   pip install each), the naive design of the original plan (bench/naive_dispatch.py): a new
   SSH connection for every step, the runner uploaded on every run, a new venv with its
   requirements pip-installed for every run, then the same runner launched with the same case
   and its ``run_start`` awaited; timed from its first step to ``run_start`` by the same clock.
3. A slot freeing: max_concurrent_runs=1, two runs of a script that sleeps 1.5 s posted
   back to back; the second waits QUEUED. Measured: second.run_start - first.finished_at,
   with the steps in between (venv reset, dispatch, lease, provision). Repeated 5 times.

python bench/bench_dispatch.py [--runs N] [--naive-runs N] [--slot-pairs N]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

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
from bench.naive_dispatch import NaiveDispatcher, NaiveRun, NaiveTarget

REDIS_DB_URL = "redis://127.0.0.1:6379/8"
QUEUE = "tms-bench"
QUICK = (
    "import sys\n"
    "for i in range(5):\n"
    "    print(f'quick line {i}: checking the board link, all good', flush=True)\n"
    "sys.exit(0)\n"
)
HOLD = "import time\nprint('holding the slot', flush=True)\ntime.sleep(1.5)\n"


def redis_state() -> tuple[bool, str]:
    """(usable, why not). Only an empty db 8 is used: it may be someone else's otherwise."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_DB_URL, socket_connect_timeout=2)
        keys = client.dbsize()
    except Exception as exc:
        return False, f"Redis at 127.0.0.1:6379 is not reachable ({type(exc).__name__})"
    if keys:
        return False, f"Redis db 8 is not empty ({keys} keys); not touching it"
    return True, ""


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_DB_URL, socket_connect_timeout=2).flushdb()


def start_worker(database_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = os.environ.copy()
    env.update({"DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO"})
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "test_management_system", "worker",
                "--loglevel", "INFO", "--concurrency", "2", "--without-gossip",
                "--without-mingle", "--hostname", f"bench-{os.getpid()}@%h",
            ],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    from test_management_system.tasks import ping_task

    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}: {log_path.read_text()}")
        try:
            ping_task.apply_async().get(timeout=5)
            return proc
        except Exception:
            if time.monotonic() > deadline:
                raise RuntimeError("worker did not answer in 60 s") from None


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def make_lab(sshd: Any) -> Any:
    """tests/integration/runs/conftest.py lab_machine: a trusted machine with 2 READY venvs.
    Retries while another process resets the sshd user's password."""
    from machines.models import Machine
    from tests.integration.runs.conftest import lab_machine

    last: Exception | None = None
    for attempt in range(4):
        try:
            return lab_machine(sshd, "bench-dispatch", labels=["bench"])
        except Exception as exc:  # AuthenticationFailed, or the check's assert
            last = exc
            Machine.objects.filter(name="bench-dispatch").delete()
            print(f"  lab set-up failed ({type(exc).__name__}: {exc}); retrying in 20 s")
            time.sleep(20 if attempt < 3 else 0)
    raise RuntimeError(f"could not set up the lab machine: {last}")


def wait_pool_ready(machine: Any, count: int, timeout: float = 60) -> float:
    from machines.models import Venv

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if Venv.objects.filter(machine=machine, state=Venv.State.READY).count() >= count:
            return time.monotonic() - start
        time.sleep(0.02)
    states = list(Venv.objects.filter(machine=machine).values_list("slot", "state", "last_error"))
    raise RuntimeError(f"venv pool not READY after {timeout} s: {states}")


def post_run(client: Any, case: str, machine: str) -> tuple[int, float, float]:
    t0 = time.time()
    response = client.post("/api/v1/runs/", {"case": case, "machine": machine}, format="json")
    t1 = time.time()
    assert response.status_code == 201, response.content
    return response.json()["id"], t0, t1


def watch(run_id: int, timeout: float = 90) -> dict[str, Any]:
    """Polls every 5 ms until the run is DONE and every event is seen; first-seen times."""
    from test_runner.models import RunEvent, TestRun

    seen: dict[int, tuple[str, datetime, float]] = {}
    done_seen = None
    last = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.time()
        for seq, kind, ts in RunEvent.objects.filter(run_id=run_id, seq__gt=last).values_list(
            "seq", "type", "ts"
        ):
            seen[seq] = (kind, ts, now)
            last = max(last, seq)
        status, last_seq = TestRun.objects.filter(pk=run_id).values_list("status", "last_seq")[0]
        if status == "done":
            done_seen = done_seen or now
            if last >= last_seq:
                break
        time.sleep(0.005)
    run = TestRun.objects.get(pk=run_id)
    if run.status != "done":
        raise RuntimeError(f"run {run_id} still {run.status} after {timeout} s")
    return {"run": run, "events": seen, "done_seen": done_seen}


def phases(run: Any, t0: float, t_resp: float, watched: dict[str, Any]) -> dict[str, float]:
    """Seconds from the POST to each step, from the run's transitions and events."""
    from test_runner.models import RunTransition

    at = {"post_returned": t_resp - t0}
    for to_status, when in (
        RunTransition.objects.filter(run=run).order_by("at", "id").values_list("to_status", "at")
    ):
        key = f"to_{to_status}"
        at.setdefault(key, when.timestamp() - t0)
    if run.dispatched_at:
        at["dispatched"] = run.dispatched_at.timestamp() - t0
    for kind, ts, seen in watched["events"].values():
        if kind in ("run_start", "run_end"):
            at.setdefault(kind, ts.timestamp() - t0)
            at.setdefault(f"{kind}_visible", seen - t0)
    at["finished"] = run.finished_at.timestamp() - t0
    return at


def warm_up(client: Any, machine: Any, case: str) -> None:
    from machines.models import Venv
    from machines.services.pool import requirements_hash
    from test_runner.execution import combined_requirements
    from test_runner.models import TestCase

    wanted = requirements_hash(combined_requirements(TestCase.Kind.SCRIPT, ""))
    for round_ in range(4):
        wait_pool_ready(machine, 2, timeout=180)
        ids = [post_run(client, case, machine.name)[0] for _ in range(2)]
        for run_id in ids:
            run = watch(run_id, timeout=180)["run"]
            if run.outcome != "passed":
                raise RuntimeError(f"warm-up run {run_id}: {run.outcome}: {run.status_message}")
        synced = Venv.objects.filter(machine=machine, requirements_hash=wanted).count()
        print(f"  warm-up round {round_ + 1}: 2 runs passed; {synced}/2 venvs synced")
        if synced == 2 and round_ >= 1:
            return


def naive_target(sshd: Any, machine: Any, case: Any) -> NaiveTarget:
    """The naive dispatcher aimed at the same sshd, user, interpreter, runner and case."""
    from test_runner.execution import combined_requirements, runner_bundle

    version = case.current_version
    _hash, files = runner_bundle()
    return NaiveTarget(
        host=sshd.host, port=sshd.port, username=sshd.username, password=sshd.password,
        host_key_type=sshd.host_key.key_type, host_key=sshd.host_key.to_pkey(),
        base_dir=machine.effective_work_dir, python="python3",
        requirements=combined_requirements(case.kind, version.requirements),
        runner_files=files, case_files=dict(version.files),
        targets=shlex.split(version.entry_point) + list(version.arguments), mode=case.kind,
    )  # fmt: skip


def naive_run(naive: NaiveDispatcher) -> NaiveRun:
    run = naive.dispatch()
    if run.run_start is None or run.run_end.get("exit_code") != 0:
        raise RuntimeError(f"naive run {naive.count} did not pass: {run.run_end}")
    return run


def bench_latency(
    client: Any, machine: Any, case: str, count: int, naive: NaiveDispatcher, naive_count: int
) -> dict[str, Any]:
    samples = []
    lags: list[float] = []
    naive_runs: list[NaiveRun] = []
    # The naive runs spread evenly between ours, so both see the same machine over time.
    naive_after = [round((j + 1) * count / naive_count) - 1 for j in range(naive_count)]
    for i in range(count):
        waited = wait_pool_ready(machine, 2)
        run_id, t0, t1 = post_run(client, case, machine.name)
        watched = watch(run_id)
        run = watched["run"]
        if run.outcome != "passed":
            raise RuntimeError(f"run {run_id}: {run.outcome}: {run.status_message}")
        p = phases(run, t0, t1, watched)
        p["pool_wait_before"] = waited
        samples.append(p)
        lags += [seen - ts.timestamp() for _kind, ts, seen in watched["events"].values()]
        for _ in range(naive_after.count(i)):
            wait_pool_ready(machine, 2)  # the pool's reset done: the machine is quiet again
            naive_runs.append(naive_run(naive))
            print(f"    naive run {len(naive_runs)}: {ms(naive_runs[-1].to_run_start):.0f} ms")
        if i % 10 == 9:
            print(f"  {i + 1} runs done")
    return {"samples": samples, "lags": lags, "naive": naive_runs}


def summarize(samples: list[dict[str, float]], key: str) -> dict[str, float]:
    values = [s[key] for s in samples if key in s]
    return {
        "median_ms": ms(median(values)),
        "p95_ms": ms(percentile(values, 95)),
        "min_ms": ms(min(values)),
        "max_ms": ms(max(values)),
        "samples": len(values),
    }


def bench_slot(client: Any, machine: Any, case: str, pairs: int) -> dict[str, Any]:
    from machines.models import Machine
    from test_runner.models import RunTransition

    Machine.objects.filter(pk=machine.pk).update(max_concurrent_runs=1)
    out = []
    try:
        for _ in range(pairs):
            wait_pool_ready(machine, 2)
            first, _, _ = post_run(client, case, machine.name)
            second, _, _ = post_run(client, case, machine.name)
            a = watch(first)
            b = watch(second)
            runs = (a["run"], b["run"])
            if any(r.outcome != "passed" for r in runs):
                raise RuntimeError(f"slot runs: {[(r.outcome, r.status_message) for r in runs]}")
            freed = runs[0].finished_at.timestamp()
            start_ts = next(ts for kind, ts, _ in b["events"].values() if kind == "run_start")
            trans = {
                to: when.timestamp() - freed
                for to, when in RunTransition.objects.filter(run=runs[1])
                .exclude(to_status="queued")
                .values_list("to_status", "at")
            }
            waited = (
                RunTransition.objects.filter(run=runs[1], to_status="provisioning")
                .values_list("at", flat=True)
                .first()
            )
            valid = waited is not None and waited.timestamp() > freed
            out.append(
                {
                    "second_run_start_after_free_s": start_ts.timestamp() - freed,
                    "second_dispatched_after_free_s": runs[1].dispatched_at.timestamp() - freed,
                    "second_provisioning_after_free_s": trans.get("provisioning"),
                    "second_running_after_free_s": trans.get("running"),
                    "second_really_waited": valid,
                }
            )
    finally:
        Machine.objects.filter(pk=machine.pk).update(max_concurrent_runs=2)
    return {"pairs": out}


def ssh_steps(machine: Any, repeat: int = 10) -> dict[str, Any]:
    """The SSH operations between PROVISIONING and RUNNING, and the runner's start-up, timed
    one by one from this process on the same kind of cached connection (median of
    ``repeat``)."""
    from machines import services as machine_services
    from machines import ssh
    from machines.models import Venv
    from machines.services.pool import venv_python
    from test_runner.execution import runner_bundle

    conn = machine_services.machine_connection(machine=machine)
    base = machine.effective_work_dir
    version, _ = runner_bundle()
    venv = Venv.objects.filter(machine=machine).order_by("slot").first()
    assert venv is not None
    scratch = f"{base}/bench-scratch"
    mkdirs = "import os, sys\nfor d in sys.argv[1:]:\n    os.makedirs(d, exist_ok=True)"
    runner_dir = f"{base}/runner/{version}"

    def read_missing() -> None:
        with contextlib.suppress(ssh.RemoteFileError):
            conn.read_from(f"{scratch}/no-events.jsonl", 0, 1)

    def raw_exec() -> None:
        # The channel alone: no deadline wrapper, no shell quoting (what sshd itself costs).
        channel = conn._transport().open_session(timeout=10)
        try:
            channel.exec_command("true")
            channel.recv_exit_status()
        finally:
            channel.close()

    steps: dict[str, Any] = {
        "bare exec channel `true` (no deadline wrapper)": raw_exec,
        "read a missing events file (SFTP open fails)": read_missing,
        "read the runner's .complete marker (SFTP)": lambda: conn.read_from(
            f"{runner_dir}/.complete", 0, 1
        ),
        "mkdirs: python3 -c over an exec channel": lambda: conn.run(
            ssh.Command("python3", "-c", mkdirs, scratch), timeout=60
        ),
        "put one small file (SFTP write + rename)": lambda: conn.put(
            b"print('x')\n", f"{scratch}/quick.py"
        ),
        "exec channel running `true`": lambda: conn.run(ssh.Command("true"), timeout=30),
        "start_detached (setsid nohup sh -c true)": lambda: conn.start_detached(
            ssh.Command("true"), log_path=f"{scratch}/detached.log"
        ),
        "venv python imports the runner (remote)": lambda: conn.run(
            ssh.Command(
                venv_python(venv),
                "-c",
                "import sys; sys.path.insert(0, sys.argv[1]); import remote_scripts.runner",
                runner_dir,
            ),
            timeout=60,
        ),
        "venv python starts, imports nothing (remote)": lambda: conn.run(
            ssh.Command(venv_python(venv), "-c", "pass"), timeout=60
        ),
    }
    conn.run(ssh.Command("python3", "-c", mkdirs, scratch), timeout=60)
    out = {}
    for label, step in steps.items():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        out[label] = {"median_ms": ms(median(times)), "samples": repeat}
    conn.run(ssh.Command("rm", "-rf", scratch), timeout=60)
    return out


def post_queries(client: Any, case: str, machine: Any) -> dict[str, Any]:
    """SQL queries and time of one POST /api/v1/runs/ (the run is then left to finish)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    wait_pool_ready(machine, 2)
    with CaptureQueriesContext(connection) as captured:
        t0 = time.perf_counter()
        run_id, _, _ = post_run(client, case, machine.name)
        elapsed = time.perf_counter() - t0
    watch(run_id)
    sql_ms = sum(float(q["time"]) for q in captured.captured_queries) * 1000
    return {
        "queries": len(captured.captured_queries),
        "sql_ms": round(sql_ms, 1),
        "request_ms": ms(elapsed),
    }


def worker_task_times(log_path: Path) -> dict[str, Any]:
    """How long the worker's tasks took, from its log ("Task NAME[id] succeeded in Xs")."""
    import re

    pattern = re.compile(r"Task ([\w.]+)\[[^\]]+\] succeeded in ([\d.]+)s")
    durations: dict[str, list[float]] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        found = pattern.search(line)
        if found:
            durations.setdefault(found.group(1), []).append(float(found.group(2)))
    return {
        name: {"median_ms": ms(median(values)), "max_ms": ms(max(values)), "count": len(values)}
        for name, values in durations.items()
        if name != "system.ping"
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument(
        "--naive-runs", type=int, default=10,
        help="runs of the naive design, spread between ours (each makes a venv: slow)",
    )  # fmt: skip
    parser.add_argument("--slot-pairs", type=int, default=5)
    args = parser.parse_args()
    reason = postgres_unavailable()
    if reason:
        return skipped(f"bench_dispatch needs PostgreSQL: {reason}")
    from tests.sshd import SSHDUnavailable, remove_sshd, start_sshd, why_unavailable

    reason = why_unavailable()
    if reason:
        return skipped(f"bench_dispatch needs a local sshd: {reason}")
    use_redis, why_not = redis_state()
    env = {"CELERY_TASK_DEFAULT_QUEUE": QUEUE}
    if use_redis:
        env["REDIS_URL"] = REDIS_DB_URL
        broker = "redis (127.0.0.1:6379/8)"
    else:
        env["CELERY_BROKER_URL"] = "filesystem://"
        broker = f"file-system broker ({why_not})"
    work = Path(tempfile.mkdtemp(prefix="tms-bench-dispatch-"))
    sshd = None
    worker = None
    work_dir = None
    try:
        with bench_django("dispatch", **env) as database_url:
            info = machine_info()
            print(describe(info))
            print(f"broker: {broker}")
            try:
                sshd = start_sshd()
            except SSHDUnavailable as exc:
                return skipped(f"bench_dispatch could not start sshd: {exc}")
            from rest_framework.test import APIClient

            from test_runner import services
            from tests.factories import make_user

            machine = make_lab(sshd)
            work_dir = machine.effective_work_dir
            worker = start_worker(database_url, work / "worker.log")
            admin = make_user("bench-admin", admin=True)
            client = APIClient()
            client.force_login(admin)
            quick = services.case_create(
                actor=admin, name="quick", kind="script", entry_point="quick.py",
                files={"quick.py": QUICK}, default_timeout=120,
            )  # fmt: skip
            hold = services.case_create(
                actor=admin, name="hold", kind="script", entry_point="hold.py",
                files={"hold.py": HOLD}, default_timeout=120,
            )  # fmt: skip
            print("warming up (runs not counted)")
            warm_up(client, machine, quick.name)
            naive = NaiveDispatcher(naive_target(sshd, machine, quick))
            if args.naive_runs:
                warm = naive_run(naive)
                print(f"  naive warm-up run (not counted): {ms(warm.to_run_start)} ms")
            print(
                f"{args.runs} runs of a quick script case, one at a time, pool warm; "
                f"{args.naive_runs} naive runs (new connection per step, runner uploaded, new "
                "venv + pip install each) spread between them:"
            )
            latency = bench_latency(client, machine, quick.name, args.runs, naive, args.naive_runs)
            print(f"a slot freeing: max_concurrent_runs=1, {args.slot_pairs} pairs of runs")
            slot = bench_slot(client, machine, hold.name, args.slot_pairs)
            print("one POST, its SQL:")
            post = post_queries(client, quick.name, machine)
            print(f"  {post}")
            print("the SSH steps of provisioning, one by one (median of 10):")
            steps = ssh_steps(machine)
            for label, figures in steps.items():
                print(f"  {label:52} {figures['median_ms']:7.1f} ms")
            tasks = worker_task_times(work / "worker.log")
            info["load_average_1m_end"] = machine_info().get("load_average_1m")
    finally:
        if worker is not None:
            stop_worker(worker)
        if sshd is not None:
            # The machine's work directory (venv pool, runs, naive runs) is named after this
            # process (tests/integration/runs/conftest.py lab_machine): no later run reuses it.
            if work_dir:
                shutil.rmtree(work_dir, ignore_errors=True)
            remove_sshd(sshd)
        if use_redis:
            flush_redis()
        shutil.rmtree(work, ignore_errors=True)
    extra = {"post": post, "ssh_steps": steps, "worker_tasks": tasks}
    return report(info, broker, latency, slot, extra)


def report(
    info: dict[str, Any],
    broker: str,
    latency: dict[str, Any],
    slot: dict[str, Any],
    extra: dict[str, Any],
) -> int:
    samples = latency["samples"]
    keys = [
        ("post_returned", "POST returned (run created, task sent)"),
        ("dispatched", "task sent to the broker (dispatched_at)"),
        ("to_provisioning", "worker took it and leased a venv (-> PROVISIONING)"),
        ("to_running", "provisioned, runner launched over SSH (-> RUNNING)"),
        ("run_start", "runner wrote run_start (its own clock)"),
        ("run_start_visible", "run_start visible in the database"),
        ("run_end", "runner wrote run_end"),
        ("finished", "run DONE (finished_at)"),
    ]
    print(f"time from POST, over {len(samples)} runs (median / p95, ms):")
    steps = {}
    for key, label in keys:
        figures = summarize(samples, key)
        steps[key] = figures
        print(f"  {label:58} {figures['median_ms']:8.1f} {figures['p95_ms']:8.1f}")
    lags = latency["lags"]
    lag = {
        "median_ms": ms(median(lags)),
        "p95_ms": ms(percentile(lags, 95)),
        "max_ms": ms(max(lags)),
        "events": len(lags),
    }
    print(
        f"event written -> visible in the database: median {lag['median_ms']} ms, "
        f"p95 {lag['p95_ms']} ms, max {lag['max_ms']} ms over {lag['events']} events "
        "(5 ms poll; event ts has ms resolution)"
    )
    gaps = {
        "POST -> worker leased (queue + claim + lease)": ("post_returned", "to_provisioning"),
        "PROVISIONING -> RUNNING (provision + launch over SSH)": ("to_provisioning", "to_running"),
        "RUNNING -> run_start (runner start-up on the host)": ("to_running", "run_start"),
        "run_end -> DONE (tail, store, artifacts, finish)": ("run_end", "finished"),
    }
    breakdown = {}
    for label, (a, b) in gaps.items():
        values = [s[b] - s[a] for s in samples if a in s and b in s]
        breakdown[label] = {"median_ms": ms(median(values)), "p95_ms": ms(percentile(values, 95))}
        print(f"  {label:58} {ms(median(values)):8.1f} {ms(percentile(values, 95)):8.1f}")
    pairs = slot["pairs"]
    valid = [p for p in pairs if p["second_really_waited"]]
    starts = [p["second_run_start_after_free_s"] for p in valid]
    print(f"a slot freeing ({len(valid)} of {len(pairs)} pairs where the second run waited):")
    for p in pairs:
        print(
            "  second run_start {:.3f} s after the first finished (dispatched +{:.3f} s, "
            "PROVISIONING +{:.3f} s, RUNNING +{:.3f} s){}".format(
                p["second_run_start_after_free_s"],
                p["second_dispatched_after_free_s"],
                p["second_provisioning_after_free_s"] or float("nan"),
                p["second_running_after_free_s"] or float("nan"),
                "" if p["second_really_waited"] else "  [did not wait: not counted]",
            )
        )
    print("worker task durations (from its log):")
    for name, figures in extra["worker_tasks"].items():
        print(
            f"  {name:24} median {figures['median_ms']:7.1f} ms, max {figures['max_ms']:7.1f} ms"
            f" ({figures['count']} tasks)"
        )
    post_start = steps["run_start"]
    slot_figures = (
        {"median_s": round(median(starts), 3), "max_s": round(max(starts), 3)} if starts else {}
    )
    met_slot = bool(starts) and max(starts) < 1.0
    naive = naive_summary(latency["naive"])
    before_ssh = summarize(samples, "to_provisioning")["median_ms"]
    comparisons = []
    met_start = post_start["median_ms"] < 300
    if naive:
        ratio = naive["to_run_start"]["median_ms"] / post_start["median_ms"]
        met_start = met_start and ratio >= 3
        note = (
            f"ours {len(samples)} runs, naive {naive['runs']} runs (slow: a venv + pip install "
            "each; pip fetches the runner's requirements from the index every run, its HTTP "
            "cache stays empty on this host). Naive is timed from its first SSH step: it skips "
            f"the API request and queue hop ours includes ({before_ssh} ms median), so the "
            "ratio understates the gap."
        )
        missed = ""
        if not met_start:
            missed = (
                f" Goal missed: ours {post_start['median_ms']} ms median on {info.get('cpus')} "
                f"CPUs at load average {info.get('load_average_1m')} to "
                f"{info.get('load_average_1m_end')}: POST handled in "
                f"{steps['post_returned']['median_ms']} ms, then "
                + ", ".join(
                    f"{label.split(' (')[0]} {figures['median_ms']} ms"
                    for label, figures in list(breakdown.items())[:3]
                )
                + " (medians)."
            )
        for metric, key in (("median", "median_ms"), ("p95", "p95_ms")):
            comparisons.append(
                comparison(
                    "dispatch", metric=f"POST -> run_start {metric}", unit="ms",
                    ours=post_start[key], naive=naive["to_run_start"][key],
                    higher_is_better=False,
                    goal="median < 300 ms and >= 3x naive" if metric == "median" else "",
                    met=met_start if metric == "median" else None,
                    note=note + missed if metric == "median" else note,
                )
            )  # fmt: skip
        print(
            f"naive design, {naive['runs']} runs (median / p95, ms; a new SSH connection per step, "
            "runner uploaded every run, new venv + pip install every run):"
        )
        rows = {"first step -> runner wrote run_start": naive["to_run_start"], **naive["steps"]}
        for label, figures in rows.items():
            print(f"  {label:58} {figures['median_ms']:8.1f} {figures['p95_ms']:8.1f}")
        print(
            f"  {naive['connections_per_run']} SSH connections a run, each "
            f"{naive['connect']['median_ms']} ms median to open and log in"
        )
        for item in comparisons:
            print(
                f"  ours / naive, {item['metric']}: {item['ours']} / {item['naive']} ms = "
                f"{item['ratio']}x faster"
            )
    print(
        f"goal POST -> run_start median < 300 ms and >= 3x naive: "
        f"{'met' if met_start else 'MISSED'} ({post_start['median_ms']} ms); goal a run "
        f"starts within 1 s of a slot freeing: {'met' if met_slot else 'MISSED'} "
        f"({slot_figures or 'no valid pair'})"
    )
    result(
        {
            "machine": info,
            "broker": broker,
            "runs": len(samples),
            "post_to_run_start": post_start,
            "post_to_done": steps["finished"],
            "steps_from_post": steps,
            "breakdown": breakdown,
            "event_visible_lag": lag,
            "slot_free_to_second_run_start": {**slot_figures, "pairs": pairs},
            **extra,
            "goal_post_to_run_start_median_ms": 300,
            "goal_post_to_run_start_met": met_start,
            "goal_slot_start_within_s": 1.0,
            "goal_slot_met": met_slot,
            "naive": naive,
            "comparisons": comparisons,
        }
    )
    return 0


def naive_summary(runs: list[NaiveRun]) -> dict[str, Any]:
    """Median / p95 of the naive runs: first step -> run_start, and each step."""
    if not runs:
        return {}

    def figures(values: list[float]) -> dict[str, float]:
        return {"median_ms": ms(median(values)), "p95_ms": ms(percentile(values, 95))}

    steps = {
        f"step: {name} (its own connection)": figures([r.steps[name] for r in runs])
        for name in runs[0].steps
    }
    steps["launch returned -> run_start (runner start-up)"] = figures(
        [r.to_run_start - (r.launched - r.started) for r in runs]
    )
    return {
        "runs": len(runs),
        "to_run_start": {
            **figures([r.to_run_start for r in runs]),
            "min_ms": ms(min(r.to_run_start for r in runs)),
            "max_ms": ms(max(r.to_run_start for r in runs)),
        },
        "steps": steps,
        "connect": figures([c for r in runs for c in r.connects]),
        "connections_per_run": len(runs[0].connects) + 1,  # + the removal afterwards
    }


if __name__ == "__main__":
    sys.exit(main())
