"""Events writer, child channel, serial tap, and the runner's platform helpers."""

from __future__ import annotations

import io
import json
import ntpath
import subprocess

import pytest

from remote_scripts import events, runner
from remote_scripts.serial_link import SerialConfig


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_writer_numbers_without_gaps_and_mirrors_stdout(tmp_path):
    out = io.StringIO()
    path = tmp_path / "deep" / "events.jsonl"
    with events.EventWriter(str(path), stdout=out, run_id="7") as writer:
        writer.emit("log", {"source": "runner", "level": "INFO", "message": "caf\u00e9 \u2713"})
        writer.emit("heartbeat", {"uptime_s": 1.0, "phase": "running", "seq": 99})
    written = lines(path)
    assert [e["seq"] for e in written] == [1, 2]
    assert {e["run_id"] for e in written} == {"7"}
    assert written[0]["message"] == "caf\u00e9 \u2713"
    assert path.read_bytes().isascii()  # safe on any code page
    assert [json.loads(x) for x in out.getvalue().splitlines()] == written
    assert written[0]["ts"].endswith("Z") and "T" in written[0]["ts"]
    with pytest.raises(ValueError):
        events.EventWriter(str(path)).open().emit("bogus")


def test_writer_survives_a_closed_stdout(tmp_path):
    out = io.StringIO()
    writer = events.EventWriter(str(tmp_path / "e.jsonl"), stdout=out).open()
    out.close()
    writer.emit("log", {"source": "runner", "level": "INFO", "message": "a"})
    writer.emit("log", {"source": "runner", "level": "INFO", "message": "b"})
    writer.close()
    assert [e["message"] for e in lines(tmp_path / "e.jsonl")] == ["a", "b"]


@pytest.mark.parametrize("tail", [b"", b'{"seq": 4, "ts', b"\n\n", b"not json\n"])
def test_restart_continues_after_the_last_complete_line(tmp_path, tail):
    path = tmp_path / "e.jsonl"
    with events.EventWriter(str(path)) as writer:
        for _ in range(3):
            writer.emit("log", {"source": "runner", "level": "INFO", "message": "x"})
    with open(path, "ab") as f:
        f.write(tail)
    writer = events.EventWriter(str(path)).open()
    assert writer.resumed_from == 3
    assert writer.repaired_bytes == (len(tail) if not tail.endswith(b"\n") else 0)
    writer.emit("log", {"source": "runner", "level": "INFO", "message": "y"})
    writer.close()
    seqs = [json.loads(x)["seq"] for x in path.read_text().splitlines() if x.startswith("{")]
    assert seqs == [1, 2, 3, 4]


def test_resume_reads_back_across_blocks(tmp_path):
    path = tmp_path / "e.jsonl"
    with events.EventWriter(str(path)) as writer:
        writer.emit("log", {"source": "runner", "level": "INFO", "message": "x" * 200000})
    assert events.read_last_seq(str(path)) == (1, 0)
    assert events.read_last_seq(str(tmp_path / "missing")) == (0, 0)


def test_child_channel_and_tail_pass_complete_lines_only(tmp_path):
    path = tmp_path / "child.jsonl"
    channel = events.ChildChannel(str(path))
    tail = events.ChildTail(str(path))
    channel.emit("test_start", {"test": "t1"})
    with open(path, "ab") as f:
        f.write(b'{"type": "log", "mess')
    assert [e["test"] for e in tail.read()] == ["t1"]
    with open(path, "ab") as f:
        f.write(b'age": "m", "source": "test", "level": "INFO"}\n{"type": "run_end"}\n')
    got = tail.read()
    assert [e["type"] for e in got] == ["log"]
    assert tail.bad_lines == 1  # a child may not end the run
    with pytest.raises(ValueError):
        channel.emit("run_start")
    channel.close()
    assert not events.ChildChannel.from_env({}).active


def test_serial_tap_is_bounded(tmp_path):
    sent = []
    now = [0.0]
    tap = events.SerialTap(
        lambda t, f: sent.append(f), max_bytes=10, interval=1.0,
        log_path=str(tmp_path / "serial.log"), clock=lambda: now[0],
    )  # fmt: skip
    tap.feed("rx", b"0123456789abcdef")
    tap.feed("rx", b"more")
    assert sent == []
    now[0] = 1.5
    tap.feed("tx", b"PING")
    tap.flush()
    assert sorted(sent, key=lambda e: e["direction"]) == [
        {"direction": "rx", "data": "0123456789", "bytes": 10, "dropped_bytes": 10},
        {"direction": "tx", "data": "PING", "bytes": 4, "dropped_bytes": 0},
    ]
    tap.close()
    assert (tmp_path / "serial.log").read_bytes() == b"0123456789abcdefmorePING"


