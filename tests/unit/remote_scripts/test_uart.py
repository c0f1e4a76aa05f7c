"""The UART frame codec: CRC, escaping, framing, the streaming decoder."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remote_scripts import uart
from remote_scripts.uart import Frame, FrameDecoder, FrameError, decode_line, encode_frame


def test_crc_check_value():
    assert uart.crc16(b"123456789") == 0x29B1
    assert uart.crc16_reference(b"123456789") == 0x29B1
    assert uart.crc16(b"") == 0xFFFF


@given(st.binary(max_size=300))
def test_fast_crc_matches_the_definition(data):
    assert uart.crc16(data) == uart.crc16_reference(data)


def test_frame_layout_on_the_wire():
    line = encode_frame("HEARTBEAT", "B1", 1200, "IDLE", "3.5", "36.6")
    body = b"HEARTBEAT,B1,1200,IDLE,3.5,36.6"
    assert line == body + b",%04X\r\n" % uart.crc16(body)
    assert line[-6:-2].decode() == line[-6:-2].decode().upper()


def test_escape_spelling():
    assert uart.escape_field("a,b\\c\r\n\t\x01\x7f") == "a\\cb\\\\c\\r\\n\\t\\x01\\x7F"
    assert uart.escape_field("plain text") == "plain text"
    assert uart.escape_field(None) == ""
    assert uart.escape_field(3) == "3"


@given(st.text(max_size=200))
def test_escape_round_trip(text):
    escaped = uart.escape_field(text)
    assert "," not in escaped and "\n" not in escaped and "\r" not in escaped
    assert uart.unescape_field(escaped) == text


@pytest.mark.parametrize("bad", ["\\", "a\\", "\\q", "\\x41", "\\x0a", "\\x0A", "raw\x01"])
def test_invalid_or_non_canonical_escapes_are_rejected(bad):
    with pytest.raises(FrameError) as info:
        uart.unescape_field(bad)
    assert info.value.kind == "malformed"


fields_st = st.lists(st.text(max_size=40), min_size=2, max_size=6)


@given(fields_st)
def test_encode_decode_round_trip(fields):
    line = encode_frame("TEST_LOG", *fields[:4], *[""] * (4 - len(fields[:4])), check=True)
    frame = decode_line(line[:-2])
    assert frame.type == "TEST_LOG"
    assert frame.fields == tuple((fields[:4] + [""] * 4)[:4])
    assert frame.encode() == line


def test_named_fields_and_variadic_args():
    frame = decode_line(encode_frame("EXEC_TEST", "17", "flood", "count=5", "x=a,b")[:-2])
    assert frame.get("testrun_id") == "17"
    assert frame.get("test_name") == "flood"
    assert frame.args() == ("count=5", "x=a,b")
    assert frame.as_dict() == {
        "type": "EXEC_TEST",
        "testrun_id": "17",
        "test_name": "flood",
        "args": ["count=5", "x=a,b"],
    }
    end = decode_line(encode_frame("TEST_END", "B", "1", "0", "12", "PASSED")[:-2])
    assert end.get("details") is None and end.get("nonsense", "d") == "d"


def test_encode_refuses_what_a_decoder_would_drop():
    with pytest.raises(ValueError, match="unknown frame type"):
        encode_frame("NOPE", "x")
    with pytest.raises(ValueError, match="invalid frame type"):
        encode_frame("bad type", check=False)
    with pytest.raises(ValueError, match="needs 5 fields"):
        encode_frame("HEARTBEAT", "B1")
    with pytest.raises(ValueError, match="at most"):
        encode_frame("PING", "a", "b")
    with pytest.raises(ValueError, match="limit"):
        encode_frame("ECHO", "x" * 2000)
    assert encode_frame("CUSTOM_TYPE", "x", check=False).startswith(b"CUSTOM_TYPE,x,")


def _with_crc(body: bytes) -> bytes:
    return body + b",%04X\r\n" % uart.crc16(body)


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"PING,abc,0000\r\n", "bad_crc"),
        (_with_crc(b"WHATEVER,1,2"), "unknown_type"),
        (_with_crc(b"HEARTBEAT,B1,5"), "missing_field"),
        (b"PING,abc,29b1\r\n", "malformed"),  # lower-case CRC
        (b"PING,abc\r\n", "malformed"),
        (b"no commas at all\r\n", "malformed"),
        (_with_crc(b"ECHO,a\\qb"), "malformed"),
        (_with_crc(b"ECHO,\xff\xfe"), "malformed"),
        (_with_crc(b"ECHO,tab\there"), "malformed"),
        (b"P" * 2000 + b"\r\n", "too_long"),
    ],
)
def test_decoder_counts_and_skips_bad_lines(line, kind):
    decoder = FrameDecoder()
    good = encode_frame("PING", "after")
    frames = decoder.feed(line + good)
    assert frames == [Frame("PING", ("after",))]
    assert decoder.stats.errors[kind] == 1
    assert decoder.stats.error_total == 1


def test_over_long_line_spread_over_chunks_is_dropped_once():
    decoder = FrameDecoder(max_line=100)
    for _ in range(10):
        assert decoder.feed(b"x" * 64) == []
    assert decoder.pending <= 101
    frames = decoder.feed(b"tail\r\n" + encode_frame("PING", "ok"))
    assert frames == [Frame("PING", ("ok",))]
    assert decoder.stats.errors["too_long"] == 1


def test_noise_in_front_of_a_frame_costs_only_the_noise():
    decoder = FrameDecoder()
    frames = decoder.feed(b"\x00\xffgarbage,12" + encode_frame("PING", "x") + b"\r\n\r\n")
    assert frames == [Frame("PING", ("x",))]
    assert decoder.stats.errors == {**dict.fromkeys(uart.ERROR_KINDS, 0), "noise": 1}


def test_frame_of_exactly_max_line_is_accepted():
    decoder = FrameDecoder(max_line=64)
    body = b"ECHO," + b"a" * (64 - 10)
    line = _with_crc(body)
    assert len(line) - 2 == 64
    for i in range(len(line)):  # byte-by-byte arrival does not trip the length check
        frames = decoder.feed(line[i : i + 1])
    assert frames == [Frame("ECHO", ("a" * 54,))]


def test_on_error_hook_sees_errors_and_cannot_break_decoding():
    seen = []

    def hook(kind, line):
        seen.append((kind, line))
        raise RuntimeError("reporting failed")

    decoder = FrameDecoder(on_error=hook)
    frames = decoder.feed(b"PING,a,0000\n" + encode_frame("PING", "b"))
    assert frames == [Frame("PING", ("b",))]
    assert seen == [("bad_crc", b"PING,a,0000")]


frames_st = st.lists(
    st.tuples(st.sampled_from(["PING", "ECHO", "READ_SENSOR"]), st.text(max_size=30)),
    max_size=20,
)


@given(frames_st, st.data())
def test_chunking_does_not_change_the_result(items, data):
    stream = b"".join(encode_frame(t, f) for t, f in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    got = []
    last = 0
    for cut in [*cuts, len(stream)]:
        got += decoder.feed(stream[last:cut])
        last = cut
    assert got == [Frame(t, (f,)) for t, f in items]
    assert decoder.stats.error_total == 0


@settings(max_examples=300)
@given(st.binary(max_size=600), st.integers(1, 64))
def test_decoder_never_raises_and_never_accepts_a_bad_crc(noise, chunk):
    decoder = FrameDecoder(max_line=200)
    frames = []
    for i in range(0, len(noise), chunk):
        frames += decoder.feed(noise[i : i + chunk])
    for frame in frames:
        line = frame.encode()  # canonical: an accepted frame is exactly on the wire
        assert line[:-2] in noise
        body, crc = line[:-2].rsplit(b",", 1)
        assert int(crc, 16) == uart.crc16(body)


@given(st.binary(max_size=200), frames_st)
def test_random_bytes_between_frames_lose_no_frame(noise, items):
    noise = noise.replace(b"\n", b"").replace(b",", b"")
    stream = b"".join(noise[:8] + encode_frame(t, f) for t, f in items)
    frames = FrameDecoder().feed(stream)
    assert frames == [Frame(t, (f,)) for t, f in items]


@given(st.binary(min_size=1, max_size=100))
def test_corrupted_byte_is_never_accepted(payload):
    line = encode_frame("ECHO", payload.hex())
    for i in range(len(line) - 2):
        corrupted = bytearray(line)
        corrupted[i] ^= 0x01
        frames = FrameDecoder().feed(bytes(corrupted))
        assert frames == [] or frames[0].encode() == line  # never a wrong frame
