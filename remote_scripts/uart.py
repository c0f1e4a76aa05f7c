"""The UART frame codec shared by the runner, the board simulator and the server.

A frame is one line::

    TYPE,field,field,...,CRC\\r\\n

``CRC`` is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor) over
every byte before the last comma, written as 4 upper-case hex digits. Fields are UTF-8 text in
which backslash, comma, CR, LF, TAB and the other control characters are escaped, so the only
raw commas on a line are separators and a line never contains a raw CR or LF. The full
specification is docs/UART_PROTOCOL.md.

Standard library only. Python >= 3.9.
"""

from __future__ import annotations

import binascii
import contextlib
import re
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

__all__ = [
    "BOARD_TO_HOST",
    "HOST_TO_BOARD",
    "MAX_LINE",
    "SPECS",
    "DecoderStats",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "MessageSpec",
    "crc16",
    "crc16_reference",
    "decode_line",
    "encode_frame",
    "escape_field",
    "unescape_field",
]

#: Longest accepted line in bytes, without the line terminator.
MAX_LINE = 1024

BOARD_TO_HOST = "board"
HOST_TO_BOARD = "host"

# Error kinds counted by the decoder.
ERR_BAD_CRC = "bad_crc"
ERR_UNKNOWN_TYPE = "unknown_type"
ERR_MISSING_FIELD = "missing_field"
ERR_TOO_LONG = "too_long"
ERR_MALFORMED = "malformed"
ERR_NOISE = "noise"
ERROR_KINDS = (
    ERR_BAD_CRC,
    ERR_UNKNOWN_TYPE,
    ERR_MISSING_FIELD,
    ERR_TOO_LONG,
    ERR_MALFORMED,
    ERR_NOISE,
)

_TYPE_RE = re.compile(r"[A-Z][A-Z0-9_]{0,31}\Z")
_HEX4 = frozenset(b"0123456789ABCDEF")


class MessageSpec(NamedTuple):
    """Field layout of one message type."""

    type: str
    direction: str
    required: Tuple[str, ...]
    optional: Tuple[str, ...] = ()
    variadic: Optional[str] = None

    @property
    def names(self) -> Tuple[str, ...]:
        return self.required + self.optional


def _spec(
    type_: str,
    direction: str,
    required: Iterable[str],
    optional: Iterable[str] = (),
    variadic: Optional[str] = None,
) -> MessageSpec:
    return MessageSpec(type_, direction, tuple(required), tuple(optional), variadic)


_SPEC_LIST = [
    # board -> host
    _spec("HEARTBEAT", BOARD_TO_HOST, ("board_id", "ts", "status", "cpu", "temp")),
    _spec("TEST_START", BOARD_TO_HOST, ("board_id", "testrun_id", "ts"), ("test_name",)),
    _spec("TEST_LOG", BOARD_TO_HOST, ("board_id", "testrun_id", "level", "message")),
    _spec(
        "ASSERTION",
        BOARD_TO_HOST,
        ("board_id", "testrun_id", "result", "name", "expected", "actual"),
        ("details",),
    ),
    _spec(
        "TEST_END",
        BOARD_TO_HOST,
        ("board_id", "testrun_id", "exit_code", "duration", "summary"),
        ("details",),
    ),
    _spec("STATUS", BOARD_TO_HOST, ("board_id", "state", "error_code", "message")),
    _spec("ACK", BOARD_TO_HOST, ("board_id", "command", "ref")),
    _spec("PONG", BOARD_TO_HOST, ("board_id", "token")),
    _spec("ECHO_REPLY", BOARD_TO_HOST, ("board_id", "text")),
    _spec("SENSOR", BOARD_TO_HOST, ("board_id", "sensor", "value", "unit")),
    _spec("DATA", BOARD_TO_HOST, ("board_id", "seq", "payload")),
    # host -> board
    _spec("EXEC_TEST", HOST_TO_BOARD, ("testrun_id", "test_name"), variadic="args"),
    _spec("ABORT", HOST_TO_BOARD, ("testrun_id",)),
    _spec("PING", HOST_TO_BOARD, ("token",)),
    _spec("ECHO", HOST_TO_BOARD, ("text",)),
    _spec("READ_SENSOR", HOST_TO_BOARD, ("sensor",)),
    _spec("SIM", HOST_TO_BOARD, ("command",), variadic="args"),
]

