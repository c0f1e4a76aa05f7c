"""One run on one machine, as a worker executes it: lease -> provision -> launch detached ->
tail the events file -> finish. Idempotent and resumable: a second or redelivered task for the
same run takes over from the last stored ``seq`` instead of starting again, because the events
file on the host, not the worker, is the durable record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import InterfaceError, OperationalError
from django.db.models import Q
from django.utils import timezone

import remote_scripts
from machines import services as machine_services
from machines import ssh
from machines.models import Board, Machine
from machines.services.pool import requirements_hash, venv_python
from test_management_system.health import database_wait
from test_runner.event_lines import parse_event_lines
from test_runner.models import (
    ErrorCategory,
    RunArtifact,
    RunOutcome,
    RunStatus,
    TestCase,
    TestRun,
)
from test_runner.services.results import events_store
from test_runner.services.runs import (
    ACTIVE,
    candidate_machines,
    run_finish,
    run_note,
    run_transition,
)

logger = logging.getLogger(__name__)

# What the runner itself needs in the venv, on top of the case's requirements.
RUNNER_REQUIREMENTS: dict[str, str] = {TestCase.Kind.PYTEST: "pyserial>=3.5\npytest>=7\n"}
RUNNER_REQUIREMENTS_DEFAULT = "pyserial>=3.5\n"
LEASE_TTL = timedelta(minutes=2)
LEASE_RENEW_EVERY = 30.0
FLAGS_EVERY = 0.5
HEARTBEAT_EVERY = 2.0
READ_CHUNK = 4 * 1024 * 1024
# The runner writes a heartbeat every 2 s: this much silence means look whether it still lives.
SILENCE_CHECK = 8.0
KILL_GRACE = 5.0
# A database that keeps dropping the connection this often within one run is not ridden out.
MAX_DATABASE_LOSSES = 10
# Less free space than this where the run's workspace lives, and a runner that died without
# an end is taken to have died of a full disk (its events file could not grow).
DISK_FULL_KIB = 64

# exit code -> (outcome, error category, what to say)
EXIT_CODES: dict[int, tuple[str, str, str]] = {
    0: (RunOutcome.PASSED, ErrorCategory.NONE, "All tests passed."),
    1: (RunOutcome.FAILED, ErrorCategory.TEST, "Tests failed."),
    2: (RunOutcome.ERROR, ErrorCategory.TEST, "The case could not run as defined"),
    3: (RunOutcome.ERROR, ErrorCategory.INFRASTRUCTURE, "Board or serial error"),
    4: (RunOutcome.ERROR, ErrorCategory.INFRASTRUCTURE, "The runner failed internally"),
    5: (RunOutcome.TIMED_OUT, ErrorCategory.NONE, "The run timed out."),
    6: (RunOutcome.CANCELLED, ErrorCategory.NONE, "The run was cancelled."),
}


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@cache
def runner_bundle() -> tuple[str, dict[str, bytes]]:
    """The files shipped to hosts (remote_scripts/), and a hash naming this version of them."""
    root = Path(remote_scripts.__file__).resolve().parent
    files = {
        path.name: path.read_bytes()
        for path in sorted(root.iterdir())
        if path.suffix in (".py", ".json") and path.is_file()
    }
    digest = hashlib.sha256()
    for name, data in files.items():
        digest.update(name.encode() + b"\0" + data + b"\0")
    return digest.hexdigest()[:16], files


def combined_requirements(case_kind: str, requirements: str) -> str:
    base = RUNNER_REQUIREMENTS.get(case_kind, RUNNER_REQUIREMENTS_DEFAULT)
    return (requirements.rstrip() + "\n" + base) if requirements.strip() else base


def _sep(machine: Machine) -> str:
    return "\\" if machine.os == Machine.Os.WINDOWS else "/"


@dataclass
class Paths:
    workspace: str
    events: str
    runner_dir: str

    @classmethod
    def of(cls, run: TestRun, machine: Machine) -> Paths:
        sep = _sep(machine)
        base = machine.effective_work_dir
        workspace = run.remote_workspace or f"{base}{sep}runs{sep}{run.pk}-{run.uid.hex[:12]}"
        version, _ = runner_bundle()
        return cls(
            workspace=workspace,
            events=f"{workspace}{sep}events.jsonl",
            runner_dir=f"{base}{sep}runner{sep}{version}",
        )


class RunExecutor:
    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.worker = worker_name()
        self.database_losses = 0

    # -- entry point ----------------------------------------------------------------------------

    def execute(self) -> str:
        run = TestRun.objects.filter(pk=self.run_id).first()
        if run is None or run.status == RunStatus.DONE:
            return "done"
        if not self._claim(run):
            return "owned by another worker"
        TestRun.objects.filter(pk=run.pk).update(dispatch_count=run.dispatch_count + 1)
        try:
            if run.status == RunStatus.QUEUED:
                if run.cancel_requested:
                    run_finish(run_id=run.pk, outcome=RunOutcome.CANCELLED, by=self.worker,
                               message="Cancelled before it started.")  # fmt: skip
                    return "cancelled"
                leased = self._lease(run)
                if leased is None:
                    return "waiting"
                run = leased
            if run.status == RunStatus.PROVISIONING:
                run = self._provision_and_launch(run)
                if run.status == RunStatus.DONE:
                    return "done"
            if run.status in (RunStatus.RUNNING, RunStatus.FINISHING):
                self._stream(run)
            return "done"
        except ssh.SSHError as exc:
            current = TestRun.objects.get(pk=self.run_id)
            phase = "provisioning" if current.status == RunStatus.PROVISIONING else "running"
            run_finish(
                run_id=self.run_id, outcome=RunOutcome.ERROR,
                error_category=ErrorCategory.INFRASTRUCTURE, by=self.worker,
                message=f"Infrastructure error while {phase}: {exc.message}",
            )  # fmt: skip
            return "error"
        except (OperationalError, InterfaceError) as exc:
            return self._after_database_loss(exc)
        except Exception as exc:
            logger.exception("Run %s failed in the worker", self.run_id)
            run_finish(
                run_id=self.run_id, outcome=RunOutcome.ERROR,
                error_category=ErrorCategory.INFRASTRUCTURE, by=self.worker,
                message=f"Internal error in the worker ({type(exc).__name__}: {exc}); the "
                "details are in the worker log.",
            )  # fmt: skip
            return "error"
        finally:
            TestRun.objects.filter(pk=self.run_id, worker=self.worker).exclude(
                status__in=ACTIVE
            ).update(worker="")

    def _after_database_loss(self, exc: Exception) -> str:
        """The database went away (restart, failover) while the runner went on writing its
        events file on the host: once the database answers again, carry on from the last
        stored event instead of calling a healthy run an error. If it stays away, the task
        fails and the sweep resumes the run when it is back."""
        self.database_losses += 1
        logger.warning("Run %s: lost the database connection: %s", self.run_id, exc)
        window = float(settings.RUN_RECONNECT_WINDOW_SECONDS)
        if self.database_losses > MAX_DATABASE_LOSSES or not database_wait(timeout=window):
            raise exc
        run_note(
            run_id=self.run_id, by=self.worker,
            message=f"The database connection was lost ({type(exc).__name__}); the worker "
            "reconnected and carried on from the last stored event.",
        )  # fmt: skip
        return self.execute()

    def _claim(self, run: TestRun) -> bool:
        """Takes the run unless another live worker has it."""
        stale = timezone.now() - timedelta(seconds=settings.RUN_STALE_HEARTBEAT_SECONDS)
        return bool(
            TestRun.objects.filter(pk=run.pk)
            .exclude(status=RunStatus.DONE)
            .filter(Q(worker="") | Q(worker=self.worker) | Q(heartbeat_at__lt=stale)
                    | Q(heartbeat_at__isnull=True))
            .update(worker=self.worker, heartbeat_at=timezone.now())
        )  # fmt: skip

    # -- lease ----------------------------------------------------------------------------------

    def _lease(self, run: TestRun) -> TestRun | None:
        case = run.case
        version = run.case_version
        wanted = requirements_hash(combined_requirements(case.kind, version.requirements))
        machines = candidate_machines(
            case=case, user=run.requested_by, machine=run.requested_machine,
            label=run.requested_label,
        )  # fmt: skip
        board_labels = list(case.board_labels.values_list("name", flat=True))
        waits: list[str] = []
        for machine in machines:
            if not machine.is_usable:
                waits.append(
                    f"{machine.name} is {'in maintenance' if machine.maintenance else 'disabled'}"
                )
                continue
            board: Board | None = None
            if case.needs_board:
                board = machine_services.board_lease(
                    machine=machine, holder=run.holder, ttl=LEASE_TTL,
                    board_id=run.requested_board_id, labels=board_labels,
                )  # fmt: skip
                if board is None:
                    waits.append(f"no free board on {machine.name}")
                    continue
            venv = machine_services.venv_lease(
                machine=machine, holder=run.holder, requirements_hash=wanted, ttl=LEASE_TTL
            )
            if venv is None:
                if board is not None:
                    machine_services.board_release(holder=run.holder)
                waits.append(f"no free venv on {machine.name}")
                continue
            moved = run_transition(
                run_id=run.pk, to=RunStatus.PROVISIONING, allowed_from=(RunStatus.QUEUED,),
                by=self.worker, message=f"Provisioning on {machine.name}.",
                machine=machine, venv=venv, board=board, heartbeat_at=timezone.now(),
            )  # fmt: skip
            if moved is None:  # cancelled meanwhile
                machine_services.venv_release(holder=run.holder, reset=False)
                machine_services.board_release(holder=run.holder)
                return None
            return moved
        message = "Waiting: " + "; ".join(waits) + "." if waits else "Waiting for a machine."
        # No longer in flight: the next slot freed on one of its machines sends it again.
        TestRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
            status_message=message, worker="", dispatched_at=None
        )
        return None

    # -- provision + launch ---------------------------------------------------------------------

    def _provision_and_launch(self, run: TestRun) -> TestRun:
        machine = run.machine
        assert machine is not None and run.venv is not None
        conn = machine_services.machine_connection(machine=machine)
        paths = Paths.of(run, machine)
        TestRun.objects.filter(pk=run.pk).update(remote_workspace=paths.workspace)

        # A previous worker may have launched the runner and died before recording it.
        if self._events_exist(conn, paths):
            pid = self._pid_from_events(conn, paths)
            return self._mark_running(run, paths, pid, "Resumed: the runner was already started.")

        case = run.case
        version = run.case_version
        machine_services.venv_sync_requirements(
            venv=run.venv, holder=run.holder,
            requirements=combined_requirements(case.kind, version.requirements),
        )  # fmt: skip
        self._upload_runner(conn, paths)
        self._upload_case_files(conn, paths, version.files)
        if self._cancelled(run):
            run_finish(run_id=run.pk, outcome=RunOutcome.CANCELLED, by=self.worker,
                       message="Cancelled while provisioning.")  # fmt: skip
            return TestRun.objects.get(pk=run.pk)
        command = self._runner_command(run, paths)
        pid = conn.start_detached(command, log_path=paths.workspace + _sep(machine) + "runner.log")
        return self._mark_running(run, paths, pid, "Running.")

    def _mark_running(self, run: TestRun, paths: Paths, pid: int, message: str) -> TestRun:
        moved = run_transition(
            run_id=run.pk, to=RunStatus.RUNNING, allowed_from=(RunStatus.PROVISIONING,),
            by=self.worker, message=message, remote_pid=pid, remote_workspace=paths.workspace,
            started_at=run.started_at or timezone.now(), heartbeat_at=timezone.now(),
        )  # fmt: skip
        return moved or TestRun.objects.get(pk=run.pk)

    @staticmethod
    def _cancelled(run: TestRun) -> bool:
        return TestRun.objects.filter(pk=run.pk, cancel_requested=True).exists()

    @staticmethod
    def _events_exist(conn: ssh.SSHConnection, paths: Paths) -> bool:
        try:
            return bool(conn.read_from(paths.events, 0, 1))
        except ssh.RemoteFileError:
            return False

    @staticmethod
    def _pid_from_events(conn: ssh.SSHConnection, paths: Paths) -> int:
        head = conn.read_from(paths.events, 0, 64 * 1024).split(b"\n", 1)[0]
        return int(json.loads(head).get("pid") or 0)

    def _upload_runner(self, conn: ssh.SSHConnection, paths: Paths) -> None:
        """Uploads remote_scripts/ once per version of it (its hash names the directory)."""
        _version, files = runner_bundle()
        sep = "/" if "/" in paths.runner_dir else "\\"
        marker = f"{paths.runner_dir}{sep}.complete"
        try:
            conn.read_from(marker, 0, 1)
            return
        except ssh.RemoteFileError:
            pass
        package = f"{paths.runner_dir}{sep}remote_scripts"
        self._mkdirs(conn, [package])
        for name, data in files.items():
            conn.put(data, f"{package}{sep}{name}")
        conn.put(b"", marker)

    def _upload_case_files(
        self, conn: ssh.SSHConnection, paths: Paths, files: dict[str, str]
    ) -> None:
        sep = "/" if "/" in paths.workspace else "\\"
        directories = {paths.workspace}
        for relative in files:
            parts = relative.split("/")[:-1]
            if parts:
                directories.add(paths.workspace + sep + sep.join(parts))
        self._mkdirs(conn, sorted(directories))
        for relative, text in files.items():
            conn.put(text.encode(), paths.workspace + sep + relative.replace("/", sep))

    @staticmethod
    def _mkdirs(conn: ssh.SSHConnection, directories: list[str]) -> None:
        for directory in directories:
            conn.make_dirs(directory)

    def _runner_command(self, run: TestRun, paths: Paths) -> ssh.Command:
        machine, venv, board, case = run.machine, run.venv, run.board, run.case
        assert machine is not None and venv is not None
        sep = _sep(machine)
        runner = f"{paths.runner_dir}{sep}remote_scripts{sep}runner.py"
        args: list[str] = [
            venv_python(venv), runner, "--mode", case.kind, "--events-file", paths.events,
            "--workspace", paths.workspace, "--run-id", str(run.pk), "--no-stdout",
            "--heartbeat-interval", "2",
        ]  # fmt: skip
        if board is not None:
            args += [
                "--serial-url", board.serial_port, "--baud", str(board.baud_rate),
                "--bytesize", str(board.data_bits), "--parity", board.parity,
                "--stopbits", board.stop_bits, "--flow", board.flow_control,
                "--serial-log", f"{paths.workspace}{sep}serial.log",
            ]  # fmt: skip
        version = run.case_version
        if case.kind == TestCase.Kind.BOARD:
            for key, value in run.parameters.items():
                args += ["--test-arg", f"{key}={value}"]
            targets = version.entry_point.split() + list(version.arguments)
        else:
            targets = shlex.split(version.entry_point) + list(version.arguments)
        command = ssh.Command(*args, "--", *targets)
        if run.parameters:
            command = command.env({f"TMS_PARAM_{k.upper()}": v for k, v in run.parameters.items()})
        return command

    # -- stream ---------------------------------------------------------------------------------

    def _stream(self, run: TestRun) -> None:
        machine = run.machine
        assert machine is not None
        paths = Paths.of(run, machine)
        pgid = run.remote_pid or 0
        child_pid = 0
        last_data = time.monotonic()
        last_flags = last_renew = last_beat = 0.0
        kill_reason = ""  # "cancel" or "timeout" once we stopped it
        unreachable_since: float | None = None
        poll = 0.05
        pending = b""
        offset = run.events_offset

        window = float(settings.RUN_RECONNECT_WINDOW_SECONDS)
        live: dict[str, ssh.SSHConnection] = {}  # the connection in use, for lost() to drop

        def lost(exc: ssh.SSHError, now: float) -> bool:
            """A dropped connection anywhere in the loop: wait and reconnect, within the
            window; False once the run was given up."""
            nonlocal unreachable_since
            if unreachable_since is None:
                unreachable_since = now
                TestRun.objects.filter(pk=run.pk).update(
                    status_message=f"Lost the SSH connection to machine {machine.name}, "
                    f"reconnecting: {exc.message}"
                )
            if now - unreachable_since > window:
                run_finish(
                    run_id=run.pk, outcome=RunOutcome.ERROR,
                    error_category=ErrorCategory.INFRASTRUCTURE, by=self.worker,
                    message=f"Machine {machine.name} unreachable over SSH for {window:.0f} s; "
                    f"gave the run up (the runner may still be running there): {exc.message}",
                )  # fmt: skip
                return False
            stale = live.pop("conn", None)
            if stale is not None:
                # A transport that still looks alive (a half-open socket) is not reused.
                stale.close()
            TestRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
            time.sleep(min(5.0, 0.5 + (now - unreachable_since) / 4))
            return True

        while True:
            now = time.monotonic()
            try:
                conn = live["conn"] = machine_services.machine_connection(machine=machine)
                data = conn.read_from(paths.events, offset, READ_CHUNK)
                unreachable_since = None
            except ssh.RemoteFileError:
                data = b""
            except (ssh.MachineUnreachable, ssh.CommandTimeout) as exc:
                if not lost(exc, now):
                    return
                continue

            if data:
                last_data = now
                poll = 0.05
                chunk = pending + data
                complete, _, pending = chunk.rpartition(b"\n")
                offset += len(data)
                if complete:
                    events = self._parse(complete)
                    stored_offset = offset - len(pending)
                    events_store(run=run, events=events, events_offset=stored_offset)
                    child_pid = getattr(run, "child_pid", child_pid)
                    end = next((e for e in events if e.get("type") == "run_end"), None)
                    if end is not None:
                        self._finish_from_end(run, end, kill_reason, paths)
                        return
                if len(data) == READ_CHUNK:
                    continue  # more is waiting: read on at once
            else:
                time.sleep(poll)
                poll = min(poll * 1.5, 0.5)

            if now - last_beat >= HEARTBEAT_EVERY:
                TestRun.objects.filter(pk=run.pk).update(
                    heartbeat_at=timezone.now(), worker=self.worker
                )
                last_beat = now
            if now - last_renew >= LEASE_RENEW_EVERY:
                machine_services.venv_renew(holder=run.holder, ttl=LEASE_TTL)
                machine_services.board_renew(holder=run.holder, ttl=LEASE_TTL)
                last_renew = now
            try:
                if now - last_flags >= FLAGS_EVERY:
                    last_flags = now
                    kill_reason = self._control(run, conn, pgid, child_pid, kill_reason)

                paused = run.paused_at is not None
                if not paused and now - last_data > SILENCE_CHECK:
                    if not self._alive(conn, pgid):
                        # One last read: the end may have been written just before it exited.
                        tail = conn.read_from(paths.events, offset, READ_CHUNK)
                        if tail:
                            continue
                        self._finish_without_end(run, conn, paths, kill_reason)
                        return
                    last_data = now
            except (ssh.MachineUnreachable, ssh.CommandTimeout) as exc:
                if not lost(exc, now):
                    return

    @staticmethod
    def _parse(blob: bytes) -> list[dict[str, Any]]:
        """Complete lines of the events file -> the events to store. Never raises: a line that
        is not a valid, storable event (test_runner/event_lines.py) is logged and skipped."""
        events, rejected = parse_event_lines(blob)
        for line in rejected:
            logger.warning(
                "Skipping line %d of an events batch: %s: %r", line.line, line.reason, line.excerpt
            )
        return events

    def _control(
        self, run: TestRun, conn: ssh.SSHConnection, pgid: int, child_pid: int, kill_reason: str
    ) -> str:
        """Acts on cancel, pause/resume and the timeout; returns why the run was stopped."""
        flags = (
            TestRun.objects.filter(pk=run.pk)
            .values(
                "cancel_requested", "pause_requested", "paused_at", "paused_seconds", "started_at"
            )
            .first()
        )
        if flags is None:
            return kill_reason
        run.paused_at = flags["paused_at"]
        run.paused_seconds = flags["paused_seconds"]
        groups = [g for g in (pgid, child_pid) if g and g > 1]
        if flags["pause_requested"] and run.paused_at is None and groups:
            self._signal(conn, groups, "STOP")
            run.paused_at = timezone.now()
            TestRun.objects.filter(pk=run.pk).update(
                paused_at=run.paused_at, status_message="Paused."
            )
        elif not flags["pause_requested"] and run.paused_at is not None:
            self._signal(conn, groups, "CONT")
            run.paused_seconds += (timezone.now() - run.paused_at).total_seconds()
            run.paused_at = None
            TestRun.objects.filter(pk=run.pk).update(
                paused_at=None, paused_seconds=run.paused_seconds, status_message="Running."
            )
        if kill_reason:
            return kill_reason
        started = flags["started_at"] or timezone.now()
        active = (timezone.now() - started).total_seconds() - run.paused_seconds
        if run.paused_at is not None:
            active -= (timezone.now() - run.paused_at).total_seconds()
        reason = ""
        if flags["cancel_requested"]:
            reason = "cancel"
        elif active > run.timeout:
            reason = "timeout"
            TestRun.objects.filter(pk=run.pk).update(
                status_message=f"Timed out after {run.timeout} s; stopping it."
            )
        if reason and pgid > 1:
            if run.paused_at is not None:
                self._signal(conn, groups, "CONT")  # a stopped process cannot handle TERM
            conn.kill_process_group(pgid, grace=KILL_GRACE)
            if child_pid > 1:
                conn.kill_process_group(child_pid, grace=1.0)
        return reason

    @staticmethod
    def _signal(conn: ssh.SSHConnection, groups: list[int], name: str) -> None:
        for group in groups:
            conn.run(ssh.Command("kill", f"-{name}", f"-{group}"), check=False, timeout=15)

    @staticmethod
    def _alive(conn: ssh.SSHConnection, pgid: int) -> bool:
        if pgid <= 1:
            return False
        # Zombies do not count: a reaped-late process is not a running runner.
        script = "ps -eo pgid=,stat= | awk -v g=\"$1\" '$1 == g && $2 !~ /^Z/ {f=1} END {exit !f}'"
        return conn.run(
            ssh.Command("sh", "-c", script, "sh", str(pgid)), check=False, timeout=15
        ).ok

    def _finish_from_end(
        self, run: TestRun, end: dict[str, Any], kill_reason: str, paths: Paths
    ) -> None:
        TestRun.objects.filter(pk=run.pk).update(status=RunStatus.FINISHING)
        code = int(end.get("exit_code", 4))
        outcome, category, text = EXIT_CODES.get(
            code, (RunOutcome.ERROR, ErrorCategory.INFRASTRUCTURE, f"Unknown exit code {code}")
        )
        if kill_reason == "timeout" and outcome == RunOutcome.CANCELLED:
            outcome, text = RunOutcome.TIMED_OUT, f"Timed out after {run.timeout} s."
        detail = str(end.get("message") or "").strip()
        if outcome in (RunOutcome.ERROR,) and detail:
            text = f"{text}: {detail}"
        elif outcome == RunOutcome.FAILED:
            summary = end.get("summary") or {}
            text = (
                f"{summary.get('failed', 0)} failed, {summary.get('error', 0)} errors, "
                f"{summary.get('passed', 0)} passed."
            )
        self._fetch_artifacts(run, paths)
        run_finish(
            run_id=run.pk, outcome=outcome, error_category=category, by=self.worker,
            message=text, exit_code=code,
        )  # fmt: skip

    def _finish_without_end(
        self, run: TestRun, conn: ssh.SSHConnection, paths: Paths, kill_reason: str
    ) -> None:
        self._fetch_artifacts(run, paths)
        if kill_reason == "cancel":
            outcome, category, text = RunOutcome.CANCELLED, ErrorCategory.NONE, "Cancelled."
        elif kill_reason == "timeout":
            outcome, category = RunOutcome.TIMED_OUT, ErrorCategory.NONE
            text = f"Timed out after {run.timeout} s."
        else:
            outcome, category = RunOutcome.ERROR, ErrorCategory.INFRASTRUCTURE
            machine = run.machine
            assert machine is not None
            tail = ""
            try:
                log = conn.get(paths.workspace + _sep(machine) + "runner.log")
                tail = log.decode(errors="replace").strip()[-500:]
            except ssh.SSHError:
                pass
            full = self._disk_full(conn, machine, paths.workspace)
            if full or "No space left on device" in tail:
                text = (
                    f"No space left on the host: the disk of machine {machine.name} that holds "
                    f"the run's workspace {paths.workspace} is full{full}, so the runner could "
                    "not write its events and stopped. Free space there and run it again."
                )
            else:
                text = "The runner stopped without reporting an end (killed, or the host rebooted)."
            if tail:
                text += f" Its last output: {tail}"
        run_finish(run_id=run.pk, outcome=outcome, error_category=category, by=self.worker,
                   message=text)  # fmt: skip

    @staticmethod
    def _disk_full(conn: ssh.SSHConnection, machine: Machine, workspace: str) -> str:
        """A note like ``" (12 KiB free)"`` when the file system holding ``workspace`` is
        (nearly) full, else an empty string (also on Windows, and when df cannot answer)."""
        if machine.os == Machine.Os.WINDOWS:
            return ""
        try:
            result = conn.run(ssh.Command("df", "-Pk", "--", workspace), check=False, timeout=15)
        except ssh.SSHError:
            return ""
        lines = result.stdout.strip().splitlines()
        fields = lines[-1].split() if result.ok and len(lines) >= 2 else []
        if len(fields) < 6 or not fields[3].isdigit():
            return ""
        free = int(fields[3])
        return f" ({free} KiB free)" if free < DISK_FULL_KIB else ""

    def _fetch_artifacts(self, run: TestRun, paths: Paths) -> None:
        machine = run.machine
        assert machine is not None
        sep = _sep(machine)
        try:
            conn = machine_services.machine_connection(machine=machine)
        except ssh.SSHError:
            return
        for name in ("junit.xml", "runner.log", "serial.log"):
            try:
                data = conn.get(paths.workspace + sep + name)
            except ssh.SSHError:
                continue
            if RunArtifact.objects.filter(run=run, name=name).exists():
                continue
            artifact = RunArtifact(run=run, name=name, size=len(data))
            artifact.file.save(f"run-{run.pk}-{name}", ContentFile(data), save=False)
            artifact.save()


def run_execute(*, run_id: int) -> str:
    return RunExecutor(run_id).execute()


# -- runners left behind --------------------------------------------------------------------------

# Exit 0 when process $1 is still the runner of the workspace $2 (its command line names it):
# a pid the host has since given to another process is never signalled.
_IS_RUNNER_OF = 'grep -qaF -- "$2" "/proc/$1/cmdline" 2>/dev/null'
ORPHAN_MAX_AGE = timedelta(days=2)


def runners_reap(*, machine: Machine) -> list[int]:
    """Stops the runners that may have outlived their run on ``machine``: runs given up while
    the machine was unreachable (the runner is detached and goes on, holding the board's
    port) never got a ``run_end``. Called when the machine answers again; returns the runs
    whose runner was still there and is now stopped. Only Linux hosts (``/proc``)."""
    if machine.os == Machine.Os.WINDOWS:
        return []
    candidates = (
        TestRun.objects.filter(
            machine=machine, status=RunStatus.DONE, outcome=RunOutcome.ERROR,
            finished_at__gte=timezone.now() - ORPHAN_MAX_AGE, remote_pid__gt=1,
        )
        .exclude(remote_workspace="")
        .exclude(events__type="run_end")
        .only("pk", "remote_pid", "remote_workspace")
    )  # fmt: skip
    stopped: list[int] = []
    conn = None
    for run in candidates:
        pid = int(run.remote_pid or 0)
        conn = conn or machine_services.machine_connection(machine=machine)
        check = ssh.Command("sh", "-c", _IS_RUNNER_OF, "sh", pid, run.remote_workspace)
        if conn.run(check, timeout=30, check=False).exit_code != 0:
            continue
        if conn.kill_process_group(pid, grace=5.0):
            logger.warning(
                "Run %s: stopped its runner (pid %s) left on %s when the run was given up",
                run.pk, run.remote_pid, machine.name,
            )  # fmt: skip
            stopped.append(run.pk)
    return stopped
