"""Property tests for the bytes a run's events file holds, and for the UART codec's CRC.

The events file comes from a host this service does not control. ``RunExecutor._parse`` (via
``test_runner.event_lines``) must never raise, must keep exactly the events that the published
schema accepts and the database can store, must say why it refused the others, and must give the
same events however the stream is cut into reads.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from remote_scripts import uart
from remote_scripts.events import _dumps
from remote_scripts.uart import FrameDecoder, encode_frame
from test_runner.event_lines import SEQ_MAX, event_schema, parse_event, parse_event_lines
from test_runner.execution import RunExecutor

VALIDATOR = jsonschema.Draft202012Validator(event_schema())
TS = "2025-03-01T12:00:00.123Z"

# One valid event of each type, as the runner writes them (docs/RUNNER_EVENTS.md).
TEMPLATES: dict[str, dict[str, Any]] = {
    "run_start": {"mode": "board", "pid": 4242, "argv": ["runner.py"], "target": ["smoke"],
                  "serial": None, "resumed_from_seq": 0},
    "plan": {"tests": [{"id": "smoke", "name": "smoke"}]},
    "test_start": {"test": "smoke", "testrun_id": "7001"},
    "test_end": {"test": "smoke", "outcome": "passed", "duration_s": 0.5, "message": ""},
    "log": {"source": "board", "level": "INFO", "message": "boot ok", "stream": "log"},
    "serial": {"direction": "rx", "data": "HEARTBEAT,1,idle", "bytes": 16, "dropped_bytes": 0},
    "heartbeat": {"uptime_s": 1.5, "phase": "running", "test": None, "pid": 4242},
    "board_status": {"state": "connected", "source": "link"},
    "error": {"kind": "board", "message": "port lost"},
    "run_end": {"exit_code": 0, "reason": "passed", "duration_s": 2.0, "message": "",
                "summary": {"passed": 1, "failed": 0, "error": 0, "skipped": 0, "total": 1}},
}  # fmt: skip
KEYS = sorted({"seq", "ts", "type", "run_id"} | {k for t in TEMPLATES.values() for k in t})

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    # Strings the database cannot hold as they are: NUL, lone surrogates.
    | st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfff", "\ud83d\ude00"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ts_values = st.sampled_from(
    [TS, "2025-03-01T12:00:00Z", "2025-13-01T12:00:00Z", "2025-02-30T25:61:00.1Z",
     "2025-03-01 12:00:00Z", "yesterday", "", "2025-03-01T12:00:00.1234567Z"]
) | json_scalars  # fmt: skip


def valid_event(kind: str, seq: int, **extra: Any) -> dict[str, Any]:
    return {"seq": seq, "ts": TS, "type": kind, "run_id": "42", **TEMPLATES[kind], **extra}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    return []


def _numbers(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, list):
        return [n for item in value for n in _numbers(item)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    return []


def should_keep(event: Any) -> bool:
    """The specification, written independently of the parser: schema-valid (by the reference
    validator), and storable: seq a JSON integer within the column, ts a real instant, every
    number finite, no lone surrogate in any string."""
    if not isinstance(event, dict) or not VALIDATOR.is_valid(event):
        return False
    seq = event["seq"]
    if not isinstance(seq, int) or seq > SEQ_MAX:
        return False
    try:
        datetime.fromisoformat(event["ts"])
    except ValueError:
        return False
    if any(not math.isfinite(n) for n in _numbers(event)):
        return False
    return not any(re.search("[\ud800-\udfff]", s) for s in _strings(event))


def nul_spelled_out(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\\x00")
    if isinstance(value, list):
        return [nul_spelled_out(v) for v in value]
    if isinstance(value, dict):
        return {nul_spelled_out(k): nul_spelled_out(v) for k, v in value.items()}
    return value


def line_of(event: Any) -> bytes:
    # As the runner writes: ASCII JSON, one line. allow_nan lets NaN/Infinity reach the parser.
    return json.dumps(event, ensure_ascii=True, separators=(",", ":")).encode("ascii")


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(sorted(TEMPLATES)))
    event: Any = valid_event(kind, draw(st.integers(1, 10_000)))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["set", "delete", "ts", "seq", "replace"]))
        key = draw(st.sampled_from(KEYS) | st.text(max_size=6))
        if action == "set":
            event[key] = draw(json_values)
        elif action == "delete":
            event.pop(key, None)
        elif action == "ts":
            event["ts"] = draw(ts_values)
        elif action == "seq":
            event["seq"] = draw(
                st.sampled_from([0, -1, SEQ_MAX, SEQ_MAX + 1, 10**30, 1.0, 2.5, True, "7", None])
            )
        else:
            return draw(json_values)  # not an object at all, most of the time
    return event


# --- never crash ------------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash_the_parser(blob):
    events, rejected = parse_event_lines(blob)
    assert RunExecutor._parse(blob) == events
    lines = [line for line in blob.split(b"\n") if line.strip()]
    assert len(events) + len(rejected) == len(lines)  # every line kept or refused, never lost
    assert all(r.reason for r in rejected)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"\xff\xfe{}", "not UTF-8 (byte 0)"),
        (b'{"seq": 1, "ts": "' + TS.encode() + b'", "type": "log", "message": "caf\xe9"}',
         "not UTF-8"),
        (b'{"seq": 1, "ts"', "not JSON"),
        (b"[" * 100_000, "not JSON"),  # deeper than the interpreter's recursion limit
        (b"[1, 2, 3]", "not a JSON object but an array"),
        (b'"seq"', "not a JSON object but a string"),
        (b"12", "not a JSON object but a number"),
        (b'{"ts": "' + TS.encode() + b'", "type": "log"}', "seq is missing"),
        (b'{"seq": true, "ts": "' + TS.encode() + b'", "type": "log"}',
         "seq must be a whole number, not a boolean"),
        (b'{"seq": 1.0, "ts": "' + TS.encode() + b'", "type": "log"}', "seq must be a whole"),
        (b'{"seq": "3", "ts": "' + TS.encode() + b'", "type": "log"}', "seq must be a whole"),
        (b'{"seq": 0, "ts": "' + TS.encode() + b'", "type": "log"}', "seq must be at least 1"),
        (line_of(valid_event("log", 10**40)), f"larger than {SEQ_MAX}"),
        (b'{"seq": ' + b"9" * 5000 + b"}", "not JSON"),  # beyond int()'s digit limit
        (line_of(valid_event("log", 1, message=float("nan"))), "NaN is not valid JSON"),
        (line_of(valid_event("log", 1, message=float("-inf"))), "-Infinity is not valid JSON"),
        (line_of(valid_event("log", 1))[:-1] + b',"x":1e999}', "too large to store"),
        (line_of(valid_event("log", 1, message="\ud800")), "lone surrogate"),
        (line_of({**valid_event("log", 1), "type": "x"}), "type must be one of run_start"),
        (line_of({**valid_event("log", 1), "ts": "2025-13-01T12:00:00Z"}), "not a real date"),
        (line_of({**valid_event("log", 1), "ts": "now"}), "ts does not have the expected form"),
        (line_of({**valid_event("log", 1), "source": "kernel"}), "source must be one of"),
        (line_of({k: v for k, v in valid_event("log", 1).items() if k != "message"}),
         "message is missing"),
        (line_of(valid_event("log", 1, message="x" * 16385)), "longer than 16384"),
        (line_of(valid_event("plan", 1, tests=[{"name": "no id"}])), "tests[0].id is missing"),
        (line_of(valid_event("run_end", 1, exit_code=9)), "exit_code must be one of"),
    ],
)  # fmt: skip
def test_each_refusal_says_why(line, reason):
    events, rejected = parse_event_lines(line + b"\n")
    assert events == []
    assert len(rejected) == 1 and rejected[0].line == 1
    assert reason in rejected[0].reason
    assert rejected[0].excerpt == line[:120]
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_event(line)


def test_refusals_are_logged_with_the_reason(caplog):
    good = line_of(valid_event("log", 1))
    blob = b"\n".join([good, b"not json", b"[]", line_of(valid_event("log", 2))]) + b"\n"
    with caplog.at_level("WARNING", logger="test_runner.execution"):
        events = RunExecutor._parse(blob)
    assert [e["seq"] for e in events] == [1, 2]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "line 2" in messages[0] and "not JSON" in messages[0] and "not json" in messages[0]
    assert "line 3" in messages[1] and "not a JSON object but an array" in messages[1]


# --- the schema, and what the database can hold -------------------------------------------------


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_events())
def test_keeps_exactly_what_the_schema_accepts_and_the_database_can_hold(event):
    line = line_of(event)
    # The reference reads the same JSON text (a surrogate pair written as two escapes is one
    # character once read).
    decoded = json.loads(line)
    events, rejected = parse_event_lines(line + b"\n")
    if should_keep(decoded):
        assert rejected == [] and events == [nul_spelled_out(decoded)]
    else:
        assert events == [] and len(rejected) == 1 and rejected[0].reason


@settings(max_examples=200)
@given(
    st.sampled_from(sorted(TEMPLATES)),
    st.integers(1, SEQ_MAX),
    st.text(max_size=200),
    st.dictionaries(
        st.text(max_size=10).filter(lambda k: k not in KEYS),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                        allow_infinity=False) | st.text(max_size=30),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                       inner, max_size=3),
            max_leaves=8,
        ),
        max_size=4,
    ),
)  # fmt: skip
def test_valid_events_round_trip(kind, seq, text, extra):
    """What the runner writes (its own serialiser) comes back unchanged, unknown fields too."""
    text = text.replace("\x00", "")
    assume(not re.search("[\ud800-\udfff]", text))
    assume(not any(re.search("[\ud800-\udfff\x00]", s) for s in _strings(extra)))
    field = {"log": "message", "error": "message", "serial": "data", "test_end": "message"}
    event = valid_event(kind, seq, **extra)
    if kind in field:
        event[field[kind]] = text
    assume(VALIDATOR.is_valid(event))
    assert RunExecutor._parse(_dumps(event)) == [event]


def test_nul_characters_are_kept_spelled_out_not_dropped():
    event = valid_event("serial", 5, data="boot\x00\x00ok")
    (parsed,) = RunExecutor._parse(line_of(event) + b"\n")
    assert parsed["data"] == "boot\\x00\\x00ok"
    assert {k: v for k, v in parsed.items() if k != "data"} == {
        k: v for k, v in event.items() if k != "data"
    }


# --- chunked reads ------------------------------------------------------------------------------

stream_lines = st.lists(
    st.one_of(
        st.builds(lambda s, k: line_of(valid_event(k, s)), st.integers(1, 1000),
                  st.sampled_from(sorted(TEMPLATES))),
        st.builds(line_of, mutated_events()),
        st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
        st.just(b""),
    ),
    max_size=25,
)  # fmt: skip


def tail(stream: bytes, cuts: list[int]) -> tuple[list[dict[str, Any]], list[int]]:
    """Reads ``stream`` in pieces as the executor tails the events file: keep the partial last
    line for the next read, parse complete lines, record the offset after the last one."""
    events: list[dict[str, Any]] = []
    offsets: list[int] = []
    pending, offset, last = b"", 0, 0
    for cut in [*cuts, len(stream)]:
        data = stream[last:cut]
        last = cut
        if not data:
            continue
        offset += len(data)
        complete, _, pending = (pending + data).rpartition(b"\n")
        if complete:
            events += RunExecutor._parse(complete)
            offsets.append(offset - len(pending))
    return events, offsets


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(stream_lines, st.booleans(), st.data())
def test_reading_in_random_pieces_gives_the_same_events(lines, partial_end, data):
    stream = b"".join(line + b"\n" for line in lines)
    if partial_end:
        stream += b'{"seq": 99999, "ts": "'  # a line the runner is still writing
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    at_once = RunExecutor._parse(stream.rpartition(b"\n")[0])
    events, offsets = tail(stream, cuts)
    assert events == at_once
    # Each stored offset is just after a complete line, and after the last one only blank
    # lines or the partial line remain: resuming from it re-reads nothing and skips nothing.
    assert all(stream[o - 1 : o] == b"\n" for o in offsets)
    assert offsets == sorted(offsets)
    rest = stream[offsets[-1] if offsets else 0 :]
    assert not rest.rpartition(b"\n")[0].strip()
    assert RunExecutor._parse(rest.rpartition(b"\n")[0]) == []


# --- UART: what tests/unit/remote_scripts/test_uart.py does not cover ---------------------------


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["PING", "ECHO", "READ_SENSOR"]), st.text(max_size=40))
def test_every_single_and_double_bit_flip_of_a_frame_is_rejected(kind, text):
    """CRC-16/CCITT has Hamming distance 4 up to 32,767 bits: every error of up to three bits in
    body + CRC is detected. One flipped bit of a hex CRC digit changes at most two bits of the
    CRC's value, so any one or two flips on the wire are caught and the line is skipped."""
    line = encode_frame(kind, text)
    body_bits = (len(line) - 2) * 8  # the CRC covers all before the line ending
    original = FrameDecoder().feed(line)
    assert len(original) == 1
    for bit in range(body_bits):
        flipped = bytearray(line)
        flipped[bit // 8] ^= 1 << (bit % 8)
        decoder = FrameDecoder()
        frames = decoder.feed(bytes(flipped))
        assert frames == [], f"bit {bit} flipped and accepted: {bytes(flipped)!r}"
    step = max(1, body_bits // 24)  # pairs: bounded, spread over the whole frame
    for first in range(0, body_bits, step):
        for second in range(first + 1, body_bits, step):
            flipped = bytearray(line)
            flipped[first // 8] ^= 1 << (first % 8)
            flipped[second // 8] ^= 1 << (second % 8)
            assert FrameDecoder().feed(bytes(flipped)) == []


@settings(max_examples=300)
@given(
    st.lists(
        st.binary(max_size=40) | st.sampled_from([b"\r\n", b"\n", b",", b"PING,", b"ECHO,a,"]),
        max_size=30,
    ),
    st.integers(1, 32),
)
def test_random_bytes_never_yield_a_frame_whose_crc_does_not_match(pieces, chunk):
    noise = b"".join(pieces)
    decoder = FrameDecoder()
    frames = []
    for i in range(0, len(noise), chunk):
        frames += decoder.feed(noise[i : i + chunk])
    for frame in frames:
        wire = frame.encode()
        body, _, crc = wire[:-2].rpartition(b",")
        assert int(crc, 16) == uart.crc16(body)


# --- what is kept is storable ---------------------------------------------------------------


@pytest.mark.django_db
def test_what_the_parser_keeps_the_database_stores():
    """On PostgreSQL a NUL character in jsonb is refused ("unsupported Unicode escape
    sequence"), and a board printing NUL bytes is ordinary: such events must reach the
    database, with every other kept line, in one batch."""
    from test_runner.models import RunEvent
    from test_runner.services.results import events_store
    from tests.factories import make_finished_run, make_machine, make_ready_venvs, make_user

    machine = make_machine()
    make_ready_venvs(machine, 1)
    run = make_finished_run(make_user(admin=True), machine)
    base = run.last_seq
    lines = [
        line_of(valid_event("serial", base + 1, data="\x00\x00boot\x00")),
        line_of(valid_event("log", base + 2, message="nul \x00 in a log", extra={"k\x00": 1})),
        line_of(valid_event("log", base + 3, message="caf\u00e9 \U0001f600")),
        line_of(valid_event("log", base + 4, message=float("nan"))),  # refused
        line_of(valid_event("log", 10**12)),  # refused: beyond the column
        line_of(valid_event("log", base + 5, message="x", big=10**30, small=-(10**30))),
    ]
    events = RunExecutor._parse(b"\n".join(lines) + b"\n")
    assert [e["seq"] for e in events] == [base + n for n in (1, 2, 3, 5)]
    assert events_store(run=run, events=events) == 4
    stored = {e.seq: e.data for e in RunEvent.objects.filter(run=run, seq__gt=base)}
    assert stored[base + 1]["data"] == "\\x00\\x00boot\\x00"
    assert stored[base + 2]["extra"] == {"k\\x00": 1}
    assert stored[base + 3]["message"] == "caf\u00e9 \U0001f600"
    assert stored[base + 5]["big"] == 10**30
