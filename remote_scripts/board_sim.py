"""A simulated board speaking the UART protocol, for tests and demos.

Run it as a program::

    python remote_scripts/board_sim.py [--link /tmp/board0] [options]

It opens a pseudo-terminal (POSIX) or ``--port URL`` (any pyserial URL or device, e.g. one
end of a com0com pair on Windows) and prints, as its first stdout line, ``PTY <path>`` (or
``PORT <url>``): the path the runner opens. Then it plays a board until SIGTERM/SIGINT or
``--duration``: heartbeats, fake tests on EXEC_TEST, answers to PING / ECHO / READ_SENSOR,
and faults on demand (flags, or ``SIM,<command>,...`` frames in band, see
docs/UART_PROTOCOL.md).

Or import it: ``BoardSimulator(PtyEndpoint()).start()`` runs the board in a thread.

Standard library + pyserial (only for ``--port``). Python >= 3.9.
"""

from __future__ import annotations

import argparse
import os
import random
import select
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import contextlib

from remote_scripts.uart import Frame, FrameDecoder, encode_frame

__all__ = ["TESTS", "BoardSimulator", "PtyEndpoint", "SerialEndpoint", "main"]


# -------------------------------------------------------------------- endpoints


class PtyEndpoint:
    """The board's end of a pseudo-terminal pair (POSIX only).

    The runner opens ``path``: the slave device, or ``link``, a symlink kept pointing at the
    current slave (like a udev by-id link) so a dropped and re-created line can be reopened
    under the same name.
    """

    def __init__(self, link: Optional[str] = None) -> None:
        self.link = link
        self.master: Optional[int] = None
        self._slave: Optional[int] = None
        self.slave_path = ""
        self.connect()

    @property
    def path(self) -> str:
        return self.link or self.slave_path

    @property
    def connected(self) -> bool:
        return self.master is not None

    def connect(self) -> None:
        import tty

        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation before the runner configures it
        os.set_blocking(master, False)
        self.master, self._slave = master, slave
        self.slave_path = os.ttyname(slave)
        if self.link:
            tmp = "%s.%d.tmp" % (self.link, os.getpid())
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(self.slave_path, tmp)
            os.replace(tmp, self.link)

    def disconnect(self) -> None:
        """Hang up: the reader gets EIO/EOF, the device node goes away."""
        for fd in (self.master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self._slave = None

    def read(self, timeout: float) -> bytes:
        master = self.master
        if master is None:
            time.sleep(timeout)
            return b""
        try:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                return b""
            return os.read(master, 65536)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            return b""

    def write(self, data: bytes, timeout: float) -> int:
        """Write what fits within ``timeout`` (a pty applies back-pressure); returns bytes."""
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        written = 0
        while view and self.master is not None:
            try:
                n = os.write(self.master, view)
                written += n
                view = view[n:]
                continue
            except BlockingIOError:
                pass
            except OSError:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            select.select([], [self.master], [], min(left, 0.05))
        return written

    def close(self) -> None:
        self.disconnect()
        if self.link and os.path.islink(self.link):
            with contextlib.suppress(OSError):
                os.unlink(self.link)


class SerialEndpoint:
    """The board's end on a real or virtual serial port (``--port``), through pyserial."""

    def __init__(self, url: str, baudrate: int = 115200) -> None:
        self.url = url
        self.baudrate = baudrate
        self.port: Any = None
        self.connect()

    @property
    def path(self) -> str:
        return self.url

    @property
    def connected(self) -> bool:
        return self.port is not None

    def connect(self) -> None:
        import serial

        self.port = serial.serial_for_url(
            self.url, baudrate=self.baudrate, timeout=0.02, write_timeout=2.0
        )

    def disconnect(self) -> None:
        port, self.port = self.port, None
        if port is not None:
            port.close()

    def read(self, timeout: float) -> bytes:
        if self.port is None:
            time.sleep(timeout)
            return b""
        try:
            return self.port.read(65536) if self.port.in_waiting else self.port.read(4096)
        except Exception:  # noqa: BLE001 - a simulator keeps going
            return b""

    def write(self, data: bytes, timeout: float) -> int:
        if self.port is None:
            return 0
        try:
            return self.port.write(data) or 0
        except Exception:  # noqa: BLE001
            return 0

    def close(self) -> None:
        self.disconnect()


# ------------------------------------------------------------------- fake tests


class Aborted(Exception):
    pass


class TestContext:
    """What a fake test sees: logging, checks, abortable sleep, raw data frames."""

    def __init__(self, sim: "BoardSimulator", testrun_id: str, args: Dict[str, str]) -> None:
        self.sim = sim
        self.testrun_id = testrun_id
        self.args = args
        self.passed = 0
        self.failed = 0
        self.abort = threading.Event()

    def log(self, level: str, message: str) -> None:
        self.sim.send("TEST_LOG", self.sim.board_id, self.testrun_id, level, message)

    def check(
        self, name: str, expected: Any, actual: Any, ok: Optional[bool] = None, details: str = ""
    ) -> bool:
        ok = (str(expected) == str(actual)) if ok is None else ok
        result = "PASS" if ok else "FAIL"
        fields = [self.sim.board_id, self.testrun_id, result, name, expected, actual]
        if details:
            fields.append(details)
        self.sim.send("ASSERTION", *fields)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok

    def sleep(self, seconds: float) -> None:
        if self.abort.wait(seconds):
            raise Aborted()

    def arg(self, name: str, default: Any, conv: Callable[[str], Any] = str) -> Any:
        raw = self.args.get(name)
        return default if raw is None else conv(raw)


def _t_smoke(ctx: TestContext) -> None:
    ctx.log("INFO", "boot ok, firmware 2.4.1, build a1b2c3")
    ctx.check("uart_loopback", "0x55", "0x55")
    ctx.log("DEBUG", "config: mode=fast, retries=3\nsecond line, with a comma")
    ctx.check("vref_mV", 3300, 3298, ok=abs(3300 - 3298) <= 10)
    ctx.check("flash_id", "EF4018", "EF4018")


def _t_gpio_toggle(ctx: TestContext) -> None:
    for i in range(ctx.arg("cycles", 5, int)):
        ctx.sleep(0.01)
        ctx.check("gpio12_level_%d" % i, i % 2, i % 2)


def _t_adc_sweep(ctx: TestContext) -> None:
    for channel in range(8):
        value = 510 + channel * 2
        ctx.check("adc%d_mid" % channel, "500..530", value, ok=500 <= value <= 530)


def _t_always_fail(ctx: TestContext) -> None:
    ctx.log("ERROR", "CRC self-test mismatch")
    ctx.check("crc_self_test", "0x1D0F", "0x0000", details="CRC-16 of the boot block, poly 0x1021")


def _t_slow(ctx: TestContext) -> None:
    seconds = ctx.arg("seconds", 1.0, float)
    ticks = max(1, int(seconds / 0.1))
    for i in range(ticks):
        ctx.sleep(seconds / ticks)
        ctx.log("INFO", "tick %d/%d" % (i + 1, ticks))
    ctx.check("ticks", ticks, ticks)


def _t_hang(ctx: TestContext) -> None:
    ctx.log("INFO", "waiting for an event that never comes")
    ctx.sleep(10**6)


def _t_flood(ctx: TestContext) -> None:
    count = ctx.arg("count", 1000, int)
    payload = "x" * ctx.arg("payload", 48, int)
    sent = ctx.sim.flood(count, payload, ctx.abort)
    ctx.check("data_frames_sent", count, sent)


def _t_echo_args(ctx: TestContext) -> None:
    for key in sorted(ctx.args):
        ctx.log("INFO", "%s=%s" % (key, ctx.args[key]))
    ctx.check("args", len(ctx.args), len(ctx.args))


TESTS: Dict[str, Callable[[TestContext], None]] = {
    "smoke": _t_smoke,
    "gpio_toggle": _t_gpio_toggle,
    "adc_sweep": _t_adc_sweep,
    "always_fail": _t_always_fail,
    "slow": _t_slow,
    "hang": _t_hang,
    "flood": _t_flood,
    "echo_args": _t_echo_args,
}

SENSORS = {"temp": ("C", 31.5), "vbat": ("V", 3.71), "adc0": ("counts", 2048)}


# -------------------------------------------------------------------- simulator


class BoardSimulator:
    """Plays a board on an endpoint. ``start()`` runs it in a thread; ``run()`` in this one.

    Faults (attributes, also settable in band with ``SIM`` frames):
    ``fail`` every test fails; ``hang`` tests hang after TEST_START; ``noise_rate`` chance
    of random bytes before a frame; ``bad_crc_rate`` chance of a corrupted copy of a frame
    before the real one; ``flooding`` DATA frames at full speed; ``drop(s)`` hang up the line
    for s seconds; ``freeze(s)`` answer nothing, not even heartbeats, for s seconds.
    """

    def __init__(
        self,
        endpoint: Any,
        board_id: str = "SIM-1",
        heartbeat_interval: float = 1.0,
        seed: Optional[int] = None,
        log: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.endpoint = endpoint
        self.board_id = board_id
        self.heartbeat_interval = heartbeat_interval
        self.rng = random.Random(seed)  # noqa: S311 - simulated values, not secrets
        self._log = log or (lambda message: None)
        self.decoder = FrameDecoder()
        self.fail = False
        self.hang = False
        self.noise_rate = 0.0
        self.bad_crc_rate = 0.0
        self.flooding = False
        self.stats: Dict[str, int] = {
            "frames_sent": 0,
            "data_frames_sent": 0,
            "bad_crc_injected": 0,
            "noise_injected": 0,
            "noise_bytes": 0,
            "bytes_lost": 0,
            "commands": 0,
            "drops": 0,
            "tests_run": 0,
        }
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._test: Optional[TestContext] = None
        self._test_thread: Optional[threading.Thread] = None
        self._down_until = 0.0
        self._pending_drop: Optional[float] = None
        self._frozen_until = 0.0
        self._boot = time.monotonic()
        self._data_seq = 0

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> "BoardSimulator":
        self._thread = threading.Thread(target=self.run, name="board-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._test is not None:
            self._test.abort.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._test_thread is not None:
            self._test_thread.join(timeout)

    def drop(self, seconds: float) -> None:
        """Hang up the line and bring it back after ``seconds`` (done by the board thread)."""
        if self._thread is not None and threading.current_thread() is not self._thread:
            self._pending_drop = seconds
            return
        self._drop_now(seconds)

    def _drop_now(self, seconds: float) -> None:
        with self._write_lock:
            self.endpoint.disconnect()
            self._down_until = time.monotonic() + seconds
            self.stats["drops"] += 1
        self._log("line dropped for %.3gs" % seconds)

    def freeze(self, seconds: float) -> None:
        self._frozen_until = time.monotonic() + seconds

    def run(self) -> None:
        next_heartbeat = time.monotonic()
        while not self._stop.is_set():
            if self._pending_drop is not None:
                seconds, self._pending_drop = self._pending_drop, None
                self._drop_now(seconds)
            now = time.monotonic()
            if not self.endpoint.connected:
                if now >= self._down_until:
                    with self._write_lock:
                        self.endpoint.connect()
                    self.decoder.reset()
                    self._log("line back on %s" % self.endpoint.path)
                else:
                    time.sleep(min(0.01, self._down_until - now))
                continue
            if now < self._frozen_until:
                self.endpoint.read(min(0.05, self._frozen_until - now))
                next_heartbeat = max(next_heartbeat, self._frozen_until)
                continue
            if self.heartbeat_interval > 0 and now >= next_heartbeat:
                self._heartbeat()
                next_heartbeat = now + self.heartbeat_interval
            if self.flooding:
                self.flood(64, "x" * 48, self._stop)
                wait = 0.0
            else:
                wait = max(0.0, min(0.05, next_heartbeat - time.monotonic()))
            for frame in self.decoder.feed(self.endpoint.read(wait)):
                try:
                    self._handle(frame)
                except Exception as exc:  # noqa: BLE001 - a bad command must not kill the board
                    self._status("ERROR", "E_INTERNAL", "%s: %s" % (frame.type, exc))

    # ------------------------------------------------------------------ output

    def uptime_ms(self) -> int:
        return int((time.monotonic() - self._boot) * 1000)

    def send(self, msg_type: str, *fields: Any) -> None:
        self.write(encode_frame(msg_type, *fields))

    def write(self, frame: bytes, count: int = 1, data_frames: int = 0) -> None:
        """Write encoded frame(s), applying the noise and bad-CRC faults per call."""
        out = bytearray()
        if self.noise_rate and self.rng.random() < self.noise_rate:
            noise = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 40)))
            out += noise
            self.stats["noise_injected"] += 1
            self.stats["noise_bytes"] += len(noise)
        if self.bad_crc_rate and self.rng.random() < self.bad_crc_rate:
            end = frame.index(b"\r\n")
            crc = int(frame[end - 4 : end], 16)
            out += frame[: end - 4] + b"%04X" % (crc ^ 0x0101) + b"\r\n"
            self.stats["bad_crc_injected"] += 1
        out += frame
        with self._write_lock:
            if not self.endpoint.connected or time.monotonic() < self._frozen_until:
                self.stats["bytes_lost"] += len(out)
                return
            written = self.endpoint.write(bytes(out), timeout=2.0)
            self.stats["bytes_lost"] += len(out) - written
            if written == len(out):
                self.stats["frames_sent"] += count
                self.stats["data_frames_sent"] += data_frames

    def flood(self, count: int, payload: str, abort: threading.Event) -> int:
        """Send ``count`` DATA frames as fast as the line takes them; returns how many."""
        sent = 0
        while sent < count and not abort.is_set() and not self._stop.is_set():
            batch = min(64, count - sent)
            chunk = b"".join(
                encode_frame("DATA", self.board_id, self._data_seq + i, payload)
                for i in range(batch)
            )
            self._data_seq += batch
            before = self.stats["data_frames_sent"]
            self.write(chunk, count=batch, data_frames=batch)
            sent += self.stats["data_frames_sent"] - before
        return sent

    def _heartbeat(self) -> None:
        state = "BUSY" if self._test is not None else "IDLE"
        cpu = "%.1f" % (self.rng.uniform(20, 60) if self._test else self.rng.uniform(1, 8))
        temp = "%.1f" % self.rng.uniform(30, 40)
        self.send("HEARTBEAT", self.board_id, self.uptime_ms(), state, cpu, temp)

    def _status(self, state: str, code: str, message: str) -> None:
        self.send("STATUS", self.board_id, state, code, message)

    # ---------------------------------------------------------------- commands

    def _handle(self, frame: Frame) -> None:
        self.stats["commands"] += 1
        kind = frame.type
        if kind == "PING":
            self.send("PONG", self.board_id, frame.get("token"))
        elif kind == "ECHO":
            self.send("ECHO_REPLY", self.board_id, frame.get("text"))
        elif kind == "READ_SENSOR":
            name = frame.get("sensor") or ""
            if name in SENSORS:
                unit, value = SENSORS[name]
                self.send("SENSOR", self.board_id, name, value, unit)
            else:
                self._status("ERROR", "E_UNKNOWN_SENSOR", name)
        elif kind == "EXEC_TEST":
            self._exec_test(frame)
        elif kind == "ABORT":
            test = self._test
            if test is not None and test.testrun_id == frame.get("testrun_id"):
                test.abort.set()
        elif kind == "SIM":
            self._sim_command(frame.get("command") or "", frame.args())
        # Board-to-host types arriving here are ignored, as firmware would.

    def _exec_test(self, frame: Frame) -> None:
        testrun_id = frame.get("testrun_id") or ""
        name = frame.get("test_name") or ""
        if self._test is not None:
            self._status("BUSY", "E_BUSY", "test %s is running" % self._test.testrun_id)
            return
        if name not in TESTS:
            self._status("ERROR", "E_UNKNOWN_TEST", name)
            return
        args = {}
        for item in frame.args():
            key, _, value = item.partition("=")
            args[key] = value
        ctx = TestContext(self, testrun_id, args)
        self._test = ctx
        self.send("ACK", self.board_id, "EXEC_TEST", testrun_id)
        self._test_thread = threading.Thread(
            target=self._run_test, args=(ctx, name), name="board-sim-test", daemon=True
        )
        self._test_thread.start()

    def _run_test(self, ctx: TestContext, name: str) -> None:
        start = time.monotonic()
        self.stats["tests_run"] += 1
        self.send("TEST_START", self.board_id, ctx.testrun_id, self.uptime_ms(), name)
        aborted = False
        try:
            if self.hang:
                ctx.log("INFO", "hanging (fault injected)")
                ctx.sleep(10**6)
            TESTS[name](ctx)
            if self.fail:
                ctx.check("injected_failure", "pass", "fail")
        except Aborted:
            aborted = True
        except Exception as exc:  # noqa: BLE001
            ctx.log("ERROR", "test crashed: %r" % (exc,))
            ctx.failed += 1
        duration = int((time.monotonic() - start) * 1000)
        if aborted:
            code, summary = 2, "ABORTED"
        elif ctx.failed:
            code, summary = 1, "FAILED"
        else:
            code, summary = 0, "PASSED"
        details = "%d passed, %d failed" % (ctx.passed, ctx.failed)
        self.send("TEST_END", self.board_id, ctx.testrun_id, code, duration, summary, details)
        self._test = None

    def _sim_command(self, command: str, args: tuple) -> None:
        arg = args[0] if args else ""
        if command == "fail":
            self.fail = arg != "off"
        elif command == "hang":
            self.hang = arg != "off"
        elif command == "noise":
            self.noise_rate = float(arg or 0)
        elif command == "bad_crc":
            self.bad_crc_rate = float(arg or 0)
        elif command == "flood":
            self.flooding = arg != "off"
        elif command == "reset":
            self.fail = self.hang = self.flooding = False
            self.noise_rate = self.bad_crc_rate = 0.0
        elif command not in ("drop", "freeze"):
            self._status("ERROR", "E_SIM", "unknown SIM command %s" % command)
            return
        self.send("ACK", self.board_id, "SIM", command)
        if command == "drop":
            self.drop(float(arg or 1.0))
        elif command == "freeze":
            self.freeze(float(arg or 1.0))


