"""HTTP/2 conformance corpus (our own; h2spec's binary is not available here), organised by
RFC 9113 / RFC 7541 section like h2spec. Hand-built frames on raw sockets against a real Tether;
each case asserts the required connection error (GOAWAY with the code), stream error
(RST_STREAM with the code, and the connection still serving), or the normal answer.

Where RFC 9113 lets an endpoint treat a malformed request either as a stream error or as a
connection error (§8.1.1: "MUST be treated as malformed", §5.4), the case accepts both with the
required code, as h2spec does."""

from __future__ import annotations

import struct
import time
from typing import Any, Iterator

import pytest

from tests.support.server import serve
from tests.h2raw import (
    body_echo_app,
    CANCEL, COMPRESSION_ERROR, CONTINUATION, DATA, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR, GOAWAY, HEADERS, PADDED, PING, PRIORITY, PRIORITY_FLAG, PROTOCOL_ERROR, REFUSED_STREAM,
    RST_STREAM, SETTINGS, STREAM_CLOSED, WINDOW_UPDATE, RawH2, frame, ping, request_headers, rst, settings,
    window_update,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with serve(body_echo_app, h2_ping_interval=0) as srv:
        yield srv.port


@pytest.fixture
def conn(port: int) -> Iterator[RawH2]:
    with RawH2(port) as connection:
        yield connection


def connection_error(conn: RawH2, code: int) -> None:
    assert conn.outcome() == ("goaway", code)


def stream_error(conn: RawH2, stream: int, code: int, next_stream: int) -> None:
    assert conn.outcome(stream) == ("rst", code)
    assert conn.still_serves(next_stream)


def stream_or_connection_error(conn: RawH2, stream: int, code: int) -> None:
    assert conn.outcome(stream) in (("rst", code), ("goaway", code))


def answered(conn: RawH2, stream: int = 1) -> None:
    assert conn.outcome(stream) == ("response", 200)


def hblock(conn: RawH2, path: str = "/", extra: list | None = None, method: str = "GET") -> bytes:
    return conn.block(request_headers(path, method, extra))


# ---------------------------------------------------------------------- 3.4 / 3.5 preface and SETTINGS
def test_3_5_server_preface_is_a_settings_frame_with_our_options(conn: RawH2) -> None:
    assert conn.server_settings[0x3] == 100  # MAX_CONCURRENT_STREAMS
    assert conn.server_settings[0x4] == 65535  # INITIAL_WINDOW_SIZE
    assert conn.server_settings.get(0x2, 0) == 0  # ENABLE_PUSH off


def test_3_5_settings_are_acknowledged(conn: RawH2) -> None:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        event = conn.read_frame(1)
        assert event is not None
        if event.kind == SETTINGS:
            assert event.flags & 0x1 and event.payload == b""
            return
    raise AssertionError("no SETTINGS ACK")


def test_3_5_invalid_preface_is_refused() -> None:
    import socket

    with serve(body_echo_app, http="2") as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + settings())
        data = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        sock.close()
        assert b"HTTP/1.1 200" not in data  # closed (after a GOAWAY, if any), never served


# ---------------------------------------------------------------------- 4.1 frame format
def test_4_1_unknown_frame_type_is_ignored(conn: RawH2) -> None:
    conn.send(frame(0x20, 0, 0, b"ignore me") + ping(b"afterunk"))
    event = conn.read_frame()
    while event is not None and event.kind != PING:
        event = conn.read_frame()
    assert event is not None and event.payload == b"afterunk" and event.flags & 0x1


def test_4_1_undefined_flags_are_ignored(conn: RawH2) -> None:
    conn.send(frame(PING, 0x16, 0, b"flagsxx!"))
    event = conn.read_frame()
    while event is not None and event.kind != PING:
        event = conn.read_frame()
    assert event is not None and event.payload == b"flagsxx!"


def test_4_1_reserved_stream_bit_is_ignored(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1 | 0x80000000, hblock(conn)))
    answered(conn, 1)


def test_4_1_unknown_frame_on_a_stream_is_ignored(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS, 1, hblock(conn, "/", method="POST")) + frame(0x30, 0, 1, b"x")
              + frame(DATA, END_STREAM, 1, b"body"))
    answered(conn, 1)


# ---------------------------------------------------------------------- 4.2 frame size
def test_4_2_data_of_max_frame_size_is_accepted(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS, 1, hblock(conn, "/", method="POST")) + frame(DATA, END_STREAM, 1, b"d" * 16384))
    answered(conn, 1)


