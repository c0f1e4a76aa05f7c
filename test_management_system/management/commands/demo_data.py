"""Loads the demo data `make run` shows: an admin account, a machine for this host (no SSH
needed), a simulated board (`run_stack` starts it), a sample test case of each kind, and one
run of each, so a first start shows runs live. Safe to run again: it keeps what exists."""

from __future__ import annotations

import secrets
import textwrap
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from machines import services as machine_services
from machines.models import Board, Machine
from test_runner import services as run_services
from test_runner.models import TestCase, TestRun

DEMO_ADMIN = "admin"
DEMO_MACHINE = "this-host"
DEMO_BOARD = "sim-board"

PYTEST_FILES = {
    "test_board.py": textwrap.dedent(
        '''
        """Talks to the board through the `board` fixture the runner provides."""
        import pytest


        def test_board_answers_ping(board):
            board.send("PING", "demo")
            frame = board.expect(r"^PONG,", timeout=5)
            assert frame.get("token") == "demo"


        def test_echo_round_trip(board):
            reply = board.request("ECHO", "hello, board", expect="^ECHO_REPLY,", timeout=5)
            assert reply.get("text") == "hello, board"


        @pytest.mark.parametrize("sensor", ["vbat", "temp"])
        def test_sensor_reads(board, sensor):
            reply = board.request("READ_SENSOR", sensor, expect="^SENSOR,", timeout=5)
            assert float(reply.get("value")) > 0
        '''
    ).lstrip()
}
SCRIPT_FILES = {
    "check_host.py": textwrap.dedent(
        """
        import platform
        import sys
        import time

        for step in range(5):
            print(f"step {step + 1}/5 on {platform.node()} (Python {platform.python_version()})")
            time.sleep(0.5)
        sys.exit(0)
        """
    ).lstrip()
}


def _demo_password() -> str:
    path = settings.VAR_DIR / "demo_admin_password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    return path.read_text().strip()


def demo_board_path() -> str:
    """Where `run_stack` keeps a link to the simulated board's pty."""
    return str(settings.VAR_DIR / "demo-board")


class Command(BaseCommand):
    help = "Create the demo admin, machine, board and sample cases (idempotent)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000/", help="URL to print.")
        parser.add_argument("--no-runs", action="store_true", help="do not queue sample runs")

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            self.stderr.write("demo_data refuses to run with TMS_ENV=production.")
            raise SystemExit(2)
        with transaction.atomic():
            admin = self._admin()
            machine = self._machine(admin)
            cases = self._cases(admin)
            queued = [] if options["no_runs"] else self._runs(admin, machine, cases)
        if machine is not None:
            # Provisioning runs in the worker (it installs pyserial and pytest in the venvs).
            from machines.tasks import venv_pool_ensure_task

            venv_pool_ensure_task.delay(machine.pk, machine.max_concurrent_runs)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo ready. Open {options['url']} and sign in as {DEMO_ADMIN} / "
                f"{_demo_password()}  (kept in {settings.VAR_DIR / 'demo_admin_password'})"
            )
        )
        if queued:
            self.stdout.write(
                f"Queued sample runs {', '.join(map(str, queued))} on {DEMO_MACHINE}."
            )

    def _admin(self) -> Any:
        user_model = get_user_model()
        password = _demo_password()
        user, created = user_model.objects.get_or_create(
            username=DEMO_ADMIN, defaults={"is_staff": True, "is_superuser": True}
        )
        if created or not user.check_password(password):
            user.set_password(password)
            user.is_staff = user.is_superuser = True
            user.save(update_fields=["password", "is_staff", "is_superuser"])
        return user

    def _machine(self, admin: Any) -> Machine | None:
        machine = Machine.objects.filter(name=DEMO_MACHINE).first()
        if machine is None:
            if not settings.ALLOW_LOCAL_MACHINES:
                self.stderr.write("ALLOW_LOCAL_MACHINES is off: no demo machine.")
                return None
            import getpass

            machine = machine_services.machine_create(
                actor=admin, source="cli", name=DEMO_MACHINE, hostname="localhost",
                username=getpass.getuser(), connector=Machine.Connector.LOCAL,
                work_dir=str(settings.VAR_DIR / "demo-host"), python="python3",
                max_concurrent_runs=2, labels=["demo", "linux"],
                description="This host, reached without SSH; the demo's board is simulated.",
            )  # fmt: skip
        if not Board.objects.filter(machine=machine, name=DEMO_BOARD).exists():
            machine_services.board_create(
                machine=machine, actor=admin, source="cli", name=DEMO_BOARD,
                serial_port=demo_board_path(), baud_rate=115200, labels=["sim"],
                description="The board simulator (remote_scripts/board_sim.py) on a pty.",
            )  # fmt: skip
        return machine

    def _cases(self, admin: Any) -> list[TestCase]:
        specs: list[dict[str, Any]] = [
            {"name": "demo-pytest-board", "kind": "pytest", "entry_point": "-v test_board.py",
             "files": PYTEST_FILES, "needs_board": True, "board_labels": ["sim"],
             "description": "pytest tests that talk to the board over UART."},
            {"name": "demo-script", "kind": "script", "entry_point": "check_host.py",
             "files": SCRIPT_FILES, "description": "A plain script; its exit code decides."},
            {"name": "demo-board-tests", "kind": "board",
             "entry_point": "smoke gpio_toggle adc_sweep", "board_labels": ["sim"],
             "description": "Tests the board runs itself on EXEC_TEST."},
        ]  # fmt: skip
        cases = []
        for spec in specs:
            case = TestCase.objects.filter(name=spec["name"]).first()
            cases.append(case or run_services.case_create(actor=admin, default_timeout=600, **spec))
        return cases

    def _runs(self, admin: Any, machine: Machine | None, cases: list[TestCase]) -> list[int]:
        if machine is None or TestRun.objects.exists():
            return []
        return [
            run_services.run_create(actor=admin, case=case, machine=machine, source="ui").pk
            for case in cases
        ]