#: Every message type this codec knows, by name.
SPECS: Dict[str, MessageSpec] = {s.type: s for s in _SPEC_LIST}


class FrameError(ValueError):
    """A line that is not a valid frame. ``kind`` is one of ERROR_KINDS."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# --------------------------------------------------------------------------- CRC


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (C implementation from binascii)."""
    return binascii.crc_hqx(data, crc)


def crc16_reference(data: bytes, crc: int = 0xFFFF) -> int:
    """Bit-by-bit CRC-16/CCITT-FALSE, the definition ``crc16`` is checked against.

    Boards implement this (or its table-driven form) in C.
    """
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


# ---------------------------------------------------------------------- escaping

_SHORT_ESCAPES = {"\\": "\\", ",": "c", "\n": "n", "\r": "r", "\t": "t"}
_ESCAPE_TABLE: Dict[int, str] = {}
for _code in [*list(range(32)), 127]:
    _ESCAPE_TABLE[_code] = "\\x%02X" % _code
for _char, _letter in _SHORT_ESCAPES.items():
    _ESCAPE_TABLE[ord(_char)] = "\\" + _letter
_UNESCAPE_SHORT = {letter: char for char, letter in _SHORT_ESCAPES.items()}
# \xHH is only valid for the control characters without a short form: one spelling each.
_UNESCAPE_HEX = {
    "%02X" % code: chr(code) for code in [*list(range(32)), 127] if chr(code) not in _SHORT_ESCAPES
}
_NEEDS_ESCAPE = re.compile(r"[\x00-\x1f\x7f\\,]")