def test_4_2_data_over_max_frame_size(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS, 1, hblock(conn, "/", method="POST")) + frame(DATA, END_STREAM, 1, b"d" * 16385))
    stream_or_connection_error(conn, 1, FRAME_SIZE_ERROR)


def test_4_2_headers_over_max_frame_size(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, hblock(conn, "/", [("x-big", "b" * 30000)])))
    connection_error(conn, FRAME_SIZE_ERROR)


def test_4_2_settings_over_max_frame_size(conn: RawH2) -> None:
    conn.send(frame(SETTINGS, 0, 0, b"\x00\x09\x00\x00\x00\x00" * 2800))
    connection_error(conn, FRAME_SIZE_ERROR)


# ---------------------------------------------------------------------- 4.3 header compression
def test_4_3_invalid_header_block_is_a_compression_error(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\xff\xff\xff\xff\xff\xff"))
    connection_error(conn, COMPRESSION_ERROR)


def test_4_3_priority_frame_inside_a_header_block(conn: RawH2) -> None:
    block = hblock(conn)
    conn.send(frame(HEADERS, END_STREAM, 1, block[:3]) + frame(PRIORITY, 0, 1, struct.pack(">IB", 0, 15))
              + frame(CONTINUATION, END_HEADERS, 1, block[3:]))
    connection_error(conn, PROTOCOL_ERROR)


def test_4_3_headers_of_another_stream_inside_a_header_block(conn: RawH2) -> None:
    block = hblock(conn)
    conn.send(frame(HEADERS, END_STREAM, 1, block[:3]) + frame(HEADERS, END_HEADERS | END_STREAM, 3, block))
    connection_error(conn, PROTOCOL_ERROR)


def test_4_3_data_inside_a_header_block(conn: RawH2) -> None:
    block = hblock(conn, method="POST")
    conn.send(frame(HEADERS, 0, 1, block[:3]) + frame(DATA, END_STREAM, 1, b"x"))
    connection_error(conn, PROTOCOL_ERROR)


# ---------------------------------------------------------------------- 5.1 stream states
def test_5_1_idle_data(conn: RawH2) -> None:
    conn.send(frame(DATA, END_STREAM, 1, b"x"))
    connection_error(conn, PROTOCOL_ERROR)


def test_5_1_idle_rst_stream(conn: RawH2) -> None:
    conn.send(rst(1))
    connection_error(conn, PROTOCOL_ERROR)


def test_5_1_idle_window_update(conn: RawH2) -> None:
    conn.send(window_update(1, 100))
    connection_error(conn, PROTOCOL_ERROR)


def test_5_1_idle_continuation(conn: RawH2) -> None:
    conn.send(frame(CONTINUATION, END_HEADERS, 1, hblock(conn)))
    connection_error(conn, PROTOCOL_ERROR)


def test_5_1_half_closed_remote_data(conn: RawH2) -> None:
    conn.request(1, "/slow")  # END_STREAM: half-closed (remote) while the app sleeps
    conn.send(frame(DATA, END_STREAM, 1, b"late"))
    stream_or_connection_error(conn, 1, STREAM_CLOSED)


def test_5_1_half_closed_remote_headers(conn: RawH2) -> None:
    conn.request(1, "/slow")
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, hblock(conn, "/slow")))
    stream_or_connection_error(conn, 1, STREAM_CLOSED)


def test_5_1_half_closed_remote_continuation(conn: RawH2) -> None:
    conn.request(1, "/slow")
    conn.send(frame(CONTINUATION, END_HEADERS, 1, hblock(conn)))
    connection_error(conn, PROTOCOL_ERROR)


def test_5_1_closed_data_after_rst(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS, 1, hblock(conn, method="POST")) + rst(1) + frame(DATA, END_STREAM, 1, b"x"))
    stream_or_connection_error(conn, 1, STREAM_CLOSED)


def test_5_1_closed_headers_after_rst(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS, 1, hblock(conn, method="POST")) + rst(1)
              + frame(HEADERS, END_HEADERS | END_STREAM, 1, hblock(conn)))
    stream_or_connection_error(conn, 1, STREAM_CLOSED)


def test_5_1_closed_data_after_the_response(conn: RawH2) -> None:
    conn.request(1)
    answered(conn, 1)
    time.sleep(0.1)
    conn.send(frame(DATA, END_STREAM, 1, b"x"))
    stream_or_connection_error(conn, 1, STREAM_CLOSED)