# -------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Simulated board speaking the UART protocol.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--link", help="keep a symlink at this path to the pty (POSIX)")
    where.add_argument("--port", help="use this serial port/URL instead of a pty")
    p.add_argument("--baud", type=int, default=115200, help="baud rate with --port")
    p.add_argument("--board-id", default="SIM-1")
    p.add_argument("--heartbeat", type=float, default=1.0, help="seconds; 0 = none")
    p.add_argument("--seed", type=int, default=None, help="seed for noise and values")
    p.add_argument("--fail", action="store_true", help="every test fails")
    p.add_argument("--hang", action="store_true", help="tests hang after TEST_START")
    p.add_argument("--noise", type=float, default=0.0, help="chance of noise before a frame")
    p.add_argument("--bad-crc", type=float, default=0.0, help="chance of a bad-CRC copy")
    p.add_argument("--flood", action="store_true", help="send DATA frames at full speed")
    p.add_argument("--drop-after", type=float, default=None, help="hang up after N seconds")
    p.add_argument("--drop-for", type=float, default=1.0, help="seconds the line stays down")
    p.add_argument("--freeze-after", type=float, default=None, help="freeze after N seconds")
    p.add_argument("--freeze-for", type=float, default=5.0, help="seconds frozen")
    p.add_argument("--duration", type=float, default=None, help="exit after N seconds")
    p.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.port:
        endpoint: Any = SerialEndpoint(args.port, args.baud)
        print("PORT %s" % endpoint.path, flush=True)
    else:
        if os.name != "posix":
            print("no pty on this platform: use --port", file=sys.stderr)
            return 2
        endpoint = PtyEndpoint(link=os.path.abspath(args.link) if args.link else None)
        print("PTY %s" % endpoint.path, flush=True)

    def log(message: str) -> None:
        if args.verbose:
            print("board_sim: %s" % message, file=sys.stderr, flush=True)

    sim = BoardSimulator(endpoint, args.board_id, args.heartbeat, args.seed, log)
    sim.fail, sim.hang, sim.flooding = args.fail, args.hang, args.flood
    sim.noise_rate, sim.bad_crc_rate = args.noise, args.bad_crc
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, on_signal)
    if hasattr(signal, "SIGBREAK"):
        signal.signal(signal.SIGBREAK, on_signal)
    sim.start()
    start = time.monotonic()
    dropped = frozen = False
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - start
            if args.duration is not None and elapsed >= args.duration:
                break
            if args.drop_after is not None and not dropped and elapsed >= args.drop_after:
                sim.drop(args.drop_for)
                dropped = True
            if args.freeze_after is not None and not frozen and elapsed >= args.freeze_after:
                sim.freeze(args.freeze_for)
                frozen = True
            stop.wait(0.05)
    finally:
        sim.stop()
        endpoint.close()
        log("stats %s" % sim.stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
