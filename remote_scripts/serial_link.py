"""A board on a serial port: open, read frames in chunks with deadlines, send, reconnect.

Used by the runner (board mode), by the pytest ``board`` fixture and by plain scripts
(``BoardLink.from_env()`` inside a run). Standard library + pyserial. Python >= 3.9.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Pattern, Union

import serial

from remote_scripts.uart import MAX_LINE, Frame, FrameDecoder, encode_frame

__all__ = [
    "BoardLink",
    "BoardLost",
    "ExpectTimeout",
    "SerialConfig",
    "open_port",
]

FLOW_CONTROLS = ("none", "xonxoff", "rtscts", "dsrdtr")
PARITIES = ("N", "E", "O", "M", "S")
BYTESIZES = (5, 6, 7, 8)
STOPBITS = (1, 1.5, 2)

_ENV_PREFIX = "TMS_SERIAL_"

try:  # POSIX: pyserial lets termios.error (not an OSError) out of flush() on a hung-up tty
    import termios

    PORT_ERRORS: tuple = (serial.SerialException, OSError, termios.error)
except ImportError:  # Windows
    PORT_ERRORS = (serial.SerialException, OSError)


class BoardLost(serial.SerialException):
    """The port could not be (re)opened within the reconnect window."""


class ExpectTimeout(AssertionError):
    """``expect`` saw no matching frame in time (a test failure, not a board error)."""


class SerialConfig:
    """How to open the board's port. Passed to child processes through ``TMS_SERIAL_*``."""

    def __init__(
        self,
        url: str,
        baudrate: int = 115200,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        flow: str = "none",
        exclusive: bool = True,
        read_timeout: float = 0.02,
        write_timeout: float = 2.0,
        reconnect_window: float = 10.0,
        reconnect_interval: float = 0.2,
        chunk_size: int = 4096,
        max_line: int = MAX_LINE,
    ) -> None:
        if bytesize not in BYTESIZES:
            raise ValueError("bytesize must be one of %s" % (BYTESIZES,))
        if parity not in PARITIES:
            raise ValueError("parity must be one of %s" % (PARITIES,))
        if stopbits not in STOPBITS:
            raise ValueError("stopbits must be one of %s" % (STOPBITS,))
        if flow not in FLOW_CONTROLS:
            raise ValueError("flow must be one of %s" % (FLOW_CONTROLS,))
        if baudrate <= 0:
            raise ValueError("baudrate must be positive")
        self.url = url
        self.baudrate = int(baudrate)
        self.bytesize = int(bytesize)
        self.parity = parity
        self.stopbits = stopbits
        self.flow = flow
        self.exclusive = exclusive
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.reconnect_window = reconnect_window
        self.reconnect_interval = reconnect_interval
        self.chunk_size = chunk_size
        self.max_line = max_line

    _ENV_FIELDS = (
        ("url", str),
        ("baudrate", int),
        ("bytesize", int),
        ("parity", str),
        ("stopbits", float),
        ("flow", str),
        ("exclusive", lambda v: v == "1"),
        ("read_timeout", float),
        ("write_timeout", float),
        ("reconnect_window", float),
        ("reconnect_interval", float),
        ("chunk_size", int),
        ("max_line", int),
    )

    def to_env(self) -> Dict[str, str]:
        env = {}
        for name, _ in self._ENV_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool):
                value = "1" if value else "0"
            env[_ENV_PREFIX + name.upper()] = str(value)
        return env

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "SerialConfig":
        env = os.environ if environ is None else environ
        if not env.get(_ENV_PREFIX + "URL"):
            raise RuntimeError("no serial port configured (%sURL is not set)" % _ENV_PREFIX)
        kwargs: Dict[str, Any] = {}
        for name, conv in cls._ENV_FIELDS:
            raw = env.get(_ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                kwargs[name] = conv(raw)
        if "stopbits" in kwargs and kwargs["stopbits"] in (1.0, 2.0):
            kwargs["stopbits"] = int(kwargs["stopbits"])
        return cls(**kwargs)

    def describe(self) -> Dict[str, Any]:
        return {
            "url": self.url,
            "baudrate": self.baudrate,
            "bytesize": self.bytesize,
            "parity": self.parity,
            "stopbits": self.stopbits,
            "flow": self.flow,
            "exclusive": self.exclusive,
        }


def open_port(config: SerialConfig) -> serial.SerialBase:
    """Open the port described by ``config`` (exclusive where the platform supports it)."""
    port = serial.serial_for_url(
        config.url,
        do_not_open=True,
        baudrate=config.baudrate,
        bytesize=config.bytesize,
        parity=config.parity,
        stopbits=config.stopbits,
        xonxoff=config.flow == "xonxoff",
        rtscts=config.flow == "rtscts",
        dsrdtr=config.flow == "dsrdtr",
        timeout=config.read_timeout,
        write_timeout=config.write_timeout,
    )
    if config.exclusive:
        # Some URL handlers (loop://, socket://) have no notion of exclusive access.
        with contextlib.suppress(ValueError, AttributeError, NotImplementedError):
            port.exclusive = True
    port.open()
    return port


FramePattern = Union[str, Pattern[str], Callable[[Frame], bool]]


def _matcher(pattern: FramePattern) -> Callable[[Frame], bool]:
    if callable(pattern) and not isinstance(pattern, (str, re.Pattern)):
        return pattern
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    return lambda frame: regex.search(frame.text) is not None


class BoardLink:
    """Frames to and from a board over one serial port.

    * ``send(type, *fields)`` encodes and writes one frame.
    * ``poll(timeout)`` reads chunks until ``timeout`` and returns the frames decoded.
    * ``read_frames(timeout)`` returns frames held back plus what arrives within ``timeout``.
    * ``expect(pattern, timeout)`` waits for a frame whose wire text (``TYPE,field,...``
      without CRC, fields escaped) matches a regular expression, or for which a callable is
      true; frames before the match are consumed. Raises ExpectTimeout.

    On a read or write error the port is closed and reopened every ``reconnect_interval``
    until ``reconnect_window`` has passed (then BoardLost). ``on_status(state, info)`` hears
    ``"connected"``, ``"disconnected"``, ``"reconnected"`` (with ``gap_s``) and ``"lost"``;
    ``on_traffic(direction, data)`` hears every byte read (``"rx"``) and written (``"tx"``).
    """

    def __init__(
        self,
        config: SerialConfig,
        on_status: Optional[Callable[[str, Dict[str, Any]], None]] = None,
        on_traffic: Optional[Callable[[str, bytes], None]] = None,
        stop_event: Optional[threading.Event] = None,
        backlog: int = 10000,
    ) -> None:
        self.config = config
        self.on_status = on_status
        self.on_traffic = on_traffic
        self.stop_event = stop_event
        self.decoder = FrameDecoder(max_line=config.max_line)
        self._port: Optional[serial.SerialBase] = None
        self._backlog: Deque[Frame] = deque(maxlen=backlog)
        self._recent: Deque[Frame] = deque(maxlen=20)
        self._write_lock = threading.Lock()
        self.reconnects = 0
        self.disconnected_s = 0.0
        self.bytes_sent = 0
        self.last_rx = 0.0

    @classmethod
    def from_env(cls, **kwargs: Any) -> "BoardLink":
        """A link configured by the runner's environment, reporting through its channel."""
        from remote_scripts.events import ChildChannel, SerialTap

        channel = ChildChannel.from_env()
        if channel.active:
            tap = SerialTap(channel.emit)

            def on_status(state: str, info: Dict[str, Any]) -> None:
                channel.emit("board_status", dict(info, state=state, source="link"))
                if state == "lost":
                    channel.emit("error", {"kind": "board", "message": info.get("error", "")})

            kwargs.setdefault("on_status", on_status)
            kwargs.setdefault("on_traffic", tap.feed)
        return cls(SerialConfig.from_env(), **kwargs)

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> "BoardLink":
        """Open the port, retrying within the reconnect window (a board may be enumerating)."""
        start = time.monotonic()
        self._port = self._open_within_window(start, None)
        self._status("connected", {"port": self.config.url})
        return self

    def close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(*PORT_ERRORS):
                port.close()

    def __enter__(self) -> "BoardLink":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def stats(self) -> Dict[str, Any]:
        result = self.decoder.stats.as_dict()
        result.update(
            connected=self._port is not None,
            reconnects=self.reconnects,
            disconnected_s=round(self.disconnected_s, 3),
            bytes_sent=self.bytes_sent,
        )
        return result

    # --------------------------------------------------------------------- output

    def send(self, msg_type: str, *fields: Any) -> bytes:
        data = encode_frame(msg_type, *fields, max_line=self.config.max_line)
        self.send_raw(data)
        return data

    def send_raw(self, data: bytes) -> None:
        with self._write_lock:
            for attempt in (1, 2):
                port = self._port or self._reconnect(serial.SerialException("port closed"))
                try:
                    port.write(data)
                    port.flush()
                    break
                except serial.SerialTimeoutException:
                    raise
                except PORT_ERRORS as exc:
                    if attempt == 2:
                        raise
                    self._reconnect(exc)
        self.bytes_sent += len(data)
        if self.on_traffic is not None:
            self.on_traffic("tx", data)

    # ---------------------------------------------------------------------- input

    def poll(self, timeout: float) -> List[Frame]:
        """Frames decoded from what arrives within ``timeout`` seconds.

        Returns as soon as a read yields at least one frame; returns [] at the deadline.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            frames = self._read_chunk()
            if frames:
                return frames
            if time.monotonic() >= deadline or self._stopped():
                return []

    def read_frames(self, timeout: float = 0.0, max_frames: Optional[int] = None) -> List[Frame]:
        """Frames held back, then what arrives until ``timeout`` (or ``max_frames``)."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            limit_reached = max_frames is not None and len(self._backlog) >= max_frames
            if limit_reached or time.monotonic() >= deadline or self._stopped():
                break
            self._backlog.extend(self._read_chunk())
        frames = list(self._backlog) if max_frames is None else list(self._backlog)[:max_frames]
        for _ in range(len(frames)):
            self._backlog.popleft()
        return frames

    def expect(self, pattern: FramePattern, timeout: float = 5.0) -> Frame:
        matches = _matcher(pattern)
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            while self._backlog:
                frame = self._backlog.popleft()
                self._recent.append(frame)
                if matches(frame):
                    return frame
            if time.monotonic() >= deadline or self._stopped():
                seen = "; ".join(f.text for f in self._recent) or "nothing"
                raise ExpectTimeout(
                    "no frame matching %r within %.3gs (last frames: %s)"
                    % (getattr(pattern, "pattern", pattern), timeout, seen[-2000:])
                )
            self._backlog.extend(self._read_chunk())

    def request(self, msg_type: str, *fields: Any, expect: FramePattern, timeout: float = 5.0):
        """``send`` then ``expect`` (frames held back are dropped first)."""
        self.drain()
        self.send(msg_type, *fields)
        return self.expect(expect, timeout)

    def drain(self) -> int:
        """Forget frames held back; returns how many."""
        count = len(self._backlog)
        self._backlog.clear()
        return count

    # ------------------------------------------------------------------ internals

    def _stopped(self) -> bool:
        return self.stop_event is not None and self.stop_event.is_set()

    def _read_chunk(self) -> List[Frame]:
        port = self._port or self._reconnect(serial.SerialException("port closed"))
        try:
            # At most chunk_size bytes, returning after read_timeout with what has arrived.
            data = port.read(self.config.chunk_size)
        except PORT_ERRORS as exc:
            self._reconnect(exc)
            return []
        if not data:
            return []
        self.last_rx = time.monotonic()
        if self.on_traffic is not None:
            self.on_traffic("rx", data)
        return self.decoder.feed(data)

    def _reconnect(self, exc: BaseException) -> serial.SerialBase:
        self.close()
        self.decoder.reset()
        start = time.monotonic()
        self._status("disconnected", {"error": str(exc)})
        port = self._open_within_window(start, exc)
        gap = time.monotonic() - start
        self._port = port
        self.reconnects += 1
        self.disconnected_s += gap
        self._status("reconnected", {"gap_s": round(gap, 3), "port": self.config.url})
        return port

    def _open_within_window(self, start: float, cause: Optional[BaseException]):
        deadline = start + self.config.reconnect_window
        last: BaseException = cause or serial.SerialException("not opened")
        while True:
            if self._stopped():
                raise BoardLost("stopped while waiting for the port: %s" % last)
            try:
                return open_port(self.config)
            except (*PORT_ERRORS, ValueError) as exc:
                last = exc
            if time.monotonic() >= deadline:
                message = "port %s not available within %.3gs: %s" % (
                    self.config.url,
                    self.config.reconnect_window,
                    last,
                )
                self._status("lost", {"error": message})
                raise BoardLost(message)
            time.sleep(self.config.reconnect_interval)

    def _status(self, state: str, info: Dict[str, Any]) -> None:
        if self.on_status is not None:
            self.on_status(state, info)