def test_5_1_1_even_stream_id(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 2, hblock(conn)))
    connection_error(conn, PROTOCOL_ERROR)


def test_5_1_1_decreasing_stream_id(conn: RawH2) -> None:
    conn.request(5)
    answered(conn, 5)
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, hblock(conn)))
    connection_error(conn, PROTOCOL_ERROR)


def test_5_1_1_skipped_stream_ids_are_fine(conn: RawH2) -> None:
    conn.request(1)
    answered(conn, 1)
    conn.request(101)
    answered(conn, 101)


def test_5_1_2_streams_beyond_the_limit_are_refused() -> None:
    with serve(body_echo_app, h2_max_concurrent_streams=2, h2_ping_interval=0) as srv, RawH2(srv.port) as conn:
        assert conn.server_settings[0x3] == 2
        conn.request(1, "/slow")
        conn.request(3, "/slow")
        conn.request(5, "/slow")
        assert conn.outcome(5) == ("rst", REFUSED_STREAM)
        assert conn.outcome(1) == ("response", 200)
        assert conn.still_serves(7)


# ---------------------------------------------------------------------- 5.3 priority
def test_5_3_1_headers_depending_on_itself(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM | PRIORITY_FLAG, 1, struct.pack(">IB", 1, 15) + hblock(conn)))
    stream_or_connection_error(conn, 1, PROTOCOL_ERROR)


def test_5_3_1_priority_depending_on_itself(conn: RawH2) -> None:
    conn.send(frame(PRIORITY, 0, 1, struct.pack(">IB", 1, 15)))
    stream_or_connection_error(conn, 1, PROTOCOL_ERROR)


def test_5_3_headers_with_a_valid_priority_are_served(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM | PRIORITY_FLAG, 1, struct.pack(">IB", 0, 200) + hblock(conn)))
    answered(conn, 1)


# ---------------------------------------------------------------------- 5.5 extensions
def test_5_5_unknown_frame_inside_a_header_block(conn: RawH2) -> None:
    block = hblock(conn)
    conn.send(frame(HEADERS, END_STREAM, 1, block[:3]) + frame(0x21, 0, 1, b"ext") + frame(CONTINUATION, END_HEADERS, 1, block[3:]))
    connection_error(conn, PROTOCOL_ERROR)


# ---------------------------------------------------------------------- 6.1 DATA
def test_6_1_data_on_stream_zero(conn: RawH2) -> None:
    conn.send(frame(DATA, 0, 0, b"x"))
    connection_error(conn, PROTOCOL_ERROR)


def test_6_1_data_with_a_pad_length_past_the_payload(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS, 1, hblock(conn, method="POST")) + frame(DATA, END_STREAM | PADDED, 1, b"\x06abc"))
    connection_error(conn, PROTOCOL_ERROR)


def test_6_1_padded_data_is_served(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS, 1, hblock(conn, method="POST")) + frame(DATA, END_STREAM | PADDED, 1, b"\x03abc\0\0\0"))
    answered(conn, 1)


# ---------------------------------------------------------------------- 6.2 HEADERS
def test_6_2_headers_on_stream_zero(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 0, hblock(conn)))
    connection_error(conn, PROTOCOL_ERROR)


def test_6_2_headers_with_a_pad_length_past_the_payload(conn: RawH2) -> None:
    block = hblock(conn)
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM | PADDED, 1, bytes([len(block) + 10]) + block))
    connection_error(conn, PROTOCOL_ERROR)


def test_6_2_padded_headers_are_served(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM | PADDED, 1, b"\x04" + hblock(conn) + b"\0" * 4))
    answered(conn, 1)


def test_6_2_headers_without_end_headers_then_data(conn: RawH2) -> None:
    conn.send(frame(HEADERS, 0, 1, hblock(conn, method="POST")) + frame(DATA, END_STREAM, 1, b"x"))
    connection_error(conn, PROTOCOL_ERROR)


# ---------------------------------------------------------------------- 6.3 PRIORITY
def test_6_3_priority_on_stream_zero(conn: RawH2) -> None:
    conn.send(frame(PRIORITY, 0, 0, struct.pack(">IB", 1, 15)))
    connection_error(conn, PROTOCOL_ERROR)


