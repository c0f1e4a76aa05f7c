"""Serial: frames/s decoded by the chunked FrameDecoder vs a byte-at-a-time reader, zero loss.

The byte-at-a-time reader is the original plan's UART handler loop: ``ser.read()`` of one
byte per call, a str buffer grown a character at a time, a parse at each newline (here the
same CRC check and split, so only the reading strategy differs).

Two settings, both readers side by side in the same run:
  * in memory: the decoders are fed from a bytes buffer (``loop://`` for the byte reader's
    read(1) calls would measure pyserial, so the in-memory byte reader slices a buffer);
  * over a real pty opened with pyserial at 921600 baud: a writer thread floods frames into
    the master end as fast as the pty takes them, the reader reads the slave end. A pty does
    not pace bytes at the baud rate and blocks the writer when its buffer is full, so nothing
    is dropped on the way; a real UART drops what the reader does not take in time. What
    matters there is how many frames/s a reader decodes compared with what the line carries
    (the headroom) and how much CPU it burns doing so.

Zero loss is checked for every reader in every setting: the frames decoded are the frames sent,
in order and byte for byte, and no line failed its CRC or was otherwise refused.

Prints figures; asserts nothing about time.
python bench/bench_uart_decode.py [--frames N] [--baud N]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import serial

from bench._common import comparison, machine_info, result
from remote_scripts.uart import FrameDecoder, crc16, encode_frame

CHUNK = 4096
PTY_DEADLINE = 300.0


def make_frames(count: int) -> list[bytes]:
    return [
        encode_frame("TEST_LOG", "B1", "1001", "INFO", f"sample {i:06d}, value={i * 7}")
        for i in range(count)
    ]


class ByteReader:
    """One byte per read() call, as in the original plan's _read_loop; keeps each good line
    (to check afterwards that nothing was lost) and counts the lines whose CRC fails."""

    def __init__(self, read1: Callable[[], bytes]) -> None:
        self.read1 = read1
        self.buffer = ""
        self.lines: list[str] = []
        self.crc_failures = 0

    @property
    def frames(self) -> int:
        return len(self.lines)

    def step(self) -> None:
        byte_data = self.read1()
        if not byte_data:
            return
        char = byte_data.decode("utf-8", errors="ignore")
        if char == "\n":
            line = self.buffer.strip()
            if line:
                self.parse_line(line)
            self.buffer = ""
        elif char != "\r":
            self.buffer += char

    def parse_line(self, line: str) -> None:
        """The per-line work: CRC check and split."""
        body, _, crc = line.rpartition(",")
        try:
            good = crc16(body.encode()) == int(crc or "0", 16)
        except ValueError:
            good = False
        if not good:
            self.crc_failures += 1
            return
        body.split(",")
        self.lines.append(line)


def loss_check(
    sent: list[bytes], decoded: list[bytes], crc_failures: int, other_errors: int
) -> dict[str, Any]:
    """Frames sent vs frames decoded, compared line by line."""
    sent_lines = [frame.rstrip(b"\r\n") for frame in sent]
    same = decoded == sent_lines
    return {
        "frames_sent": len(sent),
        "frames_decoded": len(decoded),
        "identical_in_order": same,
        "crc_failures": crc_failures,
        "other_errors": other_errors,
        "zero_loss": same and crc_failures == 0 and other_errors == 0,
    }


def decoder_result(decoder: FrameDecoder, frames: list[Any], sent: list[bytes]) -> dict[str, Any]:
    errors = dict(decoder.stats.errors)
    crc = errors.pop("bad_crc", 0)
    return loss_check(
        sent, [frame.encode().rstrip(b"\r\n") for frame in frames], crc, sum(errors.values())
    )


def byte_result(reader: ByteReader, sent: list[bytes]) -> dict[str, Any]:
    return loss_check(sent, [line.encode() for line in reader.lines], reader.crc_failures, 0)


def figures_of(count: int, wall: float, cpu: float, checked: dict[str, Any]) -> dict[str, Any]:
    return {
        "fps": round(checked["frames_decoded"] / wall),
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "cpu_us_per_frame": round(cpu / max(count, 1) * 1e6, 2),
        **checked,
    }


def bench_memory(sent: list[bytes]) -> dict[str, dict[str, Any]]:
    stream = b"".join(sent)
    count = len(sent)
    decoder = FrameDecoder()
    frames: list[Any] = []
    start, cpu = time.perf_counter(), time.thread_time()
    for i in range(0, len(stream), CHUNK):
        frames.extend(decoder.feed(stream[i : i + CHUNK]))
    chunked = figures_of(
        count,
        time.perf_counter() - start,
        time.thread_time() - cpu,
        decoder_result(decoder, frames, sent),
    )

    pos = [0]

    def read1() -> bytes:
        p = pos[0]
        pos[0] = p + 1
        return stream[p : p + 1]

    reader = ByteReader(read1)
    start, cpu = time.perf_counter(), time.thread_time()
    while pos[0] < len(stream):
        reader.step()
    bytewise = figures_of(
        count, time.perf_counter() - start, time.thread_time() - cpu, byte_result(reader, sent)
    )
    return {"chunked": chunked, "bytewise": bytewise}


def bench_pty(sent: list[bytes], chunked: bool, baud: int) -> dict[str, Any]:
    stream = b"".join(sent)
    count = len(sent)
    master, slave = os.openpty()
    path = os.ttyname(slave)
    port = serial.serial_for_url(path, baudrate=baud, timeout=0.02)

    def flood() -> None:
        view = memoryview(stream)
        while view:
            view = view[os.write(master, view[:CHUNK]) :]

    writer = threading.Thread(target=flood, daemon=True)
    start, cpu = time.perf_counter(), time.thread_time()
    writer.start()
    deadline = time.monotonic() + PTY_DEADLINE
    if chunked:
        decoder = FrameDecoder()
        frames: list[Any] = []
        while len(frames) < count and time.monotonic() < deadline:
            frames.extend(decoder.feed(port.read(CHUNK)))
        wall, used = time.perf_counter() - start, time.thread_time() - cpu
        checked = decoder_result(decoder, frames, sent)
    else:
        reader = ByteReader(lambda: port.read(1))
        while reader.frames < count and time.monotonic() < deadline:
            reader.step()
        wall, used = time.perf_counter() - start, time.thread_time() - cpu
        checked = byte_result(reader, sent)
    writer.join(5)
    port.close()
    os.close(master)
    os.close(slave)
    return figures_of(count, wall, used, checked)


def describe_reader(label: str, figures: dict[str, Any], line_fps: float) -> str:
    return (
        f"  {label:15} {figures['fps']:>10,} frames/s ({figures['fps'] / line_fps:5.1f}x the "
        f"line), {figures['cpu_us_per_frame']:6.2f} us CPU a frame; sent "
        f"{figures['frames_sent']:,}, decoded {figures['frames_decoded']:,}, identical in "
        f"order: {'yes' if figures['identical_in_order'] else 'NO'}, CRC failures "
        f"{figures['crc_failures']}, other errors {figures['other_errors']}: "
        f"{'zero loss' if figures['zero_loss'] else 'FRAMES LOST'}"
    )


def compare(
    name: str, setting: dict[str, dict[str, Any]], line_fps: float, baud: int, where: str
) -> dict[str, Any]:
    ours, naive = setting["chunked"], setting["bytewise"]
    both_lossless = ours["zero_loss"] and naive["zero_loss"]
    # At the line rate, the share of one CPU each reader needs to keep up with the port.
    ours_cpu = ours["cpu_us_per_frame"] * line_fps / 1e4
    naive_cpu = naive["cpu_us_per_frame"] * line_fps / 1e4
    return comparison(
        name,
        metric=f"frames/s decoded, {where}",
        unit="frames/s",
        ours=float(ours["fps"]),
        naive=float(naive["fps"]),
        higher_is_better=True,
        goal=f"zero loss, faster than a {baud} baud line ({line_fps:,.0f} frames/s)",
        met=ours["zero_loss"] and ours["fps"] > line_fps,
        note=(
            f"zero loss: ours {'yes' if ours['zero_loss'] else 'NO'} ({ours['frames_decoded']:,}"
            f" of {ours['frames_sent']:,}, CRC failures {ours['crc_failures']}), byte-at-a-time "
            f"{'yes' if naive['zero_loss'] else 'NO'} ({naive['frames_decoded']:,} of "
            f"{naive['frames_sent']:,}, CRC failures {naive['crc_failures']}); to keep up with "
            f"the line ours needs {ours_cpu:.1f} % of a CPU, byte-at-a-time {naive_cpu:.1f} %"
            + ("" if both_lossless else "; a reader LOST frames")
        ),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--baud", type=int, default=921600)
    args = parser.parse_args()
    info = machine_info()
    print(
        f"machine: {info.get('cpus')} CPUs, {info.get('memory_gib', '?')} GiB, Python "
        f"{info.get('python')}, load average {info.get('load_average_1m', '?')}"
    )
    sent = make_frames(args.frames)
    size = sum(len(frame) for frame in sent) / args.frames
    line_fps = args.baud / 10 / size
    print(f"frames: {args.frames:,}, {size:.1f} bytes each")
    print(f"a {args.baud} baud 8N1 line carries at most {line_fps:,.0f} such frames/s")
    figures: dict[str, Any] = {
        "machine": info,
        "frames": args.frames,
        "frame_bytes": round(size, 1),
        "baud": args.baud,
        "line_fps": round(line_fps),
    }
    comparisons = []
    memory = bench_memory(sent)
    figures["memory"] = memory
    print("in memory:")
    print(describe_reader("chunked", memory["chunked"], line_fps))
    print(describe_reader("byte-at-a-time", memory["bytewise"], line_fps))
    print(f"  ratio x{memory['chunked']['fps'] / memory['bytewise']['fps']:.1f}")
    if os.name == "posix":
        pty = {
            "chunked": bench_pty(sent, True, args.baud),
            "bytewise": bench_pty(sent, False, args.baud),
        }
        figures["pty"] = pty
        print(f"pty at {args.baud} baud (flooded):")
        print(describe_reader("chunked", pty["chunked"], line_fps))
        print(describe_reader("byte-at-a-time", pty["bytewise"], line_fps))
        print(f"  ratio x{pty['chunked']['fps'] / pty['bytewise']['fps']:.1f}")
        comparisons.append(
            compare("serial decode (pty)", pty, line_fps, args.baud, f"pty flood, {args.baud} baud")
        )
    else:
        print("pty: skipped (not POSIX)")
    comparisons.append(compare("serial decode (memory)", memory, line_fps, args.baud, "in memory"))
    lossless = all(
        reader["zero_loss"]
        for setting in (figures.get("memory"), figures.get("pty"))
        if setting
        for reader in setting.values()
    )
    print(f"zero frames lost by every reader in every setting: {'yes' if lossless else 'NO'}")
    figures["zero_loss_everywhere"] = lossless
    figures["load_average_1m_at_end"] = machine_info().get("load_average_1m")
    figures["comparisons"] = comparisons
    result(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
