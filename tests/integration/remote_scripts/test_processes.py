"""The runner and the simulator as real programs: CLI, SIGTERM mid-test, resume of seq."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import serial

from remote_scripts import runner

from .conftest import BOARD_SIM, check_events, of_type, outcomes, read_events, start_runner


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


def started(events_file: Path, test: str) -> bool:
    if not events_file.exists():
        return False
    return any(
        json.loads(line).get("type") == "test_start" and json.loads(line).get("test") == test
        for line in events_file.read_text().splitlines()
        if line.endswith("}")
    )


def test_cli_board_sim_and_runner(tmp_path):
    """`python board_sim.py` + `python runner.py` run a board test, printing valid events."""
    sim = subprocess.Popen(
        [sys.executable, str(BOARD_SIM), "--link", str(tmp_path / "board"), "--heartbeat", "0.2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sim.stdout is not None
    try:
        first = sim.stdout.readline().split()
        assert first == ["PTY", str(tmp_path / "board")]
        events_file = tmp_path / "ws" / "events.jsonl"
        proc = start_runner(
            ["--mode", "board", "--events-file", str(events_file), "--serial-url", first[1],
             "--baud", "921600", "--run-id", "42", "smoke"],
            cwd=tmp_path,
        )  # fmt: skip
        out, err = proc.communicate(timeout=30)
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(10)
    assert proc.returncode == runner.EXIT_PASSED, err
    printed = [json.loads(line) for line in out.decode().splitlines()]
    check_events(printed)
    assert printed == read_events(events_file)  # stdout and file carry the same events
    assert {e["run_id"] for e in printed} == {"42"}
    assert outcomes(printed) == {"smoke": "passed"}
    assert sim.returncode == 0


def test_sigterm_mid_test_board_mode(sim, tmp_path):
    events_file = tmp_path / "ws" / "events.jsonl"
    proc = start_runner(
        ["--mode", "board", "--events-file", str(events_file), "--serial-url",
         sim.endpoint.path, "--no-stdout", "hang", "smoke"],
        cwd=tmp_path,
    )  # fmt: skip
    wait_for(lambda: started(events_file, "hang"))
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=15)
    assert proc.returncode == runner.EXIT_CANCELLED
    events = read_events(events_file)
    check_events(events)
    end = events[-1]
    assert (end["reason"], end["signal"]) == ("cancelled", "SIGTERM")
    assert outcomes(events) == {"hang": "error"}  # smoke never started
    # The port was closed: it can be opened exclusively again at once.
    port = serial.serial_for_url(sim.endpoint.path, exclusive=True, timeout=0.1)
    port.close()


def test_sigterm_mid_test_pytest_mode_kills_the_child_group(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "test_slow.py").write_text(
        "import subprocess, sys, time\n"
        "def test_slow():\n"
        "    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "    open('grandchild.pid', 'w').write(str(child.pid))\n"
        "    time.sleep(60)\n"
    )
    events_file = workspace / "events.jsonl"
    proc = start_runner(
        ["--mode", "pytest", "--events-file", str(events_file), "--no-stdout", "--grace", "2",
         "--", "-q", "-p", "no:cacheprovider", "test_slow.py"],
        cwd=tmp_path,
    )  # fmt: skip
    wait_for(lambda: (workspace / "grandchild.pid").exists() and started(
        events_file, "test_slow.py::test_slow"))  # fmt: skip
    grandchild = int((workspace / "grandchild.pid").read_text())
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == runner.EXIT_CANCELLED
    events = read_events(events_file)
    check_events(events)
    assert events[-1]["reason"] == "cancelled"
    end = of_type(events, "test_end")
    assert [(e["test"], e["outcome"], e.get("synthesized")) for e in end] == [
        ("test_slow.py::test_slow", "error", True)
    ]

    def gone() -> bool:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            return True
        # Reparented to init and not yet reaped counts as gone once it is a zombie.
        stat = Path(f"/proc/{grandchild}/stat")
        return stat.exists() and stat.read_text().split()[2] == "Z"

    wait_for(gone, timeout=5)


def test_restart_on_existing_events_file_continues_seq(sim, tmp_path):
    events_file = tmp_path / "ws" / "events.jsonl"
    args = ["--mode", "board", "--events-file", str(events_file), "--serial-url",
            sim.endpoint.path, "--no-stdout", "smoke"]  # fmt: skip
    assert runner.main(args, install_signals=False) == 0
    first = read_events(events_file)
    with open(events_file, "ab") as f:
        f.write(b'{"seq": 999, "ts": "2024-')  # a runner died in the middle of a write
    assert runner.main(args, install_signals=False) == 0
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    second = events[len(first) :]
    assert second[0]["type"] == "run_start" and second[0]["resumed_from_seq"] == len(first)
    assert any("partial line" in e.get("message", "") for e in of_type(second, "log"))