def test_6_3_priority_of_wrong_length(conn: RawH2) -> None:
    conn.send(frame(PRIORITY, 0, 1, struct.pack(">I", 0)))
    stream_or_connection_error(conn, 1, FRAME_SIZE_ERROR)


def test_6_3_priority_on_an_idle_stream_is_fine(conn: RawH2) -> None:
    conn.send(frame(PRIORITY, 0, 3, struct.pack(">IB", 0, 15)))
    conn.request(5)
    answered(conn, 5)


# ---------------------------------------------------------------------- 6.4 RST_STREAM
def test_6_4_rst_stream_on_stream_zero(conn: RawH2) -> None:
    conn.send(rst(0))
    connection_error(conn, PROTOCOL_ERROR)


def test_6_4_rst_stream_of_wrong_length(conn: RawH2) -> None:
    conn.request(1, "/slow")
    conn.send(frame(RST_STREAM, 0, 1, b"\0\0\0"))
    connection_error(conn, FRAME_SIZE_ERROR)


def test_6_4_rst_stream_ends_only_its_stream(conn: RawH2) -> None:
    conn.request(1, "/slow")
    conn.send(rst(1))
    assert conn.still_serves(3)


# ---------------------------------------------------------------------- 6.5 SETTINGS
@pytest.mark.xfail(strict=True, reason="h2 (hyperframe) reports an ACK with a payload as PROTOCOL_ERROR")
def test_6_5_settings_ack_with_payload(conn: RawH2) -> None:
    conn.send(frame(SETTINGS, 0x1, 0, b"\x00\x03\x00\x00\x00\x64"))
    connection_error(conn, FRAME_SIZE_ERROR)


def test_6_5_settings_on_a_stream(conn: RawH2) -> None:
    conn.send(frame(SETTINGS, 0, 1, b"\x00\x03\x00\x00\x00\x64"))
    connection_error(conn, PROTOCOL_ERROR)


@pytest.mark.parametrize("size", [3, 7, 11])
def test_6_5_settings_length_not_a_multiple_of_6(conn: RawH2, size: int) -> None:
    conn.send(frame(SETTINGS, 0, 0, b"\0" * size))
    connection_error(conn, FRAME_SIZE_ERROR)


@pytest.mark.parametrize("setting, value, code", [
    (0x2, 2, PROTOCOL_ERROR),  # ENABLE_PUSH must be 0 or 1
    (0x4, 2**31, FLOW_CONTROL_ERROR),  # INITIAL_WINDOW_SIZE above 2^31-1
    (0x5, 16383, PROTOCOL_ERROR),  # MAX_FRAME_SIZE below 2^14
    (0x5, 2**24, PROTOCOL_ERROR),  # MAX_FRAME_SIZE above 2^24-1
])
def test_6_5_2_invalid_setting_value(conn: RawH2, setting: int, value: int, code: int) -> None:
    conn.send(settings((setting, value)))
    connection_error(conn, code)


def test_6_5_2_unknown_setting_is_ignored(conn: RawH2) -> None:
    conn.send(settings((0xFF, 1)))
    conn.request(1)
    answered(conn, 1)


def test_6_5_3_settings_are_applied_in_order(conn: RawH2) -> None:
    conn.send(settings((0x4, 1), (0x4, 65535)))  # the last value wins: the response is not held back
    conn.send(frame(HEADERS, END_HEADERS, 1, hblock(conn, method="POST")) + frame(DATA, END_STREAM, 1, b"x" * 1000))
    answered(conn, 1)


def test_6_5_header_table_size_zero_is_honoured(conn: RawH2) -> None:
    conn.send(settings((0x1, 0)))
    for stream in (1, 3, 5):
        conn.request(stream)
        answered(conn, stream)


# ---------------------------------------------------------------------- 6.7 PING
def test_6_7_ping_is_acknowledged_with_the_same_payload(conn: RawH2) -> None:
    conn.send(ping(b"\x00\x01\x02\x03\x04\x05\x06\x07"))
    event = conn.read_frame()
    while event is not None and event.kind != PING:
        event = conn.read_frame()
    assert event is not None and event.flags & 0x1 and event.payload == b"\x00\x01\x02\x03\x04\x05\x06\x07"


def test_6_7_ping_ack_is_not_answered(conn: RawH2) -> None:
    conn.send(ping(b"ackedxxx", ack=True) + ping(b"realping"))
    event = conn.read_frame()
    while event is not None and event.kind != PING:
        event = conn.read_frame()
    assert event is not None and event.payload == b"realping"


