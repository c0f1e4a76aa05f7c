"""The naive dispatch of the original plan, as the baseline of ``bench_dispatch.py``.

This is not project code: it is what ``original-plan/test-runner-flow.md`` describes (a task
that SSHes into the machine, copies files and starts the test, a ``VenvPool`` of names) done
the simple way, with paramiko directly:

- every step opens its own SSH connection (TCP, key exchange, password login with the host
  key pinned, exactly as the project logs in), does one exec or one SFTP session, and closes;
- the runner (``remote_scripts/``) is uploaded on every run, whether the host has it or not;
- every run gets a new venv: ``python3 -m venv``, then ``pip install -r`` of the runner's
  requirements into it;
- then the runner is launched detached, with the same arguments the project gives it, and
  its ``run_start`` event awaited in the events file.

Only the design differs from the project's path: same sshd, same user, same case files, same
runner script and requirements, same ``run_start`` clock (the runner's own, on the same host).
"""

from __future__ import annotations

import json
import shlex
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import paramiko

T = TypeVar("T")

# As machines/ssh/connection.py starts a detached process: its own session, output to a log.
_LAUNCH = 'setsid nohup "$@" </dev/null >>{log} 2>&1 & echo $!'


class NaiveDispatchError(RuntimeError):
    """A step of the naive dispatch failed (the benchmark stops: its figures would lie)."""


@dataclass
class NaiveTarget:
    """Where and how the naive dispatcher logs in, and what it runs."""

    host: str
    port: int
    username: str
    password: str
    host_key_type: str
    host_key: paramiko.PKey
    base_dir: str  # runs go to <base_dir>/naive-runs/<n>-<id>
    python: str  # the host's interpreter the venvs are made from
    requirements: str  # the runner's requirements for this case kind
    runner_files: dict[str, bytes]  # remote_scripts/, as the project ships it
    case_files: dict[str, str]
    targets: list[str]  # what the runner runs: the case's entry point and arguments
    mode: str = "script"


@dataclass
class NaiveRun:
    """One naive dispatch: when it began, when the runner wrote run_start, each step's time."""

    started: float  # time.time() when the dispatcher began (its "request accepted")
    launched: float = 0.0  # time.time() when the launch step returned
    run_start: datetime | None = None
    run_end: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)
    connects: list[float] = field(default_factory=list)

    @property
    def to_run_start(self) -> float:
        assert self.run_start is not None
        return self.run_start.timestamp() - self.started


class NaiveDispatcher:
    def __init__(self, target: NaiveTarget) -> None:
        self.target = target
        self.count = 0

    # -- one connection per step ----------------------------------------------------------------

    def _connect(self, run: NaiveRun) -> paramiko.SSHClient:
        t = self.target
        began = time.perf_counter()
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.get_host_keys().add(f"[{t.host}]:{t.port}", t.host_key_type, t.host_key)
        client.connect(
            t.host, port=t.port, username=t.username, password=t.password, timeout=10,
            auth_timeout=10, banner_timeout=10, allow_agent=False, look_for_keys=False,
        )  # fmt: skip
        run.connects.append(time.perf_counter() - began)
        return client

    def _step(self, run: NaiveRun, name: str, action: Callable[[paramiko.SSHClient], T]) -> T:
        began = time.perf_counter()
        client = self._connect(run)
        try:
            return action(client)
        finally:
            client.close()
            run.steps[name] = time.perf_counter() - began

    @staticmethod
    def _exec(client: paramiko.SSHClient, command: str, timeout: float = 600) -> str:
        _stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        code = stdout.channel.recv_exit_status()
        if code != 0:
            raise NaiveDispatchError(f"`{command[:120]}` exited {code}: {(err or out)[-800:]}")
        return out

    @staticmethod
    def _put(client: paramiko.SSHClient, files: dict[str, bytes]) -> None:
        sftp = client.open_sftp()
        try:
            for path, data in files.items():
                with sftp.open(path, "wb") as handle:
                    handle.write(data)
        finally:
            sftp.close()

    # -- the run --------------------------------------------------------------------------------

    def dispatch(self) -> NaiveRun:
        """Dispatches one run the naive way and waits for its run_start, then (not timed) for
        its run_end, and removes its directory."""
        t = self.target
        self.count += 1
        root = f"{t.base_dir}/naive-runs/{self.count}-{uuid.uuid4().hex[:8]}"
        workspace, runner_dir, venv = f"{root}/workspace", f"{root}/runner", f"{root}/venv"
        events = f"{workspace}/events.jsonl"
        requirements = f"{root}/requirements.txt"
        reqs = t.requirements.encode()
        q = shlex.quote
        run = NaiveRun(started=time.time())

        mkdir = f"mkdir -p {q(workspace)} {q(runner_dir)}/remote_scripts"
        make_venv = f"{q(t.python)} -m venv {q(venv)}"
        pip = (
            f"{q(venv)}/bin/python -m pip install --disable-pip-version-check --no-input "
            f"-r {q(requirements)}"
        )
        runner = {f"{runner_dir}/remote_scripts/{n}": d for n, d in t.runner_files.items()}
        case = {f"{workspace}/{n}": text.encode() for n, text in t.case_files.items()}

        self._step(run, "mkdir", lambda c: self._exec(c, mkdir))
        self._step(run, "python -m venv", lambda c: self._exec(c, make_venv))
        self._step(run, "upload requirements", lambda c: self._put(c, {requirements: reqs}))
        self._step(run, "pip install", lambda c: self._exec(c, pip))
        self._step(run, "upload runner", lambda c: self._put(c, runner))
        self._step(run, "upload case files", lambda c: self._put(c, case))
        argv = [
            f"{venv}/bin/python", f"{runner_dir}/remote_scripts/runner.py", "--mode", t.mode,
            "--events-file", events, "--workspace", workspace, "--run-id", str(self.count),
            "--no-stdout", "--heartbeat-interval", "2", "--", *t.targets,
        ]  # fmt: skip
        launch = "sh -c " + q(_LAUNCH.format(log=q(f"{workspace}/runner.log"))) + " sh "
        launch += " ".join(q(a) for a in argv)
        pid = self._step(run, "launch runner", lambda c: self._exec(c, launch, timeout=30)).strip()
        if not pid.isdigit():
            raise NaiveDispatchError(f"launching the runner printed {pid!r}, not a pid")
        run.launched = time.time()
        client = self._connect(run)
        try:
            self._await(client, events, run)
        finally:
            client.close()
        self._cleanup(root)
        return run

    def _await(self, client: paramiko.SSHClient, events: str, run: NaiveRun) -> None:
        """Polls the events file (one SFTP session) for run_start, then for run_end."""
        sftp = client.open_sftp()
        deadline = time.monotonic() + 120
        data = b""
        try:
            while time.monotonic() < deadline:
                try:
                    with sftp.open(events, "rb") as handle:
                        data = handle.read()
                except FileNotFoundError:
                    data = b""
                for line in data.split(b"\n"):
                    if not line.endswith(b"}"):
                        continue
                    event = json.loads(line)
                    if event["type"] == "run_start" and run.run_start is None:
                        run.run_start = datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
                    elif event["type"] == "run_end":
                        run.run_end = event
                if run.run_end:
                    return
                time.sleep(0.02 if run.run_start is None else 0.1)
        finally:
            sftp.close()
        raise NaiveDispatchError(f"no run_end in {events} after 120 s: {data[-800:]!r}")

    def _cleanup(self, root: str) -> None:
        cleanup = NaiveRun(started=time.time())
        self._step(cleanup, "remove", lambda c: self._exec(c, f"rm -rf -- {shlex.quote(root)}"))