# ---------------------------------------------------------------- platform handling


def test_child_process_group_flags_per_platform():
    assert runner.child_popen_kwargs("nt") == {"creationflags": 0x00000200}
    assert runner.child_popen_kwargs("posix") == {"start_new_session": True}


def test_windows_tree_kill_command():
    assert runner.kill_tree_command(4242) == ["taskkill", "/PID", "4242", "/T", "/F"]


def test_stop_signals_per_platform():
    assert runner.stop_signals("nt") == ["SIGINT", "SIGBREAK"]
    assert runner.stop_signals("posix") == ["SIGTERM", "SIGINT"]


def test_child_env_on_windows_paths():
    base = {"PYTHONPATH": r"C:\libs;C:\tms", "PATH": r"C:\Windows"}
    env = runner.child_env(base, {"TMS_X": "1"}, package_parent=r"C:\tms", pathsep=";")
    assert env["PYTHONPATH"] == r"C:\tms;C:\libs"
    assert env["TMS_X"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert base["PYTHONPATH"] == r"C:\libs;C:\tms"  # the caller's dict is untouched
    workspace = ntpath.dirname(r"C:\runs\42\events.jsonl")
    cmd = runner.build_pytest_command(
        r"C:\venvs\v1\Scripts\python.exe", ["tests"], ntpath.join(workspace, "junit.xml")
    )
    assert cmd == [
        r"C:\venvs\v1\Scripts\python.exe", "-m", "pytest",
        "-p", "remote_scripts.tms_pytest_plugin", r"--junitxml=C:\runs\42\junit.xml", "tests",
    ]  # fmt: skip


def test_pytest_command_keeps_a_given_junit_path():
    cmd = runner.build_pytest_command("py", ["--junitxml=mine.xml", "-x"], "default.xml")
    assert "--junitxml=default.xml" not in cmd and cmd[-2:] == ["--junitxml=mine.xml", "-x"]
    assert runner.build_script_command("py", "s.py", ["a"]) == ["py", "s.py", "a"]


@pytest.mark.parametrize(
    ("pytest_code", "expected"),
    [(0, 0), (1, 1), (2, 1), (3, 4), (4, 2), (5, 2), (-15, 4)],
)
def test_pytest_exit_status_mapping(pytest_code, expected):
    assert runner.pytest_exit_to_runner(pytest_code) == expected


def test_exit_codes_and_reasons_are_distinct():
    assert sorted(runner.REASONS) == [0, 1, 2, 3, 4, 5, 6]
    assert len(set(runner.REASONS.values())) == 7


def test_terminate_tree_on_an_exited_child():
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert runner.terminate_tree(proc, 0.1) == "exited"


def test_bad_command_lines_exit_with_usage(tmp_path, capsys):
    assert runner.main(["--mode", "nope", "--events-file", "x"], install_signals=False) == 2
    path = tmp_path / "e.jsonl"
    code = runner.main(
        ["--mode", "board", "--events-file", str(path), "--no-stdout", "smoke"],
        install_signals=False,
    )
    assert code == runner.EXIT_USAGE
    written = lines(path)
    assert [e["type"] for e in written] == ["run_start", "error", "run_end"]
    assert written[-1]["reason"] == "usage_error"
    code = runner.main(
        ["--mode", "board", "--events-file", str(path), "--no-stdout", "--serial-url",
         "loop://", "--baud", "0", "smoke"],
        install_signals=False,
    )  # fmt: skip
    assert code == runner.EXIT_USAGE
    assert "baudrate" in lines(path)[-2]["message"]


def test_serial_config_travels_through_the_environment():
    config = SerialConfig(
        "/dev/ttyUSB3", baudrate=921600, parity="E", stopbits=2, flow="rtscts",
        exclusive=False, reconnect_window=3.5,
    )  # fmt: skip
    again = SerialConfig.from_env(config.to_env())
    assert again.describe() == config.describe()
    assert again.reconnect_window == 3.5 and again.stopbits == 2
    with pytest.raises(RuntimeError):
        SerialConfig.from_env({})
    for bad in ({"parity": "X"}, {"bytesize": 9}, {"stopbits": 3}, {"flow": "magic"}):
        with pytest.raises(ValueError):
            SerialConfig("loop://", **bad)