def escape_field(value: Any) -> str:
    """Field text as written on the line: backslash, comma and control characters escaped."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    if _NEEDS_ESCAPE.search(text) is None:
        return text
    return text.translate(_ESCAPE_TABLE)


def unescape_field(text: str) -> str:
    """Inverse of escape_field. Raises FrameError on an invalid or non-canonical escape."""
    if "\\" not in text:
        if _NEEDS_ESCAPE.search(text) is not None:
            raise FrameError(ERR_MALFORMED, "raw control character in field")
        return text
    out = []
    i = 0
    n = len(text)
    while i < n:
        j = text.find("\\", i)
        if j < 0:
            chunk = text[i:]
            i = n
        else:
            chunk = text[i:j]
        if _NEEDS_ESCAPE.search(chunk) is not None:
            raise FrameError(ERR_MALFORMED, "raw control character in field")
        out.append(chunk)
        if j < 0:
            break
        if j + 1 >= n:
            raise FrameError(ERR_MALFORMED, "dangling backslash")
        letter = text[j + 1]
        if letter == "x":
            code = text[j + 2 : j + 4]
            char = _UNESCAPE_HEX.get(code)
            if char is None:
                raise FrameError(ERR_MALFORMED, "invalid \\x escape %r" % text[j : j + 4])
            out.append(char)
            i = j + 4
        else:
            char = _UNESCAPE_SHORT.get(letter)
            if char is None:
                raise FrameError(ERR_MALFORMED, "invalid escape \\%s" % letter)
            out.append(char)
            i = j + 2
    return "".join(out)


# ------------------------------------------------------------------------ frames


class Frame(NamedTuple):
    """One decoded frame: its type and its unescaped fields, in order."""

    type: str
    fields: Tuple[str, ...]

    @property
    def spec(self) -> Optional[MessageSpec]:
        return SPECS.get(self.type)

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """A field by its name in the message spec (``frame.get("board_id")``)."""
        spec = SPECS.get(self.type)
        if spec is None:
            return default
        try:
            index = spec.names.index(name)
        except ValueError:
            return default
        return self.fields[index] if index < len(self.fields) else default

    def args(self) -> Tuple[str, ...]:
        """Fields after the named ones (the variadic part, e.g. EXEC_TEST args)."""
        spec = SPECS.get(self.type)
        if spec is None:
            return self.fields
        return self.fields[len(spec.names) :] if spec.variadic else ()

    def as_dict(self) -> Dict[str, Any]:
        """``{"type": ..., <field name>: value, ...}``; extra fields go in ``"args"``."""
        result: Dict[str, Any] = {"type": self.type}
        spec = SPECS.get(self.type)
        names = spec.names if spec is not None else ()
        for name, value in zip(names, self.fields):
            result[name] = value
        rest = self.fields[len(names) :]
        if rest:
            result["args"] = list(rest)
        return result

    @property
    def text(self) -> str:
        """The line as on the wire, without ``,CRC`` and the line terminator."""
        return ",".join([self.type] + [escape_field(f) for f in self.fields])

    def encode(self) -> bytes:
        return encode_frame(self.type, *self.fields, check=False)


def encode_frame(
    msg_type: str, *fields: Any, check: bool = True, max_line: int = MAX_LINE
) -> bytes:
    """Encode one frame, ``\\r\\n`` included.

    ``fields`` are converted with ``str()`` (None becomes empty) and escaped. With ``check``
    the type must be known and the field count must fit its spec. Raises ValueError.
    """
    if not _TYPE_RE.match(msg_type):
        raise ValueError("invalid frame type %r" % (msg_type,))
    if check:
        spec = SPECS.get(msg_type)
        if spec is None:
            raise ValueError("unknown frame type %r" % (msg_type,))
        if len(fields) < len(spec.required):
            raise ValueError(
                "%s needs %d fields (%s), got %d"
                % (msg_type, len(spec.required), ", ".join(spec.required), len(fields))
            )
        if spec.variadic is None and len(fields) > len(spec.names):
            raise ValueError("%s takes at most %d fields" % (msg_type, len(spec.names)))
    body = ",".join([msg_type] + [escape_field(f) for f in fields]).encode("utf-8")
    line = b"%s,%04X" % (body, crc16(body))
    if len(line) > max_line:
        raise ValueError("frame is %d bytes, the limit is %d" % (len(line), max_line))
    return line + b"\r\n"


def decode_line(line: bytes, specs: Optional[Dict[str, MessageSpec]] = None) -> Frame:
    """Decode one line (without the line terminator). Raises FrameError."""
    if specs is None:
        specs = SPECS
    comma = line.rfind(b",")
    if comma <= 0:
        raise FrameError(ERR_MALFORMED, "no CRC field")
    crc_text = line[comma + 1 :]
    if len(crc_text) != 4 or not _HEX4.issuperset(crc_text):
        raise FrameError(ERR_MALFORMED, "CRC field is not 4 upper-case hex digits")
    body = line[:comma]
    if crc16(body) != int(crc_text, 16):
        raise FrameError(ERR_BAD_CRC, "CRC mismatch")
    parts = body.split(b",")
    try:
        msg_type = parts[0].decode("ascii")
    except UnicodeDecodeError:
        raise FrameError(ERR_UNKNOWN_TYPE, "type is not ASCII") from None
    spec = specs.get(msg_type)
    if spec is None:
        raise FrameError(ERR_UNKNOWN_TYPE, "unknown type %r" % msg_type[:40])
    raw_fields = parts[1:]
    if len(raw_fields) < len(spec.required):
        raise FrameError(
            ERR_MISSING_FIELD,
            "%s has %d of %d required fields" % (msg_type, len(raw_fields), len(spec.required)),
        )
    try:
        fields = tuple(unescape_field(f.decode("utf-8")) for f in raw_fields)
    except UnicodeDecodeError:
        raise FrameError(ERR_MALFORMED, "field is not UTF-8") from None
    return Frame(msg_type, fields)


class DecoderStats:
    """Counters of one decoder: frames accepted, bytes seen, errors by kind."""

    __slots__ = ("bytes", "errors", "frames", "lines")

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0
        self.lines = 0
        self.errors: Dict[str, int] = {kind: 0 for kind in ERROR_KINDS}

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> Dict[str, Any]:
        return {
            "frames": self.frames,
            "bytes": self.bytes,
            "lines": self.lines,
            "errors": dict(self.errors),
        }


class FrameDecoder:
    """Streaming decoder: feed it byte chunks of any size, get whole frames back.

    Lines end with LF (a CR before it is dropped). A line that is not a valid frame is
    counted in ``stats.errors`` under its kind and skipped; ``feed`` never raises on input.
    When a line fails, the decoder looks for a known ``TYPE,`` later in the line and accepts
    the rest if it is a valid frame (line noise in front of a frame costs the noise only).
    A line longer than ``max_line`` is dropped up to the next LF.

    ``on_error(kind, line)`` is called for each counted error (``line`` is the first 200
    bytes of the offending line); whatever it raises is ignored.
    """

    def __init__(
        self,
        max_line: int = MAX_LINE,
        specs: Optional[Dict[str, MessageSpec]] = None,
        on_error: Optional[Callable[[str, bytes], None]] = None,
    ) -> None:
        self.max_line = max_line
        self.specs = SPECS if specs is None else specs
        self.on_error = on_error
        self.stats = DecoderStats()
        self._buf = bytearray()
        self._discarding = False
        self._tokens = [t.encode("ascii") + b"," for t in self.specs]

    def reset(self) -> None:
        """Forget a partial line (after a reconnect, the rest of it is gone)."""
        self._buf.clear()
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes held waiting for the end of their line."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> List[Frame]:
        frames: List[Frame] = []
        if not chunk:
            return frames
        self.stats.bytes += len(chunk)
        buf = self._buf
        buf += chunk
        start = 0
        limit = self.max_line
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            end = nl
            if end > start and buf[end - 1] == 0x0D:
                end -= 1
            if self._discarding:
                self._discarding = False
            elif end - start > limit:
                self._error(ERR_TOO_LONG, bytes(buf[start : start + 200]))
            elif end > start:
                self.stats.lines += 1
                frame = self._decode(bytes(buf[start:end]))
                if frame is not None:
                    frames.append(frame)
            start = nl + 1
        if start:
            del buf[:start]
        # +1: a line of exactly max_line bytes may be waiting for the LF after its CR.
        if len(buf) > limit + 1:
            if not self._discarding:
                self._error(ERR_TOO_LONG, bytes(buf[:200]))
                self._discarding = True
            buf.clear()
        self.stats.frames += len(frames)
        return frames

    def _decode(self, line: bytes) -> Optional[Frame]:
        try:
            return decode_line(line, self.specs)
        except FrameError as exc:
            first_error = exc.kind
        # Resynchronise on a known type later in the line.
        candidates = []
        for token in self._tokens:
            pos = line.find(token, 1)
            while pos > 0:
                candidates.append(pos)
                pos = line.find(token, pos + 1)
        for pos in sorted(candidates):
            try:
                frame = decode_line(line[pos:], self.specs)
            except FrameError:
                continue
            self._error(ERR_NOISE, line[:pos][:200])
            return frame
        self._error(first_error, line[:200])
        return None

    def _error(self, kind: str, line: bytes) -> None:
        self.stats.errors[kind] += 1
        if self.on_error is not None:
            # A reporting hook must never break decoding.
            with contextlib.suppress(Exception):
                self.on_error(kind, line)