def test_6_7_ping_on_a_stream(conn: RawH2) -> None:
    conn.send(ping(stream=1))
    connection_error(conn, PROTOCOL_ERROR)


@pytest.mark.parametrize("size", [0, 7, 9])
def test_6_7_ping_of_wrong_length(conn: RawH2, size: int) -> None:
    conn.send(frame(PING, 0, 0, b"p" * size))
    connection_error(conn, FRAME_SIZE_ERROR)


# ---------------------------------------------------------------------- 6.8 GOAWAY
def test_6_8_goaway_on_a_stream(conn: RawH2) -> None:
    conn.send(frame(GOAWAY, 0, 1, struct.pack(">II", 0, 0)))
    connection_error(conn, PROTOCOL_ERROR)


def test_6_8_goaway_from_the_client_ends_the_connection(conn: RawH2) -> None:
    conn.send(frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
    assert conn.outcome() in (("closed",), ("goaway", 0))


# ---------------------------------------------------------------------- 6.9 WINDOW_UPDATE
def test_6_9_zero_increment_on_the_connection(conn: RawH2) -> None:
    conn.send(window_update(0, 0))
    connection_error(conn, PROTOCOL_ERROR)


def test_6_9_zero_increment_on_a_stream(conn: RawH2) -> None:
    conn.request(1, "/slow")
    conn.send(window_update(1, 0))
    stream_or_connection_error(conn, 1, PROTOCOL_ERROR)


def test_6_9_window_update_of_wrong_length(conn: RawH2) -> None:
    conn.send(frame(WINDOW_UPDATE, 0, 0, b"\0\0\1"))
    connection_error(conn, FRAME_SIZE_ERROR)


def test_6_9_1_connection_window_overflow(conn: RawH2) -> None:
    conn.send(window_update(0, 2**31 - 1) + window_update(0, 2**31 - 1))
    connection_error(conn, FLOW_CONTROL_ERROR)


def test_6_9_1_stream_window_overflow(conn: RawH2) -> None:
    conn.request(1, "/slow")
    conn.send(window_update(1, 2**31 - 1) + window_update(1, 2**31 - 1))
    stream_or_connection_error(conn, 1, FLOW_CONTROL_ERROR)


def test_6_9_1_client_data_beyond_the_servers_window(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS, 1, hblock(conn, "/slow", method="POST")))
    chunk = b"w" * 16384
    conn.send(b"".join(frame(DATA, 0, 1, chunk) for _ in range(5)))  # 80 KiB > the 64 KiB window
    assert conn.outcome(1) in (("goaway", FLOW_CONTROL_ERROR), ("rst", FLOW_CONTROL_ERROR))


def test_6_9_2_initial_window_size_zero_holds_the_response_until_window_update(conn: RawH2) -> None:
    conn.send(settings((0x4, 0)))
    conn.request(1)
    assert conn.outcome(1) == ("response", 200)  # headers are not flow-controlled
    data = conn.read_frame(0.5)
    while data is not None and data.kind != DATA:
        data = conn.read_frame(0.5)
    assert data is None, "DATA sent into a zero window"
    conn.send(window_update(1, 100))
    data = conn.read_frame()
    while data is not None and data.kind != DATA:
        data = conn.read_frame()
    assert data is not None and data.payload == b"ok"


# ---------------------------------------------------------------------- 6.10 CONTINUATION
def test_6_10_continuation_frames_make_one_header_block(conn: RawH2) -> None:
    block = hblock(conn, "/", [("x-long", "v" * 200)])
    conn.send(frame(HEADERS, END_STREAM, 1, block[:10]) + frame(CONTINUATION, 0, 1, block[10:50])
              + frame(CONTINUATION, END_HEADERS, 1, block[50:]))
    answered(conn, 1)


def test_6_10_continuation_after_end_headers(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS, 1, hblock(conn, "/slow", method="POST")) + frame(CONTINUATION, END_HEADERS, 1, b""))
    connection_error(conn, PROTOCOL_ERROR)


def test_6_10_continuation_on_another_stream(conn: RawH2) -> None:
    block = hblock(conn)
    conn.send(frame(HEADERS, END_STREAM, 1, block[:3]) + frame(CONTINUATION, END_HEADERS, 3, block[3:]))
    connection_error(conn, PROTOCOL_ERROR)


