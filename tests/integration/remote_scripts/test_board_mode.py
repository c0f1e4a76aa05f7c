"""Board mode: the runner drives the simulated board over a real pty."""

from __future__ import annotations

import threading

import pytest

from remote_scripts import runner

from .conftest import of_type, outcomes

BAUDS = [115200, 921600]


@pytest.mark.parametrize("baud", BAUDS)
def test_board_mode_reports_each_test(sim, run_inproc, baud):
    code, events = run_inproc(
        "--mode", "board", "--serial-url", sim.endpoint.path, "--baud", str(baud),
        "smoke", "always_fail", "gpio_toggle", "no_such_test",
    )  # fmt: skip
    assert code == runner.EXIT_FAILED
    plan = of_type(events, "plan")[0]
    assert [t["id"] for t in plan["tests"]] == [
        "smoke",
        "always_fail",
        "gpio_toggle",
        "no_such_test",
    ]
    assert outcomes(events) == {
        "smoke": "passed",
        "always_fail": "failed",
        "gpio_toggle": "passed",
        "no_such_test": "error",
    }
    ends = {e["test"]: e for e in of_type(events, "test_end")}
    assert [a["name"] for a in ends["smoke"]["assertions"]] == [
        "uart_loopback",
        "vref_mV",
        "flash_id",
    ]
    assert "crc_self_test" in ends["always_fail"]["message"]
    assert "E_UNKNOWN_TEST" in ends["no_such_test"]["message"]
    # A log line with commas and a newline crosses the wire intact.
    messages = [e["message"] for e in of_type(events, "log") if e["source"] == "board"]
    assert "config: mode=fast, retries=3\nsecond line, with a comma" in messages
    end = events[-1]
    assert end["reason"] == "failed"
    assert end["summary"] == {"passed": 2, "failed": 1, "error": 1, "skipped": 0, "total": 4}
    assert sum(end["serial"]["errors"].values()) == 0
    assert of_type(events, "serial"), "raw traffic is reported"
    assert of_type(events, "heartbeat") or end["duration_s"] < 0.3


def test_test_args_reach_the_board(sim, run_inproc):
    code, events = run_inproc(
        "--mode", "board", "--serial-url", sim.endpoint.path,
        "--test-arg", "cycles=3", "--test-arg", "note=a,b", "echo_args", "gpio_toggle",
    )  # fmt: skip
    assert code == runner.EXIT_PASSED
    logs = [e["message"] for e in of_type(events, "log") if e.get("test") == "echo_args"]
    assert "note=a,b" in logs
    gpio = next(e for e in of_type(events, "test_end") if e["test"] == "gpio_toggle")
    assert len(gpio["assertions"]) == 3


def test_bad_crc_frames_are_counted_and_skipped(sim, run_inproc):
    sim.heartbeat_interval = 0  # every frame is an answer, sent after the port is open
    sim.bad_crc_rate = 0.5
    code, events = run_inproc(
        "--mode", "board", "--serial-url", sim.endpoint.path, "--baud", "921600",
        "smoke", "adc_sweep", "gpio_toggle",
    )  # fmt: skip
    assert code == runner.EXIT_PASSED
    assert sim.stats["bad_crc_injected"] > 0
    errors = events[-1]["serial"]["errors"]
    assert errors["bad_crc"] == sim.stats["bad_crc_injected"]
    ends = {e["test"]: e for e in of_type(events, "test_end")}
    assert len(ends["adc_sweep"]["assertions"]) == 8  # no good frame lost


@pytest.mark.parametrize("baud", BAUDS)
def test_line_noise_costs_only_the_noise(sim, run_inproc, baud):
    sim.noise_rate = 0.3
    sim.bad_crc_rate = 0.2
    code, events = run_inproc(
        "--mode", "board", "--serial-url", sim.endpoint.path, "--baud", str(baud),
        "smoke", "adc_sweep",
    )  # fmt: skip
    assert sim.stats["noise_injected"] > 0
    assert code == runner.EXIT_PASSED, events[-1]
    ends = {e["test"]: e for e in of_type(events, "test_end")}
    assert len(ends["smoke"]["assertions"]) == 3
    assert len(ends["adc_sweep"]["assertions"]) == 8
    assert sum(events[-1]["serial"]["errors"].values()) > 0


