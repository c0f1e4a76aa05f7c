"""`make run`'s stack on the embedded defaults: web + worker + beat, no other service."""

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_port, stop_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _bare_env(var_dir: Path, **extra: str) -> dict[str, str]:
    # Only what a newcomer's shell has: no DATABASE_URL, no REDIS_URL.
    return {"PATH": "/usr/bin:/bin", "HOME": str(var_dir), "TMS_VAR_DIR": str(var_dir), **extra}


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310  # loopback only
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310  # loopback only
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited early ({proc.returncode}):\n{log.read_text()}")
        try:
            status, body = _get(url)
            if status == 200:
                return json.loads(body)
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.3)
    pytest.fail(f"not ready after {seconds}s:\n{log.read_text()}")


DEMO_QUERY = """
import json
from test_runner.models import TestRun
print(json.dumps({r.case.name: [r.status, r.outcome, r.passed,
                                r.artifacts.filter(name="junit.xml").exists(), r.status_message]
                  for r in TestRun.objects.all()}))
"""


def _wait_demo_runs(env: dict[str, str], proc: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + 300  # the first start installs pytest and pyserial
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the stack exited ({proc.returncode}):\n{log.read_text()}")
        shell = subprocess.run(
            [sys.executable, "manage.py", "shell", "--no-imports", "-c", DEMO_QUERY],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        runs = json.loads(shell.stdout.strip().splitlines()[-1])
        if runs and all(status == "done" for status, *_ in runs.values()):
            return {name: (r[1], r[2], r[3]) for name, r in runs.items()}
        time.sleep(2)
    pytest.fail(f"demo runs did not finish: {runs}\n{log.read_text()[-5000:]}")


def _pids_in_log(log: Path) -> list[int]:
    return [int(line.rsplit("pid ", 1)[1].rstrip(")")) for line in log.read_text().splitlines()
            if line.startswith("started ")]  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_run_stack_serves_on_embedded_defaults_and_stops_everything(tmp_path):
    env = _bare_env(tmp_path)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--no-input", "-v0"], cwd=REPO_ROOT, env=env, check=True)
    subprocess.run([*manage, "demo_data"], cwd=REPO_ROOT, env=env, check=True, capture_output=True)
    port = free_port()
    log = tmp_path / "stack.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*manage, "run_stack", "--port", str(port)],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        body = _wait_ready(f"http://127.0.0.1:{port}/health/ready/", proc, log)
        assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
        for path in ("/", "/admin/login/", "/api/v1/schema/", "/static/css/app.css"):
            status, _ = _get(f"http://127.0.0.1:{port}{path}")
            assert status == 200, path
        pids = _pids_in_log(log)
        assert len(pids) == 4  # web, worker, beat, the demo board
        assert all(_alive(pid) for pid in pids)

        # The demo's sample runs (one of each kind, on this host and the simulated board)
        # provision their venvs, run live and pass. (pytest writes its own junit.xml, which is
        # fetched as an artifact; every run's JUnit XML is also built from its results.)
        outcomes = _wait_demo_runs(env, proc, log)
        assert outcomes == {
            "demo-pytest-board": ("passed", 4, True),
            "demo-script": ("passed", 1, False),
            "demo-board-tests": ("passed", 3, False),
        }, outcomes

        proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers
        assert proc.wait(timeout=30) == 0
        assert not [pid for pid in pids if _alive(pid)], log.read_text()
        assert "all processes stopped" in log.read_text()
    finally:
        stop_process(proc)


def test_ready_names_the_database_when_it_is_down_and_answers_json(tmp_path):
    closed = free_port()
    env = _bare_env(tmp_path, DATABASE_URL=f"postgres://nobody@127.0.0.1:{closed}/nothing")
    port = free_port()
    log = tmp_path / "web.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "test_management_system.asgi:application",
             "--port", str(port)],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/health/ready/")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(log.read_text())
                time.sleep(0.3)
        assert status == 503
        payload = json.loads(body)
        assert payload["down"] == ["database"]
        assert payload["checks"]["broker"]["ok"] is True
        # Liveness does not depend on the database.
        assert _get(f"http://127.0.0.1:{port}/health/")[0] == 200
        # An API call that needs the database (a session to look up) while it is down gets a
        # clear JSON 503, not an HTML page.
        status, body = _get(
            f"http://127.0.0.1:{port}/api/v1/me/", {"Cookie": "sessionid=abcdefghijklmnop"}
        )
        assert status == 503
        assert json.loads(body)["message"].startswith("The database is not reachable right now")
    finally:
        stop_process(proc)