def test_6_10_continuation_on_stream_zero(conn: RawH2) -> None:
    block = hblock(conn)
    conn.send(frame(HEADERS, END_STREAM, 1, block[:3]) + frame(CONTINUATION, END_HEADERS, 0, block[3:]))
    connection_error(conn, PROTOCOL_ERROR)


# ---------------------------------------------------------------------- 8.1 HTTP messages
MALFORMED = {
    "uppercase header name": request_headers(extra=[("X-Upper", "v")]),
    "unknown pseudo-header": request_headers(extra=[(":unknown", "v")]),
    "response pseudo-header in a request": request_headers(extra=[(":status", "200")]),
    "pseudo-header after a regular one": [(":method", "GET"), (":scheme", "http"), ("x-a", "1"), (":path", "/"),
                                          (":authority", "a")],
    "duplicate :path": request_headers(extra=[(":path", "/again")]),
    "duplicate :method": [(":method", "GET"), *request_headers()],
    "missing :method": [(":scheme", "http"), (":path", "/"), (":authority", "a")],
    "missing :scheme": [(":method", "GET"), (":path", "/"), (":authority", "a")],
    "missing :path": [(":method", "GET"), (":scheme", "http"), (":authority", "a")],
    "empty :path": [(":method", "GET"), (":scheme", "http"), (":path", ""), (":authority", "a")],
    "connection header": request_headers(extra=[("connection", "keep-alive")]),
    "keep-alive header": request_headers(extra=[("keep-alive", "timeout=5")]),
    "transfer-encoding header": request_headers(extra=[("transfer-encoding", "chunked")]),
    "upgrade header": request_headers(extra=[("upgrade", "websocket")]),
    "te other than trailers": request_headers(extra=[("te", "gzip")]),
    "space in a header name": request_headers(extra=[("x bad", "v")]),
    "newline in a header value": request_headers(extra=[("x-bad", "a\nb")]),
}


@pytest.mark.parametrize("headers", list(MALFORMED.values()), ids=list(MALFORMED))
def test_8_1_malformed_request_is_a_protocol_error(conn: RawH2, headers: list) -> None:
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, conn.block(headers)))
    stream_or_connection_error(conn, 1, PROTOCOL_ERROR)


def test_8_1_te_trailers_is_allowed(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, hblock(conn, "/", [("te", "trailers")])))
    answered(conn, 1)


def test_8_1_content_length_larger_than_the_data(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS, 1, hblock(conn, "/", [("content-length", "10")], method="POST"))
              + frame(DATA, END_STREAM, 1, b"short"))
    stream_or_connection_error(conn, 1, PROTOCOL_ERROR)


def test_8_1_content_length_smaller_than_the_data(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS, 1, hblock(conn, "/", [("content-length", "2")], method="POST"))
              + frame(DATA, END_STREAM, 1, b"too long"))
    stream_or_connection_error(conn, 1, PROTOCOL_ERROR)


def test_8_1_trailers_are_accepted(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS, 1, hblock(conn, "/", method="POST")) + frame(DATA, 0, 1, b"body")
              + frame(HEADERS, END_HEADERS | END_STREAM, 1, conn.block([("x-checksum", "abc")])))
    answered(conn, 1)


def test_8_1_trailers_without_end_stream(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS, 1, hblock(conn, "/", method="POST")) + frame(DATA, 0, 1, b"body")
              + frame(HEADERS, END_HEADERS, 1, conn.block([("x-checksum", "abc")])))
    stream_or_connection_error(conn, 1, PROTOCOL_ERROR)


def test_8_1_pseudo_header_in_trailers(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS, 1, hblock(conn, "/", method="POST")) + frame(DATA, 0, 1, b"body")
              + frame(HEADERS, END_HEADERS | END_STREAM, 1, conn.block([(":path", "/x")])))
    stream_or_connection_error(conn, 1, PROTOCOL_ERROR)


def test_8_3_authority_becomes_the_host_header() -> None:
    seen: list = []

    async def host_app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(dict(scope["headers"]).get(b"host"))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    with serve(host_app, h2_ping_interval=0) as srv, RawH2(srv.port) as conn:
        conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, conn.block(request_headers(authority="example.org:8443"))))
        answered(conn, 1)
    assert seen == [b"example.org:8443"]


