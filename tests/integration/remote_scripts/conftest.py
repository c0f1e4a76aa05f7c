"""Fixtures for the runner against the simulated board over real pseudo-terminals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from remote_scripts import runner
from remote_scripts.board_sim import BoardSimulator, PtyEndpoint

REPO_ROOT = Path(__file__).resolve().parents[3]
SCHEMA = json.loads((REPO_ROOT / "remote_scripts" / "runner_events.schema.json").read_text())
RUNNER = REPO_ROOT / "remote_scripts" / "runner.py"
BOARD_SIM = REPO_ROOT / "remote_scripts" / "board_sim.py"

pytestmark = pytest.mark.skipif(os.name != "posix", reason="pseudo-terminals are POSIX")


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_events(events: list[dict[str, Any]]) -> None:
    """Every event valid against the schema; seq 1..n without a gap; run_start .. run_end."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for event in events:
        errors = sorted(validator.iter_errors(event), key=str)
        assert not errors, (event, [e.message for e in errors])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "run_start"
    assert events[-1]["type"] == "run_end"
    assert [e["type"] for e in events].count("run_end") == 1


def of_type(events: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == type_]


def outcomes(events: list[dict[str, Any]]) -> dict[str, str]:
    return {e["test"]: e["outcome"] for e in of_type(events, "test_end")}


@pytest.fixture
def sim(tmp_path: Path):
    """A simulated board on a fresh pty; the runner opens ``sim.endpoint.path``."""
    endpoint = PtyEndpoint(link=str(tmp_path / "board"))
    board = BoardSimulator(endpoint, board_id="SIM-T", heartbeat_interval=0.2, seed=7)
    board.start()
    yield board
    board.stop()
    endpoint.close()


@pytest.fixture
def run_inproc(tmp_path: Path):
    """Run the runner in this process; returns (exit code, events)."""

    def run(*args: str, events_name: str = "events.jsonl") -> tuple[int, list[dict[str, Any]]]:
        events_file = tmp_path / "ws" / events_name
        argv = ["--events-file", str(events_file), "--no-stdout", "--heartbeat-interval", "0.3"]
        code = runner.main([*argv, *args], install_signals=False)
        events = read_events(events_file)
        check_events(events)
        return code, events

    return run


def start_runner(args: list[str], cwd: Path) -> subprocess.Popen:
    """The runner as a real program, as the server launches it."""
    return subprocess.Popen(
        [sys.executable, str(RUNNER), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
