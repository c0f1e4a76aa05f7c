"""Run events: JSON lines on stdout and in an append-only events file.

The events file is the durable record the server tails (by byte offset and ``seq``). Each
event is one complete JSON object on one line, written with a single ``write`` on a file
opened in append mode. A runner restarted on an existing file continues ``seq`` after the
last complete line; a partial last line (the previous process died mid-write) is cut off
first, since a reader only ever consumes complete lines.

Child processes (the pytest plugin, scripts using ``serial_link``) do not number events:
they append unnumbered JSON lines to a child channel file that the runner tails and
re-sequences, so ``seq`` stays gap-free across processes.

Standard library only. Python >= 3.9.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

__all__ = [
    "EVENT_TYPES",
    "ChildChannel",
    "ChildTail",
    "EventWriter",
    "SerialTap",
    "clip",
    "read_last_seq",
    "utc_now",
]

EVENT_TYPES = (
    "run_start",
    "plan",
    "test_start",
    "test_end",
    "log",
    "serial",
    "heartbeat",
    "board_status",
    "error",
    "run_end",
)
#: Types a child process may send through its channel.
CHILD_EVENT_TYPES = ("plan", "test_start", "test_end", "log", "serial", "board_status", "error")

_O_BINARY = getattr(os, "O_BINARY", 0)


def utc_now() -> str:
    """UTC time as ISO 8601 with milliseconds and a ``Z`` suffix."""
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000)


def clip(text: str, limit: int) -> Tuple[str, bool]:
    """``text`` cut to at most ``limit`` characters, and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def _dumps(obj: Dict[str, Any]) -> bytes:
    # ASCII only: safe on any console code page and over any SSH channel.
    return (json.dumps(obj, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_last_seq(path: str, repair: bool = True) -> Tuple[int, int]:
    """``(last seq, bytes cut)`` of an events file; ``(0, 0)`` if it is missing or empty.

    With ``repair`` a trailing partial line is truncated away.
    """
    try:
        size = os.path.getsize(path)
    except OSError:
        return 0, 0
    if size == 0:
        return 0, 0
    seq = 0
    cut = None
    with open(path, "rb") as f:
        pos = size
        data = b""
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
            if cut is None:
                last_nl = data.rfind(b"\n")
                if last_nl >= 0:
                    cut = len(data) - last_nl - 1
                elif pos == 0:
                    cut = len(data)
            if cut is None:
                continue
            lines = data[: len(data) - cut].split(b"\n")
            if pos > 0:
                lines = lines[1:]  # may be the tail of a line that starts further back
            found = _last_seq_in(lines)
            if found is not None:
                seq = found
                break
    cut = cut or 0
    if repair and cut:
        with open(path, "r+b") as f:
            f.truncate(size - cut)
    return seq, cut


def _last_seq_in(lines: List[bytes]) -> Optional[int]:
    for raw in reversed(lines):
        raw = raw.strip()
        if not raw:
            continue
        try:
            seq = json.loads(raw.decode("utf-8"))["seq"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            continue
        if isinstance(seq, int) and not isinstance(seq, bool):
            return seq
    return None


class EventWriter:
    """Numbers events and writes each to the events file and to stdout.

    Thread-safe. stdout is best effort (a closed SSH channel must not stop a run); the file is
    not: a failing file write raises.
    """

    def __init__(
        self,
        path: str,
        stdout: Optional[TextIO] = None,
        run_id: Optional[str] = None,
        fsync_types: Tuple[str, ...] = ("run_end",),
    ) -> None:
        self.path = path
        self.run_id = run_id
        self._stdout = stdout
        self._fsync_types = fsync_types
        self._lock = threading.Lock()
        self._fd: Optional[int] = None
        self.seq = 0
        self.resumed_from = 0
        self.repaired_bytes = 0
        self.listeners: List[Callable[[Dict[str, Any]], None]] = []

    def open(self) -> "EventWriter":
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        self.seq, self.repaired_bytes = read_last_seq(self.path)
        self.resumed_from = self.seq
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _O_BINARY
        self._fd = os.open(self.path, flags, 0o644)
        return self

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "EventWriter":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def emit(self, type_: str, fields: Optional[Dict[str, Any]] = None, ts: Optional[str] = None):
        """Write one event; returns it (with seq and ts)."""
        if type_ not in EVENT_TYPES:
            raise ValueError("unknown event type %r" % (type_,))
        with self._lock:
            if self._fd is None:
                raise RuntimeError("events file is not open")
            event: Dict[str, Any] = {"seq": self.seq + 1, "ts": ts or utc_now(), "type": type_}
            if self.run_id is not None:
                event["run_id"] = self.run_id
            if fields:
                for key, value in fields.items():
                    if key not in event:
                        event[key] = value
            data = _dumps(event)
            _write_all(self._fd, data)
            if type_ in self._fsync_types:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
            self.seq += 1
            if self._stdout is not None:
                try:
                    self._stdout.write(data.decode("ascii"))
                    self._stdout.flush()
                except (OSError, ValueError):
                    self._stdout = None  # the reader went away; the file is the record
        for listener in list(self.listeners):
            listener(event)
        return event


class ChildChannel:
    """Unnumbered events from a child process to the runner, appended to a file.

    Created from the environment (``TMS_CHILD_EVENTS``); does nothing when unset, so the
    same test code runs outside a runner.
    """

    ENV = "TMS_CHILD_EVENTS"

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self._fd: Optional[int] = None
        self._lock = threading.Lock()
        if path:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _O_BINARY
            self._fd = os.open(path, flags, 0o644)

    @classmethod
    def from_env(cls, environ: Optional[Dict[str, str]] = None) -> "ChildChannel":
        env = os.environ if environ is None else environ
        return cls(env.get(cls.ENV) or None)

    @property
    def active(self) -> bool:
        return self._fd is not None

    def emit(self, type_: str, fields: Optional[Dict[str, Any]] = None) -> None:
        if self._fd is None:
            return
        if type_ not in CHILD_EVENT_TYPES:
            raise ValueError("a child may not send %r events" % (type_,))
        event: Dict[str, Any] = {"ts": utc_now(), "type": type_}
        if fields:
            event.update(fields)
        data = _dumps(event)
        with self._lock:
            if self._fd is not None:
                _write_all(self._fd, data)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class ChildTail:
    """Reads complete lines appended to a child channel file, from where it left off."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self._partial = b""
        self.bad_lines = 0

    def read(self) -> List[Dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        if not data:
            return []
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        events = []
        for raw in lines:
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                self.bad_lines += 1
                continue
            if isinstance(obj, dict) and obj.get("type") in CHILD_EVENT_TYPES:
                events.append(obj)
            else:
                self.bad_lines += 1
        return events


class SerialTap:
    """Bounded ``serial`` events from raw traffic.

    Bytes are gathered per direction and sent at most every ``interval`` seconds, at most
    ``max_bytes`` per event; what does not fit before the next event is counted as
    ``dropped_bytes`` in it. A complete capture belongs in a serial log file, not in events.
    """

    def __init__(
        self,
        emit: Callable[[str, Dict[str, Any]], Any],
        max_bytes: int = 2048,
        interval: float = 0.25,
        log_path: Optional[str] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self.max_bytes = max_bytes
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._buf = {"rx": bytearray(), "tx": bytearray()}
        self._dropped = {"rx": 0, "tx": 0}
        self._total = {"rx": 0, "tx": 0}
        self._last = {"rx": clock(), "tx": clock()}
        self._log = open(log_path, "ab") if log_path else None  # noqa: SIM115

    def feed(self, direction: str, data: bytes) -> None:
        pending = None
        with self._lock:
            if self._log is not None:
                self._log.write(data)
            self._total[direction] += len(data)
            buf = self._buf[direction]
            room = self.max_bytes - len(buf)
            if room > 0:
                buf += data[:room]
            self._dropped[direction] += max(0, len(data) - max(room, 0))
            if self._clock() - self._last[direction] >= self.interval:
                pending = self._take(direction)
        if pending:
            self._emit("serial", pending)

    def flush(self, force: bool = False) -> None:
        for direction in ("rx", "tx"):
            with self._lock:
                due = force or self._clock() - self._last[direction] >= self.interval
                pending = self._take(direction) if due else None
                if self._log is not None:
                    self._log.flush()
            if pending:
                self._emit("serial", pending)

    def _take(self, direction: str) -> Optional[Dict[str, Any]]:
        buf = self._buf[direction]
        dropped = self._dropped[direction]
        self._last[direction] = self._clock()
        if not buf and not dropped:
            return None
        event = {
            "direction": direction,
            "data": bytes(buf).decode("utf-8", "backslashreplace"),
            "bytes": len(buf),
            "dropped_bytes": dropped,
        }
        buf.clear()
        self._dropped[direction] = 0
        return event

    def totals(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._total)

    def close(self) -> None:
        self.flush(force=True)
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None
