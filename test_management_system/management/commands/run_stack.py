"""Starts the web server, a Celery worker and Celery beat, and stops all of them together.

`make run` uses it. Each child runs in its own process group; Ctrl-C or SIGTERM stops every
child (TERM, then KILL after a grace period), and if one child dies the others are stopped too,
so nothing is left running behind the terminal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

GRACE_SECONDS = 10.0


class Command(BaseCommand):
    help = "Run web server + Celery worker + beat in the foreground; Ctrl-C stops them all."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
        parser.add_argument("--no-beat", action="store_true")
        parser.add_argument(
            "--no-board", action="store_true", help="do not start the demo board simulator"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        python = sys.executable
        commands: dict[str, list[str]] = {
            "web": [
                python, "-m", "uvicorn", "test_management_system.asgi:application",
                "--host", options["host"], "--port", str(options["port"]),
                "--no-access-log" if not settings.DEBUG else "--access-log",
            ],
            "worker": [
                python, "-m", "celery", "-A", "test_management_system", "worker",
                "--loglevel", "INFO", "--concurrency", str(options["concurrency"]),
                "--hostname", f"worker-{os.getpid()}@%h",
            ],
        }  # fmt: skip
        if not options["no_beat"]:
            commands["beat"] = [
                python, "-m", "celery", "-A", "test_management_system", "beat",
                "--loglevel", "INFO", "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME,
            ]  # fmt: skip

        if not options["no_board"] and not settings.PRODUCTION:
            from test_management_system.management.commands.demo_data import demo_board_path

            # The demo machine's board: a simulator on a pty, linked at a stable path.
            commands["board"] = [
                python, str(settings.BASE_DIR / "remote_scripts" / "board_sim.py"),
                "--link", demo_board_path(), "--heartbeat", "2",
            ]  # fmt: skip

        children: dict[str, subprocess.Popen[bytes]] = {}
        stopping = False

        def request_stop(signum: int, _frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

        for name, cmd in commands.items():
            children[name] = subprocess.Popen(cmd, start_new_session=True)  # noqa: S603
            self.stdout.write(f"started {name} (pid {children[name].pid})")
        url = f"http://{options['host']}:{options['port']}/"
        self.stdout.write(self.style.SUCCESS(f"Serving on {url}  (Ctrl-C stops everything)"))
        sys.stdout.flush()

        exit_code = 0
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    self.stderr.write(f"{name} exited with code {child.returncode}; stopping.")
                    exit_code = 1
                    stopping = True
                    break
            time.sleep(0.2)

        self._stop_all(children)
        raise SystemExit(exit_code)

    def _stop_all(self, children: dict[str, subprocess.Popen[bytes]]) -> None:
        # TERM to each main process only: Celery then finishes its pool children's work (warm
        # shutdown) instead of having them killed under it.
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + GRACE_SECONDS
        for name, child in children.items():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop in {GRACE_SECONDS:.0f}s; killing it.")
                _signal_group(child, signal.SIGKILL)
                child.wait()
            # Whatever the main process left behind in its group goes too.
            _signal_group(child, signal.SIGKILL)
        self.stdout.write("all processes stopped")


def _signal_group(child: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, sig)
