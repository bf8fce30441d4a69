"""WebSocket conformance corpus (our own; the Autobahn testsuite does not run here), grouped like
Autobahn's sections. Raw frames on raw sockets against a real Tether; each case asserts what
RFC 6455 requires: the echo, or the exact close code the server sends before closing TCP, and
that the app's websocket.disconnect carries the same code."""

from __future__ import annotations

import itertools
import time
from typing import Any, Iterator

import pytest

from tests.support.server import serve
from tests.wsraw import BINARY, CLOSE, CONT, PING, PONG, TEXT, RawWebSocket, close_payload, deflate, inflate, frame

MAX_SIZE = 70000  # for the limits section; larger than every echo case
_paths = itertools.count()


class EchoApp:
    """Echoes every message; records each session's websocket.disconnect by path."""

    def __init__(self) -> None:
        self.disconnects: dict[str, dict] = {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.disconnects[scope["path"]] = message
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})

    def disconnect_of(self, path: str, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while path not in self.disconnects and time.monotonic() < deadline:
            time.sleep(0.005)
        assert path in self.disconnects, f"the app never saw the disconnect of {path}"
        return self.disconnects[path]


class Server:
    def __init__(self, srv: Any, app: EchoApp) -> None:
        self.srv = srv
        self.app = app

    def open(self, extra: bytes = b"") -> tuple[RawWebSocket, str]:
        path = f"/case{next(_paths)}"
        ws = RawWebSocket(self.srv.port, path, extra)
        assert ws.status == 101, ws.head
        return ws, path

    def expect_failure(self, ws: RawWebSocket, path: str, code: int) -> None:
        """The server closes with ``code``, closes TCP, and the app is told the same code."""
        close = ws.read_close()
        assert close.close_code == code, close
        assert ws.closed_by_server()
        assert self.app.disconnect_of(path)["code"] == code


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    app = EchoApp()
    with serve(app, ws_max_size=MAX_SIZE, ws_ping_interval=0) as srv:
        yield Server(srv, app)


# ---------------------------------------------------------------------- 1. framing
SIZES = [0, 1, 125, 126, 127, 65535, 65536, 69999]


@pytest.mark.parametrize("size", SIZES)
def test_1_text_echo(server: Server, size: int) -> None:
    ws, _ = server.open()
    with ws:
        payload = ("é" * (size // 2) + "a" * (size % 2)).encode()
        ws.send_frame(TEXT, payload)
        got = ws.read_message()
        assert (got.opcode, got.payload) == (TEXT, payload)


@pytest.mark.parametrize("size", SIZES)
def test_1_binary_echo(server: Server, size: int) -> None:
    ws, _ = server.open()
    with ws:
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        ws.send_frame(BINARY, payload)
        got = ws.read_message()
        assert (got.opcode, got.payload) == (BINARY, payload)


def test_1_frame_sent_byte_by_byte(server: Server) -> None:
    ws, _ = server.open()
    with ws:
        for byte in frame(TEXT, b"slow frame"):
            ws.send(bytes([byte]))
        assert ws.read_message().payload == b"slow frame"


# ---------------------------------------------------------------------- 2. ping/pong
@pytest.mark.parametrize("size", [0, 1, 125])
def test_2_ping_gets_pong_with_the_same_payload(server: Server, size: int) -> None:
    ws, _ = server.open()
    with ws:
        payload = bytes(range(size))
        ws.send_frame(PING, payload)
        got = ws.read_frame()
        assert (got.opcode, got.payload) == (PONG, payload)


def test_2_ping_payload_over_125_is_a_protocol_error(server: Server) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(PING, b"x" * 126)
        server.expect_failure(ws, path, 1002)


def test_2_unsolicited_pong_is_ignored(server: Server) -> None:
    ws, _ = server.open()
    with ws:
        ws.send_frame(PONG, b"unsolicited")
        ws.send_frame(TEXT, b"after")
        assert ws.read_message().payload == b"after"


def test_2_ten_pings_get_ten_pongs_in_order(server: Server) -> None:
    ws, _ = server.open()
    with ws:
        for i in range(10):
            ws.send_frame(PING, b"%d" % i)
        assert [ws.read_frame().payload for _ in range(10)] == [b"%d" % i for i in range(10)]


def test_2_ping_between_fragments_is_answered_and_the_message_survives(server: Server) -> None:
    ws, _ = server.open()
    with ws:
        ws.send_frame(TEXT, b"frag", fin=False)
        ws.send_frame(PING, b"mid")
        pong = ws.read_frame()
        assert (pong.opcode, pong.payload) == (PONG, b"mid")
        ws.send_frame(CONT, b"ment")
        assert ws.read_message().payload == b"fragment"


def test_2_pong_with_payload_over_125_is_a_protocol_error(server: Server) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(PONG, b"x" * 126)
        server.expect_failure(ws, path, 1002)


# ---------------------------------------------------------------------- 3. reserved bits
@pytest.mark.parametrize("rsv", [1, 2, 3, 4, 5, 6, 7])
def test_3_reserved_bits_on_a_text_frame(server: Server, rsv: int) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(TEXT, b"hello", rsv=rsv)
        server.expect_failure(ws, path, 1002)


@pytest.mark.parametrize("opcode", [BINARY, PING, CLOSE])
def test_3_reserved_bit_on_other_frames(server: Server, opcode: int) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(opcode, close_payload(1000) if opcode == CLOSE else b"x", rsv=1)
        server.expect_failure(ws, path, 1002)


def test_3_reserved_bit_after_a_good_message(server: Server) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(TEXT, b"good")
        assert ws.read_message().payload == b"good"
        ws.send_frame(TEXT, b"bad", rsv=2)
        server.expect_failure(ws, path, 1002)


# ---------------------------------------------------------------------- 4. opcodes
@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
def test_4_reserved_opcode_is_a_protocol_error(server: Server, opcode: int) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(opcode, b"payload")
        server.expect_failure(ws, path, 1002)


# ---------------------------------------------------------------------- 5. fragmentation
@pytest.mark.parametrize("parts", [2, 3, 10, 23])
def test_5_text_in_fragments(server: Server, parts: int) -> None:
    ws, _ = server.open()
    with ws:
        message = "fragmented message, reassembled by the server"[:23].encode()
        size = -(-len(message) // parts)
        pieces = [message[i:i + size] for i in range(0, len(message), size)]
        for i, piece in enumerate(pieces):
            ws.send_frame(TEXT if i == 0 else CONT, piece, fin=i == len(pieces) - 1)
        got = ws.read_message()
        assert (got.opcode, got.payload) == (TEXT, message)


def test_5_binary_in_fragments_with_empty_ones(server: Server) -> None:
    ws, _ = server.open()
    with ws:
        ws.send_frame(BINARY, b"", fin=False)
        ws.send_frame(CONT, b"\x00\x01", fin=False)
        ws.send_frame(CONT, b"", fin=False)
        ws.send_frame(CONT, b"\x02", fin=True)
        got = ws.read_message()
        assert (got.opcode, got.payload) == (BINARY, b"\x00\x01\x02")


def test_5_large_message_in_many_fragments(server: Server) -> None:
    ws, _ = server.open()
    with ws:
        message = b"z" * 60000
        for i in range(0, 60000, 1000):
            ws.send_frame(BINARY if i == 0 else CONT, message[i:i + 1000], fin=i == 59000)
        assert ws.read_message().payload == message


def test_5_continuation_without_a_start(server: Server) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(CONT, b"orphan")
        server.expect_failure(ws, path, 1002)


def test_5_continuation_after_a_complete_message(server: Server) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(TEXT, b"complete")
        assert ws.read_message().payload == b"complete"
        ws.send_frame(CONT, b"late", fin=True)
        server.expect_failure(ws, path, 1002)


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_5_new_data_frame_inside_a_fragmented_message(server: Server, opcode: int) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(TEXT, b"start", fin=False)
        ws.send_frame(opcode, b"intruder")
        server.expect_failure(ws, path, 1002)


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_5_fragmented_control_frame(server: Server, opcode: int) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(opcode, close_payload(1000) if opcode == CLOSE else b"x", fin=False)
        server.expect_failure(ws, path, 1002)


def test_5_unmasked_client_frame(server: Server) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(TEXT, b"unmasked", mask=False)
        server.expect_failure(ws, path, 1002)


# ---------------------------------------------------------------------- 6. UTF-8
VALID_TEXT = ["Hello-µ@ßöäüàá-UTF-8!!", "κόσμε", "\U0001d11e clef", "\u0080\u07ff\u0800\uffff\U00010000\U0010ffff", ""]
INVALID_UTF8 = {
    "overlong-slash-2": b"\xc0\xaf",
    "overlong-slash-3": b"\xe0\x80\xaf",
    "overlong-nul-4": b"\xf0\x80\x80\x80",
    "surrogate-high": b"\xed\xa0\x80",
    "surrogate-low": b"\xed\xbf\xbf",
    "above-10ffff": b"\xf4\x90\x80\x80",
    "truncated-2": b"ok \xce",
    "truncated-4": b"\xf0\x9d\x84",
    "lone-continuation": b"a\x80b",
    "ff-byte": b"\xff",
    "fe-byte": b"\xfe\xfe\xff\xff",
    "5-byte-form": b"\xf8\x88\x80\x80\x80",
}
SPLIT_VALID = "κόσμε\U0001d11e".encode()
SPLIT_INVALID = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"


@pytest.mark.parametrize("text", VALID_TEXT)
def test_6_valid_utf8_text_is_echoed(server: Server, text: str) -> None:
    ws, _ = server.open()
    with ws:
        ws.send_frame(TEXT, text.encode())
        assert ws.read_message().payload.decode() == text


@pytest.mark.parametrize("split", range(1, len(SPLIT_VALID)))
def test_6_valid_utf8_split_across_fragments(server: Server, split: int) -> None:
    ws, _ = server.open()
    with ws:
        ws.send_frame(TEXT, SPLIT_VALID[:split], fin=False)
        ws.send_frame(CONT, SPLIT_VALID[split:])
        assert ws.read_message().payload == SPLIT_VALID


@pytest.mark.parametrize("data", list(INVALID_UTF8.values()), ids=list(INVALID_UTF8))
def test_6_invalid_utf8_text_fails_with_1007(server: Server, data: bytes) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(TEXT, data)
        server.expect_failure(ws, path, 1007)


@pytest.mark.parametrize("split", [1, 5, 11, 12, 13, 14])
def test_6_invalid_utf8_split_across_fragments_fails_with_1007(server: Server, split: int) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(TEXT, SPLIT_INVALID[:split], fin=False)
        ws.send_frame(CONT, SPLIT_INVALID[split:])
        server.expect_failure(ws, path, 1007)


def test_6_invalid_utf8_is_caught_before_the_message_ends(server: Server) -> None:
    """Checked as data arrives: the server fails the connection without the final fragment."""
    ws, path = server.open()
    with ws:
        ws.send_frame(TEXT, b"valid start ", fin=False)
        ws.send_frame(CONT, b"\xed\xa0\x80", fin=False)  # and never the end of the message
        server.expect_failure(ws, path, 1007)


def test_6_invalid_utf8_in_the_close_reason_fails_with_1007(server: Server) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(CLOSE, close_payload(1000, b"\xff\xfe"))
        server.expect_failure(ws, path, 1007)


def test_6_binary_messages_are_not_utf8_checked(server: Server) -> None:
    ws, _ = server.open()
    with ws:
        ws.send_frame(BINARY, b"\xff\xfe\xed\xa0\x80")
        assert ws.read_message().payload == b"\xff\xfe\xed\xa0\x80"


# ---------------------------------------------------------------------- 7. close handling
VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_7_valid_close_code_is_echoed_and_given_to_the_app(server: Server, code: int) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(CLOSE, close_payload(code, b"bye"))
        close = ws.read_close()
        assert close.close_code == code
        assert ws.closed_by_server()
    seen = server.app.disconnect_of(path)
    assert (seen["code"], seen.get("reason")) == (code, "bye")


@pytest.mark.parametrize("code", INVALID_CODES)
def test_7_invalid_close_code_is_a_protocol_error(server: Server, code: int) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(CLOSE, close_payload(code))
        server.expect_failure(ws, path, 1002)


def test_7_close_with_a_one_byte_payload_is_a_protocol_error(server: Server) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(CLOSE, b"\x03")
        server.expect_failure(ws, path, 1002)


def test_7_empty_close_is_echoed_empty_and_the_app_sees_1005(server: Server) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(CLOSE, b"")
        close = ws.read_close()
        assert close.payload in (b"", close_payload(1000))  # (an empty echo, or 1000: both allowed)
        assert ws.closed_by_server()
    assert server.app.disconnect_of(path)["code"] == 1005


def test_7_close_with_a_123_byte_reason(server: Server) -> None:
    ws, path = server.open()
    with ws:
        reason = b"r" * 123
        ws.send_frame(CLOSE, close_payload(1000, reason))
        close = ws.read_close()
        assert close.payload == close_payload(1000, reason)
    assert server.app.disconnect_of(path)["reason"] == "r" * 123


def test_7_close_payload_over_125_bytes_is_a_protocol_error(server: Server) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(CLOSE, close_payload(1000, b"r" * 124))
        server.expect_failure(ws, path, 1002)


def test_7_data_after_the_close_frame_is_ignored(server: Server) -> None:
    ws, path = server.open()
    with ws:
        ws.send(frame(CLOSE, close_payload(1000)) + frame(TEXT, b"too late"))
        close = ws.read_close()
        assert close.close_code == 1000
        assert ws.closed_by_server()
    assert server.app.disconnect_of(path)["code"] == 1000


def test_7_close_in_the_middle_of_a_fragmented_message(server: Server) -> None:
    """RFC 6455 §5.4 lets a close frame arrive between fragments; the message it cuts short is
    incomplete, which the websockets library answers as a protocol error (1002); the app is
    told the code the client closed with."""
    ws, path = server.open()
    with ws:
        ws.send_frame(TEXT, b"never finished", fin=False)
        ws.send_frame(CLOSE, close_payload(1001))
        assert ws.read_close().close_code == 1002
        assert ws.closed_by_server()
    assert server.app.disconnect_of(path)["code"] == 1001


# ---------------------------------------------------------------------- 9. limits
def test_9_message_at_the_size_limit_is_accepted(server: Server) -> None:
    ws, _ = server.open()
    with ws:
        ws.send_frame(BINARY, b"m" * MAX_SIZE)
        assert len(ws.read_message().payload) == MAX_SIZE


def test_9_message_over_the_size_limit_closes_with_1009(server: Server) -> None:
    ws, path = server.open()
    with ws:
        ws.send_frame(BINARY, b"m" * (MAX_SIZE + 1))
        server.expect_failure(ws, path, 1009)


def test_9_fragmented_message_over_the_size_limit_closes_with_1009(server: Server) -> None:
    ws, path = server.open()
    with ws:
        for i in range(8):  # 8 x 10,000 > 70,000, never finished
            ws.send_frame(TEXT if i == 0 else CONT, b"f" * 10000, fin=False)
        server.expect_failure(ws, path, 1009)


# ---------------------------------------------------------------------- 12/13. permessage-deflate
DEFLATE = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


def test_12_deflate_is_negotiated_when_offered(server: Server) -> None:
    ws, _ = server.open(DEFLATE)
    with ws:
        assert (ws.header("sec-websocket-extensions") or "").startswith("permessage-deflate")


def test_12_compressed_text_both_ways(server: Server) -> None:
    ws, _ = server.open(DEFLATE)
    with ws:
        text = ("compressible " * 200).encode()
        ws.send_frame(TEXT, deflate(text), rsv=4)
        got = ws.read_frame()
        assert got.opcode == TEXT and got.rsv == 4  # compressed back
        assert inflate(got.payload) == text


def test_12_compressed_message_in_fragments(server: Server) -> None:
    ws, _ = server.open(DEFLATE)
    with ws:
        data = bytes(range(256)) * 40
        body = deflate(data)
        ws.send_frame(BINARY, body[:10], rsv=4, fin=False)  # RSV1 on the first frame only
        ws.send_frame(CONT, body[10:])
        got = ws.read_message()
        assert inflate(got.payload) == data


def test_12_uncompressed_message_on_a_deflate_session(server: Server) -> None:
    ws, _ = server.open(DEFLATE)
    with ws:
        ws.send_frame(TEXT, b"plain")
        got = ws.read_frame()
        assert (inflate(got.payload) if got.rsv == 4 else got.payload) == b"plain"


def test_12_rsv1_on_a_continuation_frame_is_a_protocol_error(server: Server) -> None:
    ws, path = server.open(DEFLATE)
    with ws:
        body = deflate(b"abcdef" * 10)
        ws.send_frame(TEXT, body[:3], rsv=4, fin=False)
        ws.send_frame(CONT, body[3:], rsv=4)
        server.expect_failure(ws, path, 1002)


def test_12_server_no_context_takeover_is_honoured(server: Server) -> None:
    ws, _ = server.open(b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n")
    with ws:
        assert "server_no_context_takeover" in (ws.header("sec-websocket-extensions") or "")
        for _ in range(2):  # each message decompresses on its own
            ws.send_frame(TEXT, deflate(b"same text again"), rsv=4)
            assert inflate(ws.read_frame().payload) == b"same text again"


def test_12_deflate_not_offered_when_disabled() -> None:
    app = EchoApp()
    with serve(app, ws_per_message_deflate=False, ws_ping_interval=0) as srv:
        with RawWebSocket(srv.port, "/", DEFLATE) as ws:
            assert ws.status == 101 and ws.header("sec-websocket-extensions") is None
            ws.send_frame(TEXT, b"x", rsv=4)  # compression was not negotiated: RSV1 is an error
            assert ws.read_close().close_code == 1002
