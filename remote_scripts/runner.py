"""The test runner shipped to test hosts.

    python remote_scripts/runner.py --mode board  --events-file RUN/events.jsonl \\
        --serial-url /dev/ttyUSB0 --baud 115200 smoke gpio_toggle
    python remote_scripts/runner.py --mode pytest --events-file RUN/events.jsonl \\
        --serial-url /dev/ttyUSB0 -- tests/test_board.py -k smoke
    python remote_scripts/runner.py --mode script --events-file RUN/events.jsonl -- check.py

Writes run events as JSON lines to stdout and appends them to the events file (the server
tails it). The command line, the events and the exit codes are specified in
docs/RUNNER_EVENTS.md. Standard library + pyserial; Python >= 3.9; Linux and Windows.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, Dict, List, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import remote_scripts
from remote_scripts.events import ChildChannel, ChildTail, EventWriter, SerialTap, clip
from remote_scripts.serial_link import (
    BYTESIZES,
    FLOW_CONTROLS,
    PARITIES,
    BoardLink,
    BoardLost,
    SerialConfig,
)

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BOARD_ERROR = 3
EXIT_INTERNAL_ERROR = 4
EXIT_TIMEOUT = 5
EXIT_CANCELLED = 6

REASONS = {
    EXIT_PASSED: "passed",
    EXIT_FAILED: "failed",
    EXIT_USAGE: "usage_error",
    EXIT_BOARD_ERROR: "board_error",
    EXIT_INTERNAL_ERROR: "internal_error",
    EXIT_TIMEOUT: "timeout",
    EXIT_CANCELLED: "cancelled",
}

MAX_TEXT = 8192  # longest message / failure text in one event
MAX_LOG_LINE = 4096
MAX_ASSERTIONS = 200
CREATE_NEW_PROCESS_GROUP = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x00000200)
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(remote_scripts.__file__)))


class UsageError(Exception):
    pass


# ------------------------------------------------------------- pure helpers


def child_popen_kwargs(os_name: str = os.name) -> Dict[str, Any]:
    """Popen arguments that put a child in its own process group (killable as a tree)."""
    if os_name == "nt":
        return {"creationflags": CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def kill_tree_command(pid: int) -> List[str]:
    """Windows: the command that force-kills a process and all its descendants."""
    return ["taskkill", "/PID", str(int(pid)), "/T", "/F"]


def child_env(
    base: Dict[str, str],
    extra: Dict[str, str],
    package_parent: str = PACKAGE_PARENT,
    pathsep: str = os.pathsep,
) -> Dict[str, str]:
    """Environment for a child: ``extra`` added, ``remote_scripts`` importable, unbuffered."""
    env = dict(base)
    env.update(extra)
    current = env.get("PYTHONPATH", "")
    parts = [package_parent] + [p for p in current.split(pathsep) if p and p != package_parent]
    env["PYTHONPATH"] = pathsep.join(parts)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


def build_pytest_command(python: str, pytest_args: Sequence[str], junit_xml: str) -> List[str]:
    cmd = [python, "-m", "pytest", "-p", "remote_scripts.tms_pytest_plugin"]
    if not any(a == "--junitxml" or a.startswith("--junitxml=") for a in pytest_args):
        cmd.append("--junitxml=" + junit_xml)
    cmd.extend(pytest_args)
    return cmd


def build_script_command(python: str, script: str, script_args: Sequence[str]) -> List[str]:
    return [python, script, *list(script_args)]


def pytest_exit_to_runner(code: int) -> int:
    """pytest's exit status (0 ok, 1 failed, 2 interrupted or collection errors, 3 internal,
    4 usage, 5 nothing collected; negative = killed by a signal) to the runner's."""
    return {
        0: EXIT_PASSED,
        1: EXIT_FAILED,
        2: EXIT_FAILED,
        3: EXIT_INTERNAL_ERROR,
        4: EXIT_USAGE,
        5: EXIT_USAGE,
    }.get(code, EXIT_INTERNAL_ERROR)