def test_flood_at_921600_loses_and_garbles_nothing(sim, run_inproc):
    count = 5000
    code, events = run_inproc(
        "--mode", "board", "--serial-url", sim.endpoint.path, "--baud", "921600",
        "--test-arg", f"count={count}", "flood",
    )  # fmt: skip
    assert code == runner.EXIT_PASSED
    end = of_type(events, "test_end")[0]
    assert end["outcome"] == "passed"
    assert end["data_frames"] == count == sim.stats["data_frames_sent"]
    assert end["data_gaps"] == 0
    assert sum(events[-1]["serial"]["errors"].values()) == 0
    for event in of_type(events, "serial"):
        assert event["bytes"] <= 2048  # serial events stay bounded under a flood
    assert sum(e["dropped_bytes"] for e in of_type(events, "serial")) > 0


def test_disconnect_and_reconnect_within_window(sim, run_inproc):
    timer = threading.Timer(0.4, sim.drop, args=(0.5,))
    timer.start()
    try:
        code, events = run_inproc(
            "--mode", "board", "--serial-url", sim.endpoint.path, "--reconnect-window", "5",
            "--test-arg", "seconds=1.5", "slow",
        )  # fmt: skip
    finally:
        timer.cancel()
    assert code == runner.EXIT_PASSED, events[-1]
    states = [e["state"] for e in of_type(events, "board_status") if e["source"] == "link"]
    assert states == ["connected", "disconnected", "reconnected"]
    gap = next(e for e in of_type(events, "board_status") if e["state"] == "reconnected")
    assert gap["gap_s"] > 0
    assert events[-1]["serial"]["reconnects"] == 1
    assert outcomes(events) == {"slow": "passed"}


def test_board_gone_for_good_is_a_board_error(sim, run_inproc):
    timer = threading.Timer(0.3, sim.drop, args=(60,))
    timer.start()
    try:
        code, events = run_inproc(
            "--mode", "board", "--serial-url", sim.endpoint.path, "--reconnect-window", "0.6",
            "--test-arg", "seconds=5", "slow",
        )  # fmt: skip
    finally:
        timer.cancel()
    assert code == runner.EXIT_BOARD_ERROR
    assert events[-1]["reason"] == "board_error"
    assert [e["kind"] for e in of_type(events, "error")] == ["board"]
    assert outcomes(events) == {"slow": "error"}  # the open test is closed, not left dangling


def test_hanging_test_times_out_and_is_aborted(sim, run_inproc):
    sim.hang = True
    code, events = run_inproc(
        "--mode", "board", "--serial-url", sim.endpoint.path, "--test-timeout", "0.5", "smoke",
    )  # fmt: skip
    assert code == runner.EXIT_FAILED
    end = of_type(events, "test_end")[0]
    assert end["outcome"] == "failed"
    assert "no TEST_END" in end["message"]
    sim.hang = False
    code, events = run_inproc(
        "--mode", "board", "--serial-url", sim.endpoint.path, "smoke", events_name="again.jsonl"
    )
    assert code == runner.EXIT_PASSED  # ABORT freed the board for the next run


def test_watchdog_ends_the_run(sim, run_inproc):
    code, events = run_inproc(
        "--mode", "board", "--serial-url", sim.endpoint.path, "--timeout", "0.5", "hang",
    )  # fmt: skip
    assert code == runner.EXIT_TIMEOUT
    assert events[-1]["reason"] == "timeout"
    assert outcomes(events) == {"hang": "error"}


def test_missing_port_is_a_board_error(tmp_path, run_inproc):
    code, events = run_inproc(
        "--mode", "board", "--serial-url", str(tmp_path / "nothing"),
        "--reconnect-window", "0.2", "smoke",
    )  # fmt: skip
    assert code == runner.EXIT_BOARD_ERROR
    assert events[-1]["reason"] == "board_error"