# ---------------------------------------------------------------------- RFC 7541 HPACK
HPACK_ERRORS = {
    "index 0": b"\x80",
    "index past the tables": b"\xff\x80\x01",  # 127 + 128
    "table size update above the limit": b"\x3f\xe1\x7f",  # 32 + ... = 16384 > 4096
    "table size update after a field": b"\x82\x20",
    "integer overflow": b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    "huffman with EOS": b"\x00\x81\xff" + b"\x81\xff",
    "huffman padding too long": b"\x00\x81\x8c\x82\xff\xff",
    "string longer than the block": b"\x00\x0a" + b"abc",
}


@pytest.mark.parametrize("block", list(HPACK_ERRORS.values()), ids=list(HPACK_ERRORS))
def test_hpack_decoding_error_is_a_compression_error(conn: RawH2, block: bytes) -> None:
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
    connection_error(conn, COMPRESSION_ERROR)


def test_hpack_dynamic_table_entries_are_used_across_requests(conn: RawH2) -> None:
    for stream in (1, 3, 5, 7):  # the encoder indexes x-session after the first request
        conn.send(frame(HEADERS, END_HEADERS | END_STREAM, stream, hblock(conn, "/", [("x-session", "abc")])))
        answered(conn, stream)


def test_hpack_literal_never_indexed_is_accepted(conn: RawH2) -> None:
    block = conn.block(request_headers()) + b"\x10\x06x-priv\x03abc"  # literal never indexed, new name
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
    answered(conn, 1)


# ---------------------------------------------------------------------- floods and limits (Tether)
def test_rapid_reset_flood_gets_enhance_your_calm(conn: RawH2) -> None:
    burst = b"".join(conn.headers(stream, request_headers("/slow")) + rst(stream) for stream in range(1, 600, 2))
    conn.send(burst)
    assert conn.outcome(timeout=5) == ("goaway", ENHANCE_YOUR_CALM)


@pytest.mark.parametrize("name, unit", [
    ("ping", ping()),
    ("settings", settings()),
])
def test_control_frame_flood_gets_enhance_your_calm(conn: RawH2, name: str, unit: bytes) -> None:
    conn.send(unit * 1200)
    assert conn.outcome(timeout=5) == ("goaway", ENHANCE_YOUR_CALM)


def test_empty_data_flood_gets_enhance_your_calm(conn: RawH2) -> None:
    conn.send(frame(HEADERS, END_HEADERS, 1, hblock(conn, "/slow", method="POST")))
    conn.send(frame(DATA, 0, 1, b"") * 1200)
    assert conn.outcome(timeout=5) == ("goaway", ENHANCE_YOUR_CALM)


def test_continuation_flood_is_cut_with_memory_bounded(conn: RawH2) -> None:
    """CVE-2024-27316: a header block that never ends. The server must close long before the
    client has sent 10 x the advertised header list size."""
    conn.send(frame(HEADERS, END_STREAM, 1, hblock(conn)[:2]))
    sent = 0
    limit = 10 * 65536
    piece = frame(CONTINUATION, 0, 1, b"\x00" * 16384)
    while sent < limit and not conn.closed:
        conn.send(piece)
        sent += 16384
    result = conn.outcome(timeout=5)
    assert result[0] in ("goaway", "closed"), result
    if result[0] == "goaway":
        assert result[1] in (PROTOCOL_ERROR, ENHANCE_YOUR_CALM, COMPRESSION_ERROR, FRAME_SIZE_ERROR)


def test_header_list_over_the_limit_is_refused_and_bounded() -> None:
    with serve(body_echo_app, h2_max_header_list_size=4096, h2_ping_interval=0) as srv, RawH2(srv.port) as conn:
        assert conn.server_settings[0x6] == 4096
        conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, hblock(conn, "/", [("x-big", "b" * 8000)])))
        result = conn.outcome(1)
        assert result in (("rst", PROTOCOL_ERROR), ("rst", REFUSED_STREAM), ("response", 431),
                          ("goaway", PROTOCOL_ERROR), ("goaway", ENHANCE_YOUR_CALM), ("goaway", COMPRESSION_ERROR)), result


def test_resets_below_the_flood_limit_are_fine(conn: RawH2) -> None:
    burst = b"".join(conn.headers(stream, request_headers("/slow")) + rst(stream) for stream in range(1, 100, 2))
    conn.send(burst)
    assert conn.still_serves(101)


def test_a_reset_of_a_stream_in_flight_gets_no_response(conn: RawH2) -> None:
    conn.request(1, "/slow")
    conn.send(rst(1, CANCEL))
    assert conn.outcome(1, timeout=1.5) == ("nothing",)
