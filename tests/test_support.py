"""The test helpers' own contracts (tests/support/), checked without a server or a socket."""

from __future__ import annotations

import struct
import threading
import time
import zlib

import pytest

from tests.support.h2 import DATA, END_STREAM, GOAWAY, PROTOCOL_ERROR, RST_STREAM, Frame, frame, goaway, rst, split_frame
from tests.support.http1 import chunked, dechunk, parse_response, request
from tests.support.probe import Probe
from tests.support.waiting import wait_until
from tests.support.ws import BINARY, TEXT, apply_mask, close_payload, deflate, frame as ws_frame, inflate


# ---------------------------------------------------------------------- wait_until
def test_wait_until_returns_the_first_truthy_value() -> None:
    values = iter([0, None, "", "ready"])
    assert wait_until(lambda: next(values), 1) == "ready"


def test_wait_until_names_what_it_awaited_when_it_runs_out() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"^the door open not reached within 0.05 s$"):
        wait_until(lambda: False, 0.05, "the door open")
    assert time.monotonic() - started < 1


def test_wait_until_describes_lazily_and_calls_between_polls() -> None:
    described, pumped = [], []

    def what() -> str:
        described.append(1)
        return "state 42"

    with pytest.raises(AssertionError, match="state 42 not reached"):
        wait_until(lambda: False, 0.05, what, between=lambda: pumped.append(time.sleep(0.005)))
    assert described == [1] and pumped  # described once, at the end; pumped instead of sleeping
    assert wait_until(lambda: True, 1, what) is True and described == [1]


# ---------------------------------------------------------------------- Probe
def test_probe_keeps_the_first_time_and_value_and_counts_every_mark() -> None:
    probe = Probe()
    probe.mark("sent", 1)
    first = probe.times["sent"]
    probe.mark("sent", 2)
    assert (probe.value("sent"), probe.count("sent"), probe.times["sent"]) == (1, 2, first)
    assert "sent" in probe and "other" not in probe
    assert probe.since("sent", first - 0.5) == pytest.approx(500)


def test_probe_wait_is_woken_by_a_mark_from_another_thread() -> None:
    probe = Probe()
    threading.Timer(0.05, probe.mark, ("done", "value")).start()
    assert probe.wait_value("done", 2) == "value"
    probe.wait_count("done", 1, 0.1)


def test_probe_wait_raises_and_seen_within_does_not() -> None:
    probe = Probe()
    probe.mark("started")
    assert probe.seen_within("finished", 0.02) is False
    with pytest.raises(AssertionError, match=r"never reported 'finished' within 0.02 s \(saw \['started'\]\)"):
        probe.wait("finished", 0.02)
    with pytest.raises(AssertionError, match="reported 1 times, expected 2"):
        probe.wait_count("started", 2, 0.02)


# ---------------------------------------------------------------------- HTTP/2 frames
def test_h2_frames_split_and_parse_as_sent() -> None:
    wire = frame(DATA, END_STREAM, 3, b"abc") + rst(5, PROTOCOL_ERROR) + goaway(last=7, code=PROTOCOL_ERROR) + b"\x00\x00"
    frames = []
    while (whole := split_frame(wire)) is not None:
        raw, wire = whole
        frames.append(Frame.parse(raw))
    assert wire == b"\x00\x00"  # an incomplete header stays in the buffer
    assert [(f.kind, f.flags, f.stream, f.payload) for f in frames[:1]] == [(DATA, END_STREAM, 3, b"abc")]
    assert [(f.kind, f.stream, f.error_code) for f in frames[1:]] == [(RST_STREAM, 5, PROTOCOL_ERROR),
                                                                       (GOAWAY, 0, PROTOCOL_ERROR)]
    assert frames[0].error_code is None


def test_h2_frame_parse_ignores_the_reserved_bit_and_keeps_unknown_types() -> None:
    parsed = Frame.parse(frame(0x20, 0xFF, 1 | 0x80000000, b"x"))
    assert (parsed.kind, parsed.flags, parsed.stream) == (0x20, 0xFF, 1)


# ---------------------------------------------------------------------- WebSocket frames
@pytest.mark.parametrize("size, length_bytes", [(0, 0), (125, 0), (126, 2), (65535, 2), (65536, 8)])
def test_ws_frame_uses_the_minimal_length_encoding(size: int, length_bytes: int) -> None:
    unmasked = ws_frame(BINARY, b"x" * size, mask=False)
    assert unmasked[0] == 0x80 | BINARY and len(unmasked) == 2 + length_bytes + size
    masked = ws_frame(BINARY, b"x" * size)
    assert masked[1] & 0x80 and len(masked) == len(unmasked) + 4
    key = masked[2 + length_bytes:6 + length_bytes]
    assert apply_mask(masked[6 + length_bytes:], key) == b"x" * size


def test_ws_frame_sets_fin_and_reserved_bits_as_asked() -> None:
    assert ws_frame(TEXT, b"", fin=False, rsv=0b101, mask=False)[0] == 0x50 | TEXT
    assert close_payload(1000, b"bye") == struct.pack("!H", 1000) + b"bye" and close_payload(None) == b""


def test_ws_deflate_inflate_round_trip_and_context_takeover() -> None:
    assert inflate(deflate(b"hello " * 100)) == b"hello " * 100
    compressor = zlib.compressobj(wbits=-15)
    first, second = deflate(b"same words", compressor), deflate(b"same words", compressor)
    assert len(second) < len(first)  # the second refers back to the first


# ---------------------------------------------------------------------- HTTP/1.1 bytes
def test_request_and_chunked_bytes() -> None:
    assert request("POST", "/x", [("Content-Length", "2")], b"hi") == \
        b"POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\nhi"
    assert request(version="1.0", host=False) == b"GET / HTTP/1.0\r\n\r\n"
    assert chunked(b"ab", b"", b"cde", trailers=b"X: 1\r\n") == b"2\r\nab\r\n3\r\ncde\r\n0\r\nX: 1\r\n\r\n"


def test_parse_response_dechunks() -> None:
    status, headers, body = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
                                           + chunked(b"ab", b"cd"))
    assert (status, headers["x-a"], body) == (200, "1", b"abcd")
    assert dechunk(b"1;ext=1\r\na\r\n0\r\n\r\n") == b"a"
