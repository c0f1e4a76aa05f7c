"""pytest and script modes: the runner starts a child that talks to the simulated board."""

from __future__ import annotations

import textwrap

import pytest

from remote_scripts import runner

from .conftest import of_type, outcomes

BOARD_TESTS = textwrap.dedent(
    r"""
    import pytest

    def test_ping(board):
        board.send("PING", "tok,1")
        frame = board.expect(r"^PONG,[^,]*,tok\\c1$", timeout=2)
        assert frame.get("token") == "tok,1"

    def test_echo_and_sensor(board):
        board.send("ECHO", "line one\nline two")
        assert board.expect("^ECHO_REPLY,", timeout=2).get("text") == "line one\nline two"
        frame = board.request("READ_SENSOR", "vbat", expect="^SENSOR,", timeout=2)
        print("vbat", frame.get("value"))
        assert 3.0 < float(frame.get("value")) < 4.2

    def test_heartbeats(board):
        frames = board.read_frames(timeout=0.5)
        assert any(f.type == "HEARTBEAT" for f in frames)

    def test_wrong_answer(board):
        frame = board.request("READ_SENSOR", "temp", expect="^SENSOR,", timeout=2)
        assert float(frame.get("value")) > 100, "board is too cold"

    @pytest.mark.skip(reason="needs the thermal chamber")
    def test_in_chamber(board):
        pass
    """
)


@pytest.mark.parametrize("baud", [115200, 921600])
def test_pytest_mode(sim, run_inproc, tmp_path, baud):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "test_board.py").write_text(BOARD_TESTS)
    code, events = run_inproc(
        "--mode", "pytest", "--serial-url", sim.endpoint.path, "--baud", str(baud),
        "--", "-q", "-p", "no:cacheprovider", "test_board.py",
    )  # fmt: skip
    assert code == runner.EXIT_FAILED
    types = [e["type"] for e in events]
    plan = of_type(events, "plan")
    assert len(plan) == 1 and types.index("plan") < types.index("test_start")
    assert [t["name"] for t in plan[0]["tests"]] == [
        "test_ping",
        "test_echo_and_sensor",
        "test_heartbeats",
        "test_wrong_answer",
        "test_in_chamber",
    ]
    assert outcomes(events) == {
        "test_board.py::test_ping": "passed",
        "test_board.py::test_echo_and_sensor": "passed",
        "test_board.py::test_heartbeats": "passed",
        "test_board.py::test_wrong_answer": "failed",
        "test_board.py::test_in_chamber": "skipped",
    }
    failed = next(e for e in of_type(events, "test_end") if e["outcome"] == "failed")
    assert "board is too cold" in failed["message"]
    captured = [e for e in of_type(events, "log") if e["source"] == "test"]
    assert [e["message"].split()[0] for e in captured] == ["vbat"]
    assert any(e["direction"] == "tx" and "PING" in e["data"] for e in of_type(events, "serial"))
    assert events[-1]["summary"] == {
        "passed": 3, "failed": 1, "error": 0, "skipped": 1, "total": 5
    }  # fmt: skip
    assert (workspace / "junit.xml").is_file()


def test_pytest_mode_collection_error_and_empty(run_inproc, tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "test_broken.py").write_text("import no_such_module_here\n")
    code, events = run_inproc("--mode", "pytest", "--", "-q", "test_broken.py")
    assert code == runner.EXIT_FAILED
    assert "collection" in [e["kind"] for e in of_type(events, "error")]
    (workspace / "test_empty.py").write_text("X = 1\n")
    code, events = run_inproc(
        "--mode", "pytest", "--", "-q", "test_empty.py", events_name="empty.jsonl"
    )
    assert code == runner.EXIT_USAGE
    assert events[-1]["reason"] == "usage_error"


def test_board_lost_in_pytest_mode_is_a_board_error(sim, run_inproc, tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "test_lost.py").write_text(
        textwrap.dedent(
            """
            def test_board_goes_away(board):
                board.send("SIM", "drop", "30")
                board.expect("^ACK,", timeout=2)
                board.read_frames(timeout=3)
            """
        )
    )
    code, events = run_inproc(
        "--mode", "pytest", "--serial-url", sim.endpoint.path, "--reconnect-window", "0.5",
        "--", "-q", "test_lost.py",
    )  # fmt: skip
    assert code == runner.EXIT_BOARD_ERROR
    assert events[-1]["reason"] == "board_error"
    assert "board" in [e["kind"] for e in of_type(events, "error")]


SCRIPT = textwrap.dedent(
    """
    import sys
    from remote_scripts.serial_link import BoardLink

    with BoardLink.from_env() as board:
        board.send("PING", "from-script")
        frame = board.expect("^PONG,", timeout=2)
        print("got", frame.get("token"))
    sys.exit(int(sys.argv[1]))
    """
)


@pytest.mark.parametrize(("status", "expected"), [("0", "passed"), ("7", "failed")])
def test_script_mode(sim, run_inproc, tmp_path, status, expected):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "check.py").write_text(SCRIPT)
    code, events = run_inproc(
        "--mode", "script", "--serial-url", sim.endpoint.path, "--baud", "921600",
        "--", "check.py", status,
    )  # fmt: skip
    assert code == (runner.EXIT_PASSED if expected == "passed" else runner.EXIT_FAILED)
    assert outcomes(events) == {"check.py": expected}
    stdout = [e["message"] for e in of_type(events, "log") if e.get("stream") == "stdout"]
    assert stdout == ["got from-script"]
    states = [e["state"] for e in of_type(events, "board_status")]
    assert states == ["connected"]  # reported by the script's link through the child channel


def test_script_mode_missing_script_is_usage(run_inproc):
    code, events = run_inproc("--mode", "script", "--", "nope.py")
    assert code == runner.EXIT_USAGE
    assert of_type(events, "error")[0]["kind"] == "usage"