def stop_signals(os_name: str = os.name) -> List[str]:
    """Names of the signals that stop a run on this platform."""
    if os_name == "nt":
        return ["SIGINT", "SIGBREAK"]
    return ["SIGTERM", "SIGINT"]


def terminate_tree(proc: subprocess.Popen, grace: float, os_name: str = os.name) -> str:
    """Stop a child started with child_popen_kwargs and everything it started.

    POSIX: SIGTERM to its process group, SIGKILL after ``grace``. Windows: CTRL_BREAK_EVENT
    to its group, ``taskkill /T /F`` after ``grace``. Returns how it ended.
    """
    if proc.poll() is not None:
        return "exited"
    try:
        if os_name == "nt":
            os.kill(proc.pid, signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
        else:
            os.killpg(proc.pid, signal.SIGTERM)
    except (OSError, ProcessLookupError):
        pass
    try:
        proc.wait(grace)
        return "terminated"
    except subprocess.TimeoutExpired:
        pass
    try:
        if os_name == "nt":
            subprocess.run(  # noqa: S603 - fixed argv, no shell
                kill_tree_command(proc.pid), capture_output=True, check=False
            )
        else:
            os.killpg(proc.pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        return "unkillable"
    return "killed"


# ------------------------------------------------------------------ the CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="runner.py",
        description="Run a test against a board and write run events (docs/RUNNER_EVENTS.md).",
    )
    p.add_argument("--mode", required=True, choices=("pytest", "script", "board"))
    p.add_argument("--events-file", required=True, help="append events here (JSON lines)")
    p.add_argument("--workspace", help="working directory (default: the events file's)")
    p.add_argument("--run-id", help="copied into every event")
    p.add_argument("--no-stdout", action="store_true", help="events to the file only")
    s = p.add_argument_group("serial port")
    s.add_argument("--serial-url", help="device path or pyserial URL (loop://, socket://...)")
    s.add_argument("--baud", type=int, default=115200)
    s.add_argument("--bytesize", type=int, default=8, choices=BYTESIZES)
    s.add_argument("--parity", default="N", choices=PARITIES)
    s.add_argument("--stopbits", type=float, default=1, choices=(1, 1.5, 2))
    s.add_argument("--flow", default="none", choices=FLOW_CONTROLS)
    s.add_argument("--no-exclusive", action="store_true", help="do not lock the port")
    s.add_argument("--reconnect-window", type=float, default=10.0, help="seconds")
    s.add_argument("--serial-log", help="also write every byte received/sent to this file")
    s.add_argument("--serial-event-bytes", type=int, default=2048, help="bound per event")
    t = p.add_argument_group("time")
    t.add_argument("--heartbeat-interval", type=float, default=5.0, help="seconds; 0 = none")
    t.add_argument("--timeout", type=float, default=0, help="watchdog for the whole run; 0=none")
    t.add_argument("--grace", type=float, default=5.0, help="seconds between TERM and KILL")
    b = p.add_argument_group("board mode")
    b.add_argument("--test-arg", action="append", default=[], help="KEY=VALUE for EXEC_TEST")
    b.add_argument("--start-timeout", type=float, default=10.0, help="wait for TEST_START")
    b.add_argument("--test-timeout", type=float, default=300.0, help="wait for TEST_END")
    b.add_argument("--testrun-id-base", type=int, default=None)
    p.add_argument(
        "target",
        nargs="*",
        help="pytest: pytest arguments; script: the script and its arguments; "
        "board: names of the tests to run on the board",
    )
    return p


class StopState:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason: Optional[str] = None
        self.signal: Optional[str] = None

    def request(self, reason: str, signame: Optional[str] = None) -> None:
        if self.reason is None:
            self.reason = reason
            self.signal = signame
        self.event.set()


class Runner:
    def __init__(self, args: argparse.Namespace, writer: EventWriter) -> None:
        self.args = args
        self.writer = writer
        self.stop = StopState()
        self.started = time.monotonic()
        self.phase = "starting"
        self.current_test: Optional[str] = None
        self.child: Optional[subprocess.Popen] = None
        self.link: Optional[BoardLink] = None
        self.board_error: Optional[str] = None
        self.counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0, "total": 0}
        self.open_tests: Dict[str, str] = {}
        self.workspace = args.workspace or os.path.dirname(os.path.abspath(args.events_file))
        self.tap = SerialTap(
            self.emit,
            max_bytes=args.serial_event_bytes,
            log_path=args.serial_log,
        )
        self._ticker_stop = threading.Event()
        self._last_heartbeat_status = 0.0
        self.events_error: Optional[str] = None
        self._events_lock = threading.Lock()

    # --------------------------------------------------------------- events

    def emit(self, type_: str, fields: Optional[Dict[str, Any]] = None, ts: Optional[str] = None):
        """Write one event; after the events file failed (disk full, I/O error) nothing more.

        A write that failed may have left a partial line; writing on would glue the next event
        to it and lose a seq. So the first failure stops the run instead: the server reads the
        complete lines before it, sees the runner gone and finds out why.
        """
        if self.events_error is not None:
            return None
        try:
            return self.writer.emit(type_, fields, ts=ts)
        except OSError as exc:
            self._events_failed(exc)
            return None

    def _events_failed(self, exc: OSError) -> None:
        with self._events_lock:
            if self.events_error is not None:
                return
            self.events_error = "cannot write the events file %s: %s" % (
                self.args.events_file,
                exc.strerror or exc,
            )
        self.stop.request("events_failed")
        # stderr goes to runner.log, most likely on the same full disk: best effort.
        with contextlib.suppress(OSError, ValueError):
            print("runner: %s; stopping the run" % self.events_error, file=sys.stderr, flush=True)

    def log(self, message: str, level: str = "INFO", source: str = "runner", **extra: Any):
        text, cut = clip(message, MAX_TEXT)
        fields: Dict[str, Any] = {"source": source, "level": level, "message": text}
        if cut:
            fields["truncated"] = True
        fields.update(extra)
        self.emit("log", fields)

    def error(self, kind: str, message: str, **extra: Any) -> None:
        text, _ = clip(message, MAX_TEXT)
        self.emit("error", dict(extra, kind=kind, message=text))

    def serial_config(self) -> Optional[SerialConfig]:
        a = self.args
        if not a.serial_url:
            return None
        stopbits = int(a.stopbits) if a.stopbits in (1.0, 2.0) else a.stopbits
        return SerialConfig(
            a.serial_url,
            baudrate=a.baud,
            bytesize=a.bytesize,
            parity=a.parity,
            stopbits=stopbits,
            flow=a.flow,
            exclusive=not a.no_exclusive,
            reconnect_window=a.reconnect_window,
        )

    def on_board_status(self, state: str, info: Dict[str, Any]) -> None:
        fields = dict(info, state=state, source="link")
        self.emit("board_status", fields)
        if state == "lost":
            self.board_error = info.get("error", "board lost")

    # -------------------------------------------------------------- ticker

    def _ticker(self) -> None:
        interval = self.args.heartbeat_interval
        next_beat = time.monotonic() + interval if interval > 0 else None
        while not self._ticker_stop.wait(0.1):
            now = time.monotonic()
            if self.args.timeout and now - self.started >= self.args.timeout:
                self.stop.request("timeout")
            self.tap.flush()
            if next_beat is not None and now >= next_beat:
                next_beat = now + interval
                self.emit("heartbeat", self._heartbeat_fields())

    def _heartbeat_fields(self) -> Dict[str, Any]:
        fields: Dict[str, Any] = {
            "uptime_s": round(time.monotonic() - self.started, 3),
            "phase": self.phase,
            "test": self.current_test,
            "pid": os.getpid(),
        }
        if self.child is not None:
            fields["child_pid"] = self.child.pid
        if self.link is not None:
            fields["serial"] = self.link.stats()
        return fields

    # ----------------------------------------------------------------- run

    def run(self, argv: Sequence[str]) -> int:
        a = self.args
        config_problem = ""
        try:
            config = self.serial_config()
        except ValueError as exc:
            config, config_problem = None, "serial settings: %s" % exc
        self.emit(
            "run_start",
            {
                "mode": a.mode,
                "argv": list(argv),
                "target": list(a.target),
                "pid": os.getpid(),
                "python": sys.version.split()[0],
                "platform": sys.platform,
                "runner_version": remote_scripts.__version__,
                "workspace": self.workspace,
                "serial": config.describe() if config is not None else None,
                "resumed_from_seq": self.writer.resumed_from,
            },
        )
        if self.writer.repaired_bytes:
            self.log(
                "events file ended with a partial line of %d bytes; cut"
                % self.writer.repaired_bytes,
                level="WARNING",
            )
        ticker = threading.Thread(target=self._ticker, name="ticker", daemon=True)
        ticker.start()
        code = EXIT_INTERNAL_ERROR
        message = ""
        try:
            self.phase = "running"
            if config_problem:
                raise UsageError(config_problem)
            if a.mode == "board":
                code = self.run_board()
            elif a.mode == "pytest":
                code = self.run_child(pytest_mode=True)
            else:
                code = self.run_child(pytest_mode=False)
        except UsageError as exc:
            code, message = EXIT_USAGE, str(exc)
            self.error("usage", message)
        except BoardLost as exc:
            code, message = EXIT_BOARD_ERROR, str(exc)
            self.error("board", message)
        except Exception as exc:  # noqa: BLE001 - every failure ends in a run_end
            code, message = EXIT_INTERNAL_ERROR, "%s: %s" % (type(exc).__name__, exc)
            self.error("internal", message, traceback=clip(traceback.format_exc(), MAX_TEXT)[0])
        finally:
            self.phase = "finishing"
            self._ticker_stop.set()
            ticker.join(2)
            if self.link is not None:
                self.link.close()
        if self.stop.reason == "events_failed":
            code, message = EXIT_INTERNAL_ERROR, self.events_error or "events file failed"
        elif self.stop.reason == "timeout":
            code = EXIT_TIMEOUT
            message = message or "watchdog: run exceeded %ss" % a.timeout
        elif self.stop.reason == "cancelled":
            code = EXIT_CANCELLED
            message = message or "stopped by %s" % (self.stop.signal or "request")
        elif self.board_error and code in (EXIT_PASSED, EXIT_FAILED):
            code, message = EXIT_BOARD_ERROR, self.board_error
        for test_id in list(self.open_tests):
            self._test_end(
                test_id, "error", message=message or "test did not finish", synthesized=True
            )
        self.tap.close()
        end: Dict[str, Any] = {
            "exit_code": code,
            "reason": REASONS[code],
            "message": clip(message, MAX_TEXT)[0],
            "duration_s": round(time.monotonic() - self.started, 3),
            "summary": dict(self.counts),
        }
        if self.stop.signal:
            end["signal"] = self.stop.signal
        if self.link is not None:
            end["serial"] = self.link.stats()
        self.emit("run_end", end)
        return code

    # ------------------------------------------------------------- results

    def _test_start(self, test_id: str, fields: Optional[Dict[str, Any]] = None, ts=None):
        self.open_tests[test_id] = test_id
        self.current_test = test_id
        self.emit("test_start", dict(fields or {}, test=test_id), ts=ts)

    def _test_end(self, test_id: str, outcome: str, ts=None, **fields: Any) -> None:
        self.open_tests.pop(test_id, None)
        if self.current_test == test_id:
            self.current_test = None
        bucket = (
            outcome
            if outcome in self.counts
            else (
                "failed" if outcome == "xpassed" else "skipped" if outcome == "xfailed" else "error"
            )
        )
        self.counts[bucket] += 1
        self.counts["total"] += 1
        if "message" in fields:
            fields["message"] = clip(str(fields["message"]), MAX_TEXT)[0]
        self.emit("test_end", dict(fields, test=test_id, outcome=outcome), ts=ts)

    def _verdict(self) -> int:
        if self.counts["failed"] or self.counts["error"]:
            return EXIT_FAILED
        return EXIT_PASSED

    # ---------------------------------------------------------- board mode

    def run_board(self) -> int:
        a = self.args
        config = self.serial_config()
        if config is None:
            raise UsageError("--mode board needs --serial-url")
        if not a.target:
            raise UsageError("--mode board needs the names of the tests to run")
        test_args = []
        for item in a.test_arg:
            if "=" not in item:
                raise UsageError("--test-arg takes KEY=VALUE, not %r" % item)
            test_args.append(item)
        self.emit("plan", {"tests": [{"id": name, "name": name} for name in a.target]})
        self.link = BoardLink(
            config,
            on_status=self.on_board_status,
            on_traffic=self.tap.feed,
            stop_event=self.stop.event,
        )
        self.link.open()
        if a.testrun_id_base is not None:
            base = a.testrun_id_base
        elif a.run_id and a.run_id.isdigit():
            base = int(a.run_id) * 1000
        else:
            base = int(time.time()) % 100000 * 1000
        for index, name in enumerate(a.target, start=1):
            if self.stop.event.is_set():
                break
            self._board_test(name, str(base + index), test_args)
        return self._verdict()

    def _board_test(self, name: str, testrun_id: str, test_args: List[str]) -> None:
        a = self.args
        link = self.link
        assert link is not None
        self.current_test = name
        link.send("EXEC_TEST", testrun_id, name, *test_args)
        started = False
        assertions: List[Dict[str, str]] = []
        failed_assertions = 0
        data = {"frames": 0, "gaps": 0, "last": None}
        deadline = time.monotonic() + a.start_timeout
        while True:
            if self.stop.event.is_set():
                link.send("ABORT", testrun_id)
                if started:
                    self._test_end(name, "error", message="stopped: %s" % self.stop.reason)
                return
            if time.monotonic() >= deadline:
                if not started:
                    self._test_start(name, {"testrun_id": testrun_id})
                    self._test_end(name, "error", message="board did not start the test")
                else:
                    link.send("ABORT", testrun_id)
                    self._test_end(
                        name,
                        "failed",
                        message="no TEST_END within %ss" % a.test_timeout,
                        assertions=assertions,
                    )
                return
            for frame in link.poll(0.2):
                kind = frame.type
                if kind == "HEARTBEAT":
                    self._board_heartbeat(frame)
                    continue
                if kind == "STATUS":
                    self.emit("board_status", self._board_fields(frame))
                    if not started and frame.get("state") in ("ERROR", "BUSY"):
                        self._test_start(name, {"testrun_id": testrun_id})
                        self._test_end(
                            name,
                            "error",
                            message="board refused the test: %s %s"
                            % (frame.get("error_code"), frame.get("message")),
                        )
                        return
                    continue
                if kind == "DATA":
                    self._count_data(frame, data)
                    continue
                if frame.get("testrun_id") != testrun_id:
                    continue  # a frame of an earlier test, or not about tests
                if kind == "TEST_START":
                    started = True
                    deadline = time.monotonic() + a.test_timeout
                    self._test_start(
                        name,
                        {"testrun_id": testrun_id, "board_ts": frame.get("ts")},
                    )
                elif kind == "TEST_LOG":
                    self.log(
                        frame.get("message") or "",
                        level=frame.get("level") or "INFO",
                        source="board",
                        test=name,
                    )
                elif kind == "ASSERTION":
                    item = frame.as_dict()
                    for key in ("type", "board_id", "testrun_id"):
                        item.pop(key, None)
                    ok = (frame.get("result") or "").upper() == "PASS"
                    failed_assertions += not ok
                    if len(assertions) < MAX_ASSERTIONS:
                        assertions.append(item)
                    self.log(
                        "%s %s: expected %s, actual %s"
                        % (item["result"], item["name"], item["expected"], item["actual"]),
                        level="INFO" if ok else "ERROR",
                        source="board",
                        test=name,
                    )
                elif kind == "TEST_END":
                    if not started:
                        self._test_start(name, {"testrun_id": testrun_id})
                    self._finish_board_test(name, frame, assertions, failed_assertions, data)
                    return

    @staticmethod
    def _count_data(frame, data: Dict[str, Any]) -> None:
        """DATA frames stream while a test runs; count them and the holes in their seq."""
        try:
            seq = int(frame.get("seq") or "")
        except ValueError:
            data["gaps"] += 1
            return
        if data["last"] is not None and seq != data["last"] + 1:
            data["gaps"] += 1
        data["last"] = seq
        data["frames"] += 1

    def _finish_board_test(self, name, frame, assertions, failed_assertions, data) -> None:
        try:
            exit_code = int(frame.get("exit_code") or "0")
        except ValueError:
            exit_code = -1
        try:
            duration = int(frame.get("duration") or "0") / 1000.0
        except ValueError:
            duration = None
        outcome = "passed" if exit_code == 0 and not failed_assertions else "failed"
        failures = [x for x in assertions if x.get("result", "").upper() != "PASS"]
        lines = ["%s %s" % (frame.get("summary"), frame.get("details") or "")]
        for x in failures[:20]:
            line = "FAIL %s: expected %s, actual %s" % (x["name"], x["expected"], x["actual"])
            if x.get("details"):
                line += " (%s)" % x["details"]
            lines.append(line)
        self._test_end(
            name,
            outcome,
            duration_s=duration,
            board_exit_code=exit_code,
            summary=frame.get("summary"),
            message="\n".join(s.strip() for s in lines),
            assertions=assertions,
            data_frames=data["frames"],
            data_gaps=data["gaps"],
        )

    def _board_heartbeat(self, frame) -> None:
        now = time.monotonic()
        interval = max(self.args.heartbeat_interval, 1.0)
        if now - self._last_heartbeat_status >= interval:
            self._last_heartbeat_status = now
            self.emit("board_status", self._board_fields(frame))

    @staticmethod
    def _board_fields(frame) -> Dict[str, Any]:
        """A HEARTBEAT or STATUS frame as board_status fields."""
        fields = frame.as_dict()
        fields["frame"] = fields.pop("type")
        if "state" not in fields:
            fields["state"] = fields.pop("status", "UNKNOWN")
        fields["source"] = "board"
        return fields

    # ------------------------------------------------------ pytest / script

    def run_child(self, pytest_mode: bool) -> int:
        a = self.args
        if not a.target and not pytest_mode:
            raise UsageError("--mode script needs the script to run")
        config = self.serial_config()
        channel_path = os.path.join(self.workspace, "child-events.jsonl")
        with open(channel_path, "wb"):
            pass  # start empty: only this run's child writes here
        extra = {
            ChildChannel.ENV: channel_path,
            "TMS_PARENT_PID": str(os.getpid()),
            "TMS_RUN_ID": a.run_id or "",
            "TMS_WORKSPACE": self.workspace,
        }
        if config is not None:
            extra.update(config.to_env())
        env = child_env(dict(os.environ), extra)
        if pytest_mode:
            junit = os.path.join(self.workspace, "junit.xml")
            cmd = build_pytest_command(sys.executable, a.target, junit)
            script_id = None
        else:
            script = a.target[0]
            path = script if os.path.isabs(script) else os.path.join(self.workspace, script)
            if not os.path.isfile(path):
                raise UsageError("script not found: %s" % path)
            cmd = build_script_command(sys.executable, path, a.target[1:])
            script_id = script
            self.emit("plan", {"tests": [{"id": script, "name": os.path.basename(script)}]})
        self.child = subprocess.Popen(  # noqa: S603 - argv list, no shell
            cmd,
            cwd=self.workspace,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **child_popen_kwargs(),
        )
        self.log("started %s (pid %d)" % (" ".join(cmd), self.child.pid), child_pid=self.child.pid)
        if script_id is not None:
            self._test_start(script_id)
        readers = [
            threading.Thread(target=self._pump, args=(self.child.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._pump, args=(self.child.stderr, "stderr"), daemon=True),
        ]
        for t in readers:
            t.start()
        tail = ChildTail(channel_path)
        started = time.monotonic()
        while True:
            self._relay(tail)
            try:
                rc = self.child.wait(0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            if self.stop.event.is_set():
                how = terminate_tree(self.child, self.args.grace)
                rc = self.child.wait()
                self.log("child stopped (%s), exit status %s" % (how, rc), level="WARNING")
                break
        for t in readers:
            t.join(5)
        self._relay(tail)
        if tail.bad_lines:
            self.log("%d unreadable child event lines" % tail.bad_lines, level="WARNING")
        duration = round(time.monotonic() - started, 3)
        if self.stop.event.is_set():
            return EXIT_CANCELLED
        if script_id is not None:
            if rc == 0:
                self._test_end(script_id, "passed", duration_s=duration, exit_status=rc)
            else:
                self._test_end(
                    script_id,
                    "failed" if rc > 0 else "error",
                    duration_s=duration,
                    exit_status=rc,
                    message="script exited with status %s" % rc,
                )
            return self._verdict()
        code = pytest_exit_to_runner(rc)
        if code == EXIT_PASSED and (self.counts["failed"] or self.counts["error"]):
            code = EXIT_FAILED
        if rc == 5:
            self.error("usage", "pytest collected no tests")
        elif code in (EXIT_USAGE, EXIT_INTERNAL_ERROR):
            self.error("pytest", "pytest exited with status %s" % rc)
        return code

    def _pump(self, stream: Any, name: str) -> None:
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            text, cut = clip(text, MAX_LOG_LINE)
            fields: Dict[str, Any] = {"source": "child", "stream": name, "message": text}
            fields["level"] = "INFO" if name == "stdout" else "WARNING"
            if cut:
                fields["truncated"] = True
            self.emit("log", fields)
        stream.close()

    def _relay(self, tail: ChildTail) -> None:
        for event in tail.read():
            type_ = event.pop("type")
            ts = event.pop("ts", None)
            event.pop("seq", None)
            event.pop("run_id", None)
            if type_ == "test_start":
                test_id = str(event.pop("test", ""))
                self._test_start(test_id, event, ts=ts)
            elif type_ == "test_end":
                test_id = str(event.pop("test", ""))
                outcome = str(event.pop("outcome", "error"))
                self._test_end(test_id, outcome, ts=ts, **event)
            else:
                if type_ == "error" and event.get("kind") == "board":
                    self.board_error = str(event.get("message") or "board lost")
                self.emit(type_, event, ts=ts)


# -------------------------------------------------------------------- main


def install_signal_handlers(stop: StopState) -> None:
    def handler(signum: int, _frame: Any) -> None:
        stop.request("cancelled", signal.Signals(signum).name)

    for name in stop_signals():
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, handler)
    if hasattr(signal, "SIGHUP"):
        # A dropped SSH session must not end the run; the server stops it with TERM.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def main(argv: Optional[Sequence[str]] = None, install_signals: bool = True) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_PASSED if exc.code == 0 else EXIT_USAGE
    try:
        writer = EventWriter(
            args.events_file,
            stdout=None if args.no_stdout else sys.stdout,
            run_id=args.run_id,
        ).open()
    except OSError as exc:
        print("runner: cannot open events file: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    try:
        runner = Runner(args, writer)
        if install_signals:
            install_signal_handlers(runner.stop)
        return runner.run(argv)
    finally:
        writer.close()


if __name__ == "__main__":
    sys.exit(main())
