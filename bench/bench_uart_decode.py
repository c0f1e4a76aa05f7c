"""Frames per second: the chunked FrameDecoder vs a byte-at-a-time reader.

The byte-at-a-time reader is the original plan's UART handler loop: ``ser.read()`` of one
byte per call, a str buffer grown a character at a time, a parse at each newline (here the
same CRC check and split, so only the reading strategy differs).

Two settings:
  * in memory: the decoders are fed from a bytes buffer (``loop://`` for the byte reader's
    read(1) calls would measure pyserial, so the in-memory byte reader slices a buffer);
  * over a real pty at 921600 baud: a writer thread floods frames into the master end, the
    reader opens the slave with pyserial. Both runs read until every frame arrived.

Prints figures; asserts nothing about time.  python bench/bench_uart_decode.py [--frames N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import serial

from remote_scripts.uart import FrameDecoder, crc16, encode_frame


def make_stream(count: int) -> bytes:
    return b"".join(
        encode_frame("TEST_LOG", "B1", "1001", "INFO", f"sample {i:06d}, value={i * 7}")
        for i in range(count)
    )


def parse_line(line: str) -> bool:
    """The per-line work of the byte-at-a-time reader: CRC check and split."""
    body, _, crc = line.rpartition(",")
    if crc16(body.encode()) != int(crc or "0", 16):
        return False
    body.split(",")
    return True


class ByteReader:
    """One byte per read() call, as in the original plan's _read_loop."""

    def __init__(self, read1) -> None:
        self.read1 = read1
        self.buffer = ""
        self.frames = 0

    def step(self) -> None:
        byte_data = self.read1()
        if not byte_data:
            return
        char = byte_data.decode("utf-8", errors="ignore")
        if char == "\n":
            if self.buffer.strip() and parse_line(self.buffer.strip()):
                self.frames += 1
            self.buffer = ""
        elif char != "\r":
            self.buffer += char


def bench_memory(stream: bytes, count: int) -> tuple[float, float]:
    start = time.perf_counter()
    decoder = FrameDecoder()
    got = 0
    for i in range(0, len(stream), 4096):
        got += len(decoder.feed(stream[i : i + 4096]))
    chunked = time.perf_counter() - start
    assert got == count

    pos = [0]

    def read1() -> bytes:
        p = pos[0]
        pos[0] = p + 1
        return stream[p : p + 1]

    reader = ByteReader(read1)
    start = time.perf_counter()
    while pos[0] < len(stream):
        reader.step()
    bytewise = time.perf_counter() - start
    assert reader.frames == count
    return count / chunked, count / bytewise


def bench_pty(stream: bytes, count: int, chunked: bool, baud: int) -> float:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    port = serial.serial_for_url(path, baudrate=baud, timeout=0.02)

    def flood() -> None:
        view = memoryview(stream)
        while view:
            view = view[os.write(master, view[:4096]) :]

    writer = threading.Thread(target=flood, daemon=True)
    start = time.perf_counter()
    writer.start()
    got = 0
    deadline = time.monotonic() + 120
    if chunked:
        decoder = FrameDecoder()
        while got < count and time.monotonic() < deadline:
            got += len(decoder.feed(port.read(4096)))
    else:
        port.timeout = 0.02
        reader = ByteReader(lambda: port.read(1))
        while reader.frames < count and time.monotonic() < deadline:
            reader.step()
        got = reader.frames
    elapsed = time.perf_counter() - start
    writer.join(5)
    port.close()
    os.close(master)
    os.close(slave)
    if got != count:
        print(f"  (only {got} of {count} frames arrived before the deadline)")
    return got / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--baud", type=int, default=921600)
    args = parser.parse_args()
    stream = make_stream(args.frames)
    size = len(stream) / args.frames
    print(f"frames: {args.frames}, {size:.1f} bytes each")
    line_rate = args.baud / 10 / size
    print(f"a {args.baud} baud 8N1 line carries at most {line_rate:.0f} such frames/s")
    figures: dict = {"frames": args.frames, "frame_bytes": round(size, 1), "baud": args.baud}
    ours, bytewise = bench_memory(stream, args.frames)
    figures["memory"] = {"chunked_fps": round(ours), "bytewise_fps": round(bytewise)}
    print(
        f"in memory:   chunked {ours:10.0f} frames/s   "
        f"byte-at-a-time {bytewise:10.0f} frames/s   (x{ours / bytewise:.1f})"
    )
    if os.name == "posix":
        ours = bench_pty(stream, args.frames, True, args.baud)
        bytewise = bench_pty(stream, args.frames, False, args.baud)
        figures["pty"] = {"chunked_fps": round(ours), "bytewise_fps": round(bytewise)}
        print(
            f"pty {args.baud}: chunked {ours:10.0f} frames/s   "
            f"byte-at-a-time {bytewise:10.0f} frames/s   (x{ours / bytewise:.1f})"
        )
    else:
        print("pty: skipped (not POSIX)")
    print("RESULT_JSON " + json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
