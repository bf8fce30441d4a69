"""WebSocket conformance corpus, grouped like Autobahn's sections (Autobahn itself cannot run here).

Everything on the wire is built by hand: the HTTP upgrade, masked (or deliberately broken) frames
from our own encoder, and a parser for the server's frames. Each error case asserts the three
things RFC 6455 §7.1.7 and the spec require: the server's close frame carries the exact code, the
server then closes TCP (recv() returns b""), and the echo app's websocket.disconnect carries the
same code. One server per group (module-scoped fixtures) keeps the whole file fast.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import socket
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import pytest

from tests.support.server import serve
from tests.support.probe import Probe
from tether import ClientDisconnected

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 4, 2, 1  # the 3-bit rsv field of encode_frame()
READ_TIMEOUT = 5.0
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
LIMIT = 1000  # ws_max_size of the limits server
MIB = 1 << 20

_case_numbers = itertools.count()


# ---------------------------------------------------------------------- our own frame encoder
def encode_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """One frame, byte for byte as RFC 6455 §5.2 draws it (and nothing checked: malformed on request)."""
    head = struct.pack("!B", (0x80 if fin else 0) | (rsv << 4) | opcode)
    mask_bit = 0x80 if masked else 0
    size = len(payload)
    if size <= 125:
        head += struct.pack("!B", mask_bit | size)
    elif size <= 0xFFFF:
        head += struct.pack("!BH", mask_bit | 126, size)
    else:
        head += struct.pack("!BQ", mask_bit | 127, size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + apply_mask(payload, key)


def apply_mask(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    stream = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


def close_body(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def raw_deflate(compressor: Any, data: bytes) -> bytes:
    """A permessage-deflate payload (RFC 7692 §7.2.1): sync-flushed, the 00 00 ff ff tail removed."""
    body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert body.endswith(b"\x00\x00\xff\xff")
    return body[:-4]


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes
    length_bytes: int  # 0, 2 or 8: how the server encoded the payload length

    @property
    def code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None


# ---------------------------------------------------------------------- the raw client
class Client:
    """A WebSocket client over one raw socket; every read has a deadline."""

    def __init__(self, port: int, path: str, extra_headers: bytes = b"") -> None:
        self.path = path
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
            + extra_headers + b"\r\n"
        )
        head = self._take_until(b"\r\n\r\n").decode("latin-1")
        status_line, *lines = head.split("\r\n")
        self.status = int(status_line.split(" ")[1])
        self.headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
        self.expected_accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        self.inflater: Any = None  # set by the deflate tests once negotiated

    # -- sending
    def send(self, opcode: int, payload: bytes = b"", **options: Any) -> None:
        self.sock.sendall(encode_frame(opcode, payload, **options))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    # -- receiving
    def _fill(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out waiting for the server (have {self.buffer[:100]!r})")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 18)
        except socket.timeout:
            raise AssertionError(f"timed out waiting for the server (have {self.buffer[:100]!r})") from None
        self.buffer += data
        return data

    def _take_until(self, marker: bytes) -> bytes:
        deadline = time.monotonic() + READ_TIMEOUT
        while marker not in self.buffer:
            if not self._fill(deadline):
                raise AssertionError(f"server closed before {marker!r}: {self.buffer!r}")
        end = self.buffer.index(marker) + len(marker)
        data, self.buffer = self.buffer[:end], self.buffer[end:]
        return data

    def _take(self, size: int, deadline: float) -> bytes:
        while len(self.buffer) < size:
            if not self._fill(deadline):
                raise AssertionError(f"server closed mid-frame ({len(self.buffer)} of {size} bytes)")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_frame(self, timeout: float = READ_TIMEOUT) -> Frame:
        deadline = time.monotonic() + timeout
        first, second = self._take(2, deadline)
        assert not second & 0x80, "a server frame must not be masked (RFC 6455 §5.1)"
        size, length_bytes = second & 0x7F, 0
        if size == 126:
            (size,), length_bytes = struct.unpack("!H", self._take(2, deadline)), 2
        elif size == 127:
            (size,), length_bytes = struct.unpack("!Q", self._take(8, deadline)), 8
        return Frame(bool(first & 0x80), (first >> 4) & 7, first & 0x0F, self._take(size, deadline), length_bytes)

    def read_message(self) -> tuple[int, bytes]:
        """The next data message (opcode, payload), reassembled and inflated if compressed."""
        first = self.read_frame()
        assert first.opcode in (TEXT, BINARY), f"expected a data frame, got {first}"
        parts = [first.payload]
        last = first
        while not last.fin:
            last = self.read_frame()
            assert last.opcode == CONT, f"expected a continuation, got {last}"
            parts.append(last.payload)
        payload = b"".join(parts)
        if first.rsv & RSV1:
            assert self.inflater is not None, "compressed frame without negotiated permessage-deflate"
            payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
        else:
            assert first.rsv == 0, f"reserved bits set without an extension: {first}"
        return first.opcode, payload

    def read_close(self) -> Frame:
        """The server's close frame; anything else first is a failure (the server sent it early)."""
        frame = self.read_frame()
        assert frame.opcode == CLOSE, f"expected a close frame, got {frame}"
        return frame

    def wait_tcp_closed(self, timeout: float = READ_TIMEOUT) -> None:
        """The server closes TCP after its close frame: recv() reads EOF (no reset, no more data)."""
        assert self.buffer == b"", f"bytes after the close frame: {self.buffer!r}"
        deadline = time.monotonic() + timeout
        data = self._fill(deadline)
        assert data == b"", f"data after the close frame: {data!r}"

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------- the app under test
class EchoApp:
    """Accepts and echoes text and bytes; records, by path, what each session received and how it ended."""

    def __init__(self) -> None:
        self.recorder = Probe()
        self.received: dict[str, list] = {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        received = self.received.setdefault(scope["path"], [])
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.recorder.mark("disconnect " + scope["path"], message)
                return
            data = message.get("text") if message.get("text") is not None else message["bytes"]
            received.append(data)
            try:  # the peer may be gone already (a close frame behind the message): keep receiving
                await send({"type": "websocket.send", "text" if isinstance(data, str) else "bytes": data})
            except ClientDisconnected:
                pass

    def disconnect_of(self, path: str) -> dict:
        assert self.recorder.wait("disconnect " + path, READ_TIMEOUT), f"the app never saw {path} end"
        return self.recorder.values["disconnect " + path]


class Server:
    """One running Tether with the echo app; opens numbered sessions and checks how they end."""

    def __init__(self, running: Any, app: EchoApp) -> None:
        self.running = running
        self.app = app
        self.clients: list[Client] = []

    def open(self, extra_headers: bytes = b"") -> Client:
        client = Client(self.running.port, f"/case/{next(_case_numbers)}", extra_headers)
        self.clients.append(client)
        assert client.status == 101, client.headers
        assert client.headers.get("sec-websocket-accept") == client.expected_accept
        return client

    def expect_close(self, client: Client, code: int, delivered: Sequence = ()) -> None:
        """The server ends the session: close frame with ``code``, TCP closed, the app told ``code``,
        and the app was given exactly the messages ``delivered`` (nothing from the failing frame on:
        RFC 6455 §7.1.7, no data is processed after _Fail the WebSocket Connection_)."""
        close = client.read_close()
        assert close.code == code, f"close frame {close.payload!r}, expected code {code}"
        client.wait_tcp_closed()
        assert self.app.disconnect_of(client.path)["code"] == code
        assert self.app.received.get(client.path, []) == list(delivered)

    def expect_echo(self, client: Client, opcode: int, payload: bytes) -> None:
        assert client.read_message() == (opcode, payload)

    def close_all(self) -> None:
        for client in self.clients:
            client.close()


def running_server(**options: Any) -> Iterator[Server]:
    app = EchoApp()
    with serve(app, ws_ping_interval=0, **options) as running:  # no server pings among our frames
        server = Server(running, app)
        try:
            yield server
        finally:
            server.close_all()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    yield from running_server()


@pytest.fixture(scope="module")
def limited() -> Iterator[Server]:
    yield from running_server(ws_max_size=LIMIT)


@pytest.fixture(scope="module")
def no_deflate() -> Iterator[Server]:
    yield from running_server(ws_per_message_deflate=False)


# ---------------------------------------------------------------------- 1. framing
SIZES = [0, 125, 126, 65535, 65536, MIB]
SIZE_IDS = ["0", "125", "126", "65535", "65536", "1MiB"]


def length_encoding(size: int) -> int:
    """RFC 6455 §5.2: the minimal number of bytes MUST be used to encode the length."""
    return 0 if size <= 125 else 2 if size <= 0xFFFF else 8


def text_of(size: int) -> bytes:
    """Exactly ``size`` bytes of valid UTF-8 with multi-byte characters in it."""
    return ("é" * (size // 2) + "a" * (size % 2)).encode()


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_1_text_echo(server: Server, size: int) -> None:
    client = server.open()
    client.send(TEXT, text_of(size))
    frame = client.read_frame()
    assert (frame.opcode, frame.fin, frame.rsv, frame.payload) == (TEXT, True, 0, text_of(size))
    assert frame.length_bytes == length_encoding(size)


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_1_binary_echo(server: Server, size: int) -> None:
    client = server.open()
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    client.send(BINARY, payload)
    frame = client.read_frame()
    assert (frame.opcode, frame.fin, frame.rsv, frame.payload) == (BINARY, True, 0, payload)
    assert frame.length_bytes == length_encoding(size)


def test_1_frame_sent_byte_by_byte(server: Server) -> None:
    client = server.open()
    for byte in encode_frame(TEXT, b"one byte at a time"):
        client.send_raw(bytes([byte]))
        time.sleep(0.001)
    server.expect_echo(client, TEXT, b"one byte at a time")


def test_1_many_messages_in_one_segment(server: Server) -> None:
    client = server.open()
    client.send_raw(b"".join(encode_frame(TEXT if i % 2 else BINARY, b"m%d" % i) for i in range(20)))
    for i in range(20):
        server.expect_echo(client, TEXT if i % 2 else BINARY, b"m%d" % i)


def test_1_clean_close_after_echoes(server: Server) -> None:
    client = server.open()
    client.send(TEXT, b"hello")
    server.expect_echo(client, TEXT, b"hello")
    client.send(CLOSE, close_body(1000))
    server.expect_close(client, 1000, ["hello"])  # (echoed 1000, TCP closed, app told 1000)


# ---------------------------------------------------------------------- 2. ping/pong
@pytest.mark.parametrize("payload", [b"", b"ping", bytes(range(125)), b"\xff\x00\xfe"],
                         ids=["empty", "text", "125-bytes", "binary"])
def test_2_ping_answered_with_the_same_payload(server: Server, payload: bytes) -> None:
    client = server.open()
    client.send(PING, payload)
    frame = client.read_frame()
    assert (frame.opcode, frame.fin, frame.payload) == (PONG, True, payload)


def test_2_ping_of_126_bytes_fails_1002(server: Server) -> None:
    client = server.open()
    client.send(PING, b"p" * 126)
    server.expect_close(client, 1002)


def test_2_pong_of_126_bytes_fails_1002(server: Server) -> None:
    client = server.open()
    client.send(PONG, b"p" * 126)
    server.expect_close(client, 1002)


@pytest.mark.parametrize("payload", [b"", b"unsolicited", b"u" * 125], ids=["empty", "text", "125-bytes"])
def test_2_unsolicited_pong_is_ignored(server: Server, payload: bytes) -> None:
    client = server.open()
    client.send(PONG, payload)
    client.send(TEXT, b"still open")
    server.expect_echo(client, TEXT, b"still open")  # no pong back, no close: the echo comes first


def test_2_ping_between_fragments(server: Server) -> None:
    client = server.open()
    client.send(TEXT, b"frag", fin=False)
    client.send(PING, b"in between")
    pong = client.read_frame()
    assert (pong.opcode, pong.payload) == (PONG, b"in between")
    client.send(CONT, b"ment")
    server.expect_echo(client, TEXT, b"fragment")


def test_2_ten_pings_get_ten_pongs_in_order(server: Server) -> None:
    client = server.open()
    client.send_raw(b"".join(encode_frame(PING, b"%d" % i) for i in range(10)))
    assert [client.read_frame().payload for _ in range(10)] == [b"%d" % i for i in range(10)]


def test_2_ping_sent_byte_by_byte(server: Server) -> None:
    client = server.open()
    for byte in encode_frame(PING, b"slow"):
        client.send_raw(bytes([byte]))
        time.sleep(0.001)
    pong = client.read_frame()
    assert (pong.opcode, pong.payload) == (PONG, b"slow")


# ---------------------------------------------------------------------- 3. reserved bits
@pytest.mark.parametrize("rsv", range(1, 8), ids=[f"rsv={r:03b}" for r in range(1, 8)])
def test_3_reserved_bits_on_text(server: Server, rsv: int) -> None:
    client = server.open()
    client.send(TEXT, b"hello", rsv=rsv)
    server.expect_close(client, 1002)


@pytest.mark.parametrize("opcode,payload", [(BINARY, b"\x00\x01"), (PING, b"p"), (PONG, b"p"),
                                            (CLOSE, close_body(1000))], ids=["binary", "ping", "pong", "close"])
@pytest.mark.parametrize("rsv", [RSV1, RSV2, RSV3], ids=["rsv1", "rsv2", "rsv3"])
def test_3_reserved_bits_on_other_frames(server: Server, opcode: int, payload: bytes, rsv: int) -> None:
    client = server.open()
    client.send(opcode, payload, rsv=rsv)
    server.expect_close(client, 1002)


def test_3_reserved_bit_on_a_continuation(server: Server) -> None:
    client = server.open()
    client.send(TEXT, b"first", fin=False)
    client.send(CONT, b"second", rsv=RSV1)
    server.expect_close(client, 1002)


def test_3_reserved_bit_after_a_good_echo(server: Server) -> None:
    client = server.open()
    client.send(TEXT, b"good")
    server.expect_echo(client, TEXT, b"good")
    client.send(TEXT, b"bad", rsv=RSV2)
    server.expect_close(client, 1002, ["good"])


# ---------------------------------------------------------------------- 4. opcodes
RESERVED_OPCODES = [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]


@pytest.mark.parametrize("opcode", RESERVED_OPCODES, ids=[f"op{o:X}" for o in RESERVED_OPCODES])
def test_4_reserved_opcode_fails_1002(server: Server, opcode: int) -> None:
    client = server.open()
    client.send(opcode, b"reserved")
    server.expect_close(client, 1002)


@pytest.mark.parametrize("opcode", [3, 0xB], ids=["op3", "opB"])
def test_4_reserved_opcode_empty_after_a_good_echo(server: Server, opcode: int) -> None:
    client = server.open()
    client.send(TEXT, b"good")
    server.expect_echo(client, TEXT, b"good")
    client.send(opcode)
    server.expect_close(client, 1002, ["good"])


def test_4_reserved_opcode_inside_a_fragmented_message(server: Server) -> None:
    client = server.open()
    client.send(TEXT, b"first", fin=False)
    client.send(5, b"reserved", fin=False)
    server.expect_close(client, 1002)


# ---------------------------------------------------------------------- 5. fragmentation
def fragments(message: bytes, count: int) -> list[bytes]:
    """``message`` cut into ``count`` pieces (some may be empty when count > len)."""
    step = max(1, -(-len(message) // count))
    parts = [message[i * step:(i + 1) * step] for i in range(count)]
    assert b"".join(parts) == message
    return parts


def send_fragmented(client: Client, opcode: int, parts: list[bytes], rsv: int = 0) -> None:
    frames = [encode_frame(opcode if i == 0 else CONT, part, fin=i == len(parts) - 1, rsv=rsv if i == 0 else 0)
              for i, part in enumerate(parts)]
    client.send_raw(b"".join(frames))


@pytest.mark.parametrize("count", [1, 2, 3, 10, 64])
def test_5_text_in_fragments(server: Server, count: int) -> None:
    client = server.open()
    message = "fragmenté en morceaux — 𝄞".encode() * 3
    send_fragmented(client, TEXT, fragments(message, count))
    server.expect_echo(client, TEXT, message)


@pytest.mark.parametrize("count", [2, 3, 10, 100])
def test_5_binary_in_fragments(server: Server, count: int) -> None:
    client = server.open()
    message = bytes(range(256)) * 4
    send_fragmented(client, BINARY, fragments(message, count))
    server.expect_echo(client, BINARY, message)


@pytest.mark.parametrize("parts", [[b"", b"abc"], [b"abc", b""], [b"", b"", b""], [b"a", b"", b"b", b""]],
                         ids=["empty-first", "empty-last", "all-empty", "empty-between"])
def test_5_empty_fragments(server: Server, parts: list[bytes]) -> None:
    client = server.open()
    send_fragmented(client, TEXT, parts)
    server.expect_echo(client, TEXT, b"".join(parts))


def test_5_large_message_in_fragments_of_64k(server: Server) -> None:
    client = server.open()
    message = os.urandom(MIB)
    send_fragmented(client, BINARY, fragments(message, 16))
    server.expect_echo(client, BINARY, message)


def test_5_fragments_with_pings_and_pongs_interleaved(server: Server) -> None:
    client = server.open()
    client.send_raw(
        encode_frame(TEXT, b"a", fin=False) + encode_frame(PING, b"1") + encode_frame(CONT, b"b", fin=False)
        + encode_frame(PONG, b"unsolicited") + encode_frame(PING, b"2") + encode_frame(CONT, b"c")
    )
    pongs = [client.read_frame() for _ in range(2)]
    assert [(f.opcode, f.payload) for f in pongs] == [(PONG, b"1"), (PONG, b"2")]
    server.expect_echo(client, TEXT, b"abc")


def test_5_fragments_sent_frame_by_frame_with_pauses(server: Server) -> None:
    client = server.open()
    for i, part in enumerate([b"slow", b"ly ", b"arriving"]):
        client.send(TEXT if i == 0 else CONT, part, fin=i == 2)
        time.sleep(0.02)
    server.expect_echo(client, TEXT, b"slowly arriving")


@pytest.mark.xfail(strict=True, reason="the websockets library answers a close between fragments with 1002")
def test_5_close_between_fragments_ends_the_session(server: Server) -> None:
    client = server.open()
    client.send(TEXT, b"never finished", fin=False)
    client.send(CLOSE, close_body(1000, b"bye"))
    server.expect_close(client, 1000)  # control frames may come between fragments: a normal close


@pytest.mark.parametrize("fin", [True, False], ids=["fin", "no-fin"])
def test_5_continuation_without_a_start_fails_1002(server: Server, fin: bool) -> None:
    client = server.open()
    client.send(CONT, b"orphan", fin=fin)
    server.expect_close(client, 1002)


def test_5_continuation_after_a_complete_message_fails_1002(server: Server) -> None:
    client = server.open()
    client.send(TEXT, b"complete")
    server.expect_echo(client, TEXT, b"complete")
    client.send(CONT, b"orphan")
    server.expect_close(client, 1002, ["complete"])


@pytest.mark.parametrize("second", [TEXT, BINARY], ids=["then-text", "then-binary"])
@pytest.mark.parametrize("first", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("fin", [True, False], ids=["fin", "no-fin"])
def test_5_new_data_frame_inside_a_fragmented_message_fails_1002(server: Server, first: int, second: int, fin: bool) -> None:
    client = server.open()
    client.send(first, b"started", fin=False)
    client.send(second, b"intruder", fin=fin)
    server.expect_close(client, 1002)


@pytest.mark.parametrize("opcode,payload", [(PING, b"ping"), (PONG, b"pong"), (CLOSE, close_body(1000))],
                         ids=["ping", "pong", "close"])
def test_5_fragmented_control_frame_fails_1002(server: Server, opcode: int, payload: bytes) -> None:
    client = server.open()
    client.send(opcode, payload, fin=False)
    server.expect_close(client, 1002)


def test_5_fragmented_ping_followed_by_continuation_fails_1002(server: Server) -> None:
    client = server.open()
    client.send_raw(encode_frame(PING, b"pi", fin=False) + encode_frame(CONT, b"ng"))
    server.expect_close(client, 1002)


@pytest.mark.parametrize("opcode", [TEXT, PING], ids=["text", "ping"])
def test_5_unmasked_client_frame_fails_1002(server: Server, opcode: int) -> None:
    client = server.open()
    client.send(opcode, b"no mask", masked=False)
    server.expect_close(client, 1002)


def test_5_unmasked_continuation_fails_1002(server: Server) -> None:
    client = server.open()
    client.send(TEXT, b"masked", fin=False)
    client.send(CONT, b"unmasked", masked=False)
    server.expect_close(client, 1002)


# ---------------------------------------------------------------------- 6. UTF-8
VALID_UTF8 = {
    "greek-kosme": "κόσμε",
    "2-byte-first-last": "\u0080\u07ff",
    "3-byte-first-last": "\u0800\uffff",
    "3-byte-around-surrogates": "\ud7ff\ue000",
    "4-byte-first-last": "\U00010000\U0010ffff",
    "4-byte-clef-emoji": "𝄞😀",
    "noncharacters": "\ufffe\ufdd0",
    "mixed-1-to-4-bytes": "aé€𝄞",
}

INVALID_UTF8 = {
    "lone-continuation": b"\x80",
    "overlong-2-byte-slash": b"\xc0\xaf",
    "overlong-2-byte-nul": b"\xc0\x80",
    "overlong-3-byte": b"\xe0\x80\xaf",
    "overlong-3-byte-max": b"\xe0\x9f\xbf",
    "overlong-4-byte": b"\xf0\x80\x80\xaf",
    "surrogate-high": b"\xed\xa0\x80",
    "surrogate-low": b"\xed\xbf\xbf",
    "surrogate-pair": b"\xed\xa0\x80\xed\xb0\x80",
    "above-10FFFF": b"\xf4\x90\x80\x80",
    "lead-F5": b"\xf5\x80\x80\x80",
    "5-byte-sequence": b"\xf8\x88\x80\x80\x80",
    "byte-FE": b"\xfe",
    "byte-FF": b"\xff",
    "truncated-2-byte": b"ab\xc3",
    "truncated-3-byte": b"ab\xe2\x82",
    "truncated-4-byte": b"ab\xf0\x9f\x98",
    "lead-then-ascii": b"\xc3\x41",
    "kosme-then-surrogate": "κόσμε".encode() + b"\xed\xa0\x80edited",
}

# Samples cut into two fragments at every byte position (Autobahn 6.4-style: the bad byte may land
# in the first, non-final fragment, or the message may only turn out bad at its very end).
SPLIT_INVALID = {
    "surrogate": b"a\xed\xa0\x80b",
    "above-10FFFF": b"a\xf4\x90\x80\x80b",
    "overlong": b"x\xe0\x80\xafy",
    "truncated-at-end": b"ab\xf0\x9f\x98",
}
SPLIT_VALID = "aé€𝄞z".encode()


def split_cases(samples: dict[str, bytes]) -> list[Any]:
    return [pytest.param(data, at, id=f"{name}@{at}") for name, data in samples.items() for at in range(1, len(data))]


@pytest.mark.parametrize("text", list(VALID_UTF8.values()), ids=list(VALID_UTF8))
def test_6_valid_utf8_echoed(server: Server, text: str) -> None:
    client = server.open()
    client.send(TEXT, text.encode())
    server.expect_echo(client, TEXT, text.encode())


@pytest.mark.parametrize("at", range(1, len(SPLIT_VALID)))
def test_6_valid_utf8_split_inside_characters(server: Server, at: int) -> None:
    client = server.open()
    send_fragmented(client, TEXT, [SPLIT_VALID[:at], SPLIT_VALID[at:]])
    server.expect_echo(client, TEXT, SPLIT_VALID)


def test_6_valid_utf8_one_byte_per_fragment(server: Server) -> None:
    client = server.open()
    send_fragmented(client, TEXT, [bytes([b]) for b in SPLIT_VALID])
    server.expect_echo(client, TEXT, SPLIT_VALID)


@pytest.mark.parametrize("data", list(INVALID_UTF8.values()), ids=list(INVALID_UTF8))
def test_6_invalid_utf8_fails_1007(server: Server, data: bytes) -> None:
    client = server.open()
    client.send(TEXT, data)
    server.expect_close(client, 1007)


@pytest.mark.parametrize("data,at", split_cases(SPLIT_INVALID))
def test_6_invalid_utf8_split_across_fragments_fails_1007(server: Server, data: bytes, at: int) -> None:
    client = server.open()
    send_fragmented(client, TEXT, [data[:at], data[at:]])
    server.expect_close(client, 1007)


def test_6_invalid_utf8_one_byte_per_fragment_fails_1007(server: Server) -> None:
    client = server.open()
    send_fragmented(client, TEXT, [bytes([b]) for b in INVALID_UTF8["kosme-then-surrogate"]])
    server.expect_close(client, 1007)


def test_6_invalid_utf8_fails_before_the_message_ends(server: Server) -> None:
    client = server.open()
    client.send(TEXT, b"ok so far \xed\xa0\x80", fin=False)  # the rest never comes
    server.expect_close(client, 1007)


@pytest.mark.parametrize("after", [encode_frame(CONT, b"tail"), encode_frame(TEXT, b"next message"),
                                   encode_frame(BINARY, b"next message")], ids=["continuation", "text", "binary"])
def test_6_nothing_after_invalid_utf8_reaches_the_app(server: Server, after: bytes) -> None:
    client = server.open()
    bad = encode_frame(TEXT, b"bad \xed\xa0\x80", fin=after[0] & 0x0F != CONT)
    client.send_raw(bad + after)  # one segment: the server reads both frames at once
    server.expect_close(client, 1007)  # and the app gets neither (RFC 6455 §7.1.7)


@pytest.mark.parametrize("bad", [encode_frame(TEXT, b"x", rsv=RSV2), encode_frame(0xB, b"x"),
                                 encode_frame(CONT, b"x")], ids=["rsv", "opcode", "orphan-continuation"])
def test_6_nothing_after_a_protocol_error_reaches_the_app(server: Server, bad: bytes) -> None:
    client = server.open()
    client.send_raw(bad + encode_frame(TEXT, b"next message"))
    server.expect_close(client, 1002)


def test_6_binary_is_not_utf8_checked(server: Server) -> None:
    client = server.open()
    client.send(BINARY, INVALID_UTF8["surrogate-high"])
    server.expect_echo(client, BINARY, INVALID_UTF8["surrogate-high"])


@pytest.mark.parametrize("reason", [b"\xed\xa0\x80", b"bye \xf0\x9f\x98", b"\xc0\xaf"],
                         ids=["surrogate", "truncated", "overlong"])
def test_6_invalid_utf8_in_close_reason_fails_1007(server: Server, reason: bytes) -> None:
    client = server.open()
    client.send(CLOSE, close_body(1000, reason))
    server.expect_close(client, 1007)


def test_6_multi_byte_close_reason_reaches_the_app(server: Server) -> None:
    client = server.open()
    client.send(CLOSE, close_body(1000, "au revoir 𝄞".encode()))
    close = client.read_close()
    assert close.code == 1000
    client.wait_tcp_closed()
    assert server.app.disconnect_of(client.path) == {"type": "websocket.disconnect", "code": 1000,
                                                     "reason": "au revoir 𝄞"}


# ---------------------------------------------------------------------- 7. close handshake
VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_7_valid_close_code_echoed_and_given_to_the_app(server: Server, code: int) -> None:
    client = server.open()
    client.send(CLOSE, close_body(code, b"reason"))
    close = client.read_close()
    assert close.code == code
    client.wait_tcp_closed()
    assert server.app.disconnect_of(client.path) == {"type": "websocket.disconnect", "code": code, "reason": "reason"}


@pytest.mark.parametrize("code", INVALID_CODES)
def test_7_invalid_close_code_fails_1002(server: Server, code: int) -> None:
    client = server.open()
    client.send(CLOSE, close_body(code))
    server.expect_close(client, 1002)


def test_7_one_byte_close_payload_fails_1002(server: Server) -> None:
    client = server.open()
    client.send(CLOSE, b"\x03")
    server.expect_close(client, 1002)


def test_7_empty_close_is_echoed_and_the_app_sees_1005(server: Server) -> None:
    client = server.open()
    client.send(CLOSE)
    close = client.read_close()
    assert close.payload == b""  # 1005 must not be put on the wire (RFC 6455 §7.4.1)
    client.wait_tcp_closed()
    assert server.app.disconnect_of(client.path)["code"] == 1005


def test_7_close_reason_of_123_bytes(server: Server) -> None:
    client = server.open()
    reason = b"r" * 123  # 125-byte payload: the largest a control frame may carry
    client.send(CLOSE, close_body(1000, reason))
    close = client.read_close()
    assert close.code == 1000
    client.wait_tcp_closed()
    assert server.app.disconnect_of(client.path)["reason"] == reason.decode()


def test_7_close_reason_of_124_bytes_fails_1002(server: Server) -> None:
    client = server.open()
    client.send(CLOSE, close_body(1000, b"r" * 124))  # 126-byte control payload
    server.expect_close(client, 1002)


def test_7_close_after_pending_echoes(server: Server) -> None:
    client = server.open()
    client.send_raw(encode_frame(TEXT, b"one") + encode_frame(BINARY, b"two") + encode_frame(CLOSE, close_body(1001)))
    frames = []
    while not frames or frames[-1].opcode != CLOSE:
        frames.append(client.read_frame())
    data = [(f.opcode, f.payload) for f in frames if f.opcode != CLOSE]
    assert data in ([], [(TEXT, b"one")], [(TEXT, b"one"), (BINARY, b"two")])  # echoes may race the close
    assert frames[-1].code == 1001
    client.wait_tcp_closed()
    assert server.app.disconnect_of(client.path)["code"] == 1001
    assert server.app.received[client.path] == ["one", b"two"]  # queued before the close: still given


# ---------------------------------------------------------------------- 9. limits (ws_max_size)
@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
def test_9_message_of_exactly_max_size_is_echoed(limited: Server, opcode: int) -> None:
    client = limited.open()
    client.send(opcode, b"x" * LIMIT)
    limited.expect_echo(client, opcode, b"x" * LIMIT)


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
def test_9_message_over_max_size_fails_1009(limited: Server, opcode: int) -> None:
    client = limited.open()
    client.send(opcode, b"x" * (LIMIT + 1))
    limited.expect_close(client, 1009)


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
def test_9_fragmented_message_over_max_size_fails_1009(limited: Server, opcode: int) -> None:
    client = limited.open()
    send_fragmented(client, opcode, [b"x" * 300] * 4)  # every fragment is small; the message is not
    limited.expect_close(client, 1009)


def test_9_fragmented_message_of_exactly_max_size_is_echoed(limited: Server) -> None:
    client = limited.open()
    send_fragmented(client, BINARY, [b"y" * 250] * 4)
    limited.expect_echo(client, BINARY, b"y" * LIMIT)


def test_9_declared_length_over_max_size_fails_before_the_payload(limited: Server) -> None:
    client = limited.open()
    header = struct.pack("!BBQ", 0x80 | BINARY, 0x80 | 127, MIB) + os.urandom(4)
    client.send_raw(header + b"only the start")  # the other MiB never comes: the header decides
    limited.expect_close(client, 1009)


def test_9_compressed_message_inflating_over_max_size_fails_1009(limited: Server) -> None:
    client = limited.open(b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
    assert client.headers["sec-websocket-extensions"] == "permessage-deflate"
    payload = raw_deflate(zlib.compressobj(wbits=-15), b"\x00" * (LIMIT * 20))
    assert len(payload) < LIMIT  # small on the wire, too big once inflated
    client.send(BINARY, payload, rsv=RSV1)
    limited.expect_close(client, 1009)


# ---------------------------------------------------------------------- 12/13. permessage-deflate
DEFLATE_OFFERS = {
    "plain": ("permessage-deflate", "permessage-deflate"),
    "client-max-window-bits-no-value": ("permessage-deflate; client_max_window_bits", "permessage-deflate"),
    "client-no-context-takeover": ("permessage-deflate; client_no_context_takeover",
                                   "permessage-deflate; client_no_context_takeover"),
    "server-no-context-takeover": ("permessage-deflate; server_no_context_takeover",
                                   "permessage-deflate; server_no_context_takeover"),
    "server-max-window-bits": ("permessage-deflate; server_max_window_bits=10",
                               "permessage-deflate; server_max_window_bits=10"),
    "client-max-window-bits-9": ("permessage-deflate; client_max_window_bits=9",
                                 "permessage-deflate; client_max_window_bits=9"),
    "unknown-first-then-fallback": ("x-webkit-deflate-frame, permessage-deflate; foo=1, permessage-deflate",
                                    "permessage-deflate"),
}


def deflate_client(server: Server, offer: str = "permessage-deflate") -> Client:
    client = server.open(f"Sec-WebSocket-Extensions: {offer}\r\n".encode())
    assert client.headers.get("sec-websocket-extensions", "").startswith("permessage-deflate")
    client.inflater = zlib.decompressobj(wbits=-15)  # one for the session: the server keeps its context
    return client


def client_window_bits(client: Client) -> int:
    for param in client.headers["sec-websocket-extensions"].split(";"):
        name, _, value = param.strip().partition("=")
        if name == "client_max_window_bits" and value:
            return int(value)
    return 15


@pytest.mark.parametrize("offer,answer", list(DEFLATE_OFFERS.values()), ids=list(DEFLATE_OFFERS))
def test_12_negotiated_and_compressed_both_ways(server: Server, offer: str, answer: str) -> None:
    client = deflate_client(server, offer)
    assert client.headers["sec-websocket-extensions"] == answer
    compressor = zlib.compressobj(wbits=-client_window_bits(client))
    for text in ["compress me " * 50, "again, " * 40 + "κόσμε"]:
        if "client_no_context_takeover" in answer:  # agreed: each message compressed on its own
            compressor = zlib.compressobj(wbits=-client_window_bits(client))
        client.send(TEXT, raw_deflate(compressor, text.encode()), rsv=RSV1)
        frame_opcode, payload = client.read_message()
        assert (frame_opcode, payload) == (TEXT, text.encode())


def test_12_server_compresses_its_messages(server: Server) -> None:
    client = deflate_client(server)
    client.send(BINARY, b"z" * 4000)  # sent uncompressed: allowed on a deflate session
    frame = client.read_frame()
    assert frame.opcode == BINARY and frame.rsv == RSV1 and len(frame.payload) < 4000
    assert client.inflater.decompress(frame.payload + b"\x00\x00\xff\xff") == b"z" * 4000


def test_12_not_offered_when_disabled(no_deflate: Server) -> None:
    client = no_deflate.open(b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
    assert "sec-websocket-extensions" not in client.headers
    client.send(TEXT, b"plain")
    no_deflate.expect_echo(client, TEXT, b"plain")


def test_12_compressed_frame_when_disabled_fails_1002(no_deflate: Server) -> None:
    client = no_deflate.open(b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
    client.send(TEXT, raw_deflate(zlib.compressobj(wbits=-15), b"hello"), rsv=RSV1)
    no_deflate.expect_close(client, 1002)


def test_12_not_negotiated_when_not_offered(server: Server) -> None:
    client = server.open()
    assert "sec-websocket-extensions" not in client.headers
    client.send(TEXT, raw_deflate(zlib.compressobj(wbits=-15), b"hello"), rsv=RSV1)
    server.expect_close(client, 1002)


@pytest.mark.parametrize("size", [0, 1, 1000, 100000])
@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
def test_12_compressed_echo_sizes(server: Server, opcode: int, size: int) -> None:
    client = deflate_client(server)
    message = text_of(size) if opcode == TEXT else os.urandom(size)
    client.send(opcode, raw_deflate(zlib.compressobj(wbits=-15), message), rsv=RSV1)
    assert client.read_message() == (opcode, message)


def test_12_context_takeover_across_messages(server: Server) -> None:
    client = deflate_client(server)
    compressor = zlib.compressobj(wbits=-15)  # later messages refer back to earlier ones
    sentence = b"the same sentence, over and over; "
    for i in range(5):
        client.send(TEXT, raw_deflate(compressor, sentence * (i + 1)), rsv=RSV1)
        assert client.read_message() == (TEXT, sentence * (i + 1))


def test_12_compressed_message_in_fragments(server: Server) -> None:
    client = deflate_client(server)
    message = ("fragmenté et compressé " * 100).encode()
    payload = raw_deflate(zlib.compressobj(wbits=-15), message)
    send_fragmented(client, TEXT, fragments(payload, 5), rsv=RSV1)  # RSV1 on the first frame only
    assert client.read_message() == (TEXT, message)


def test_12_compressed_message_with_ping_between_fragments(server: Server) -> None:
    client = deflate_client(server)
    payload = raw_deflate(zlib.compressobj(wbits=-15), b"ping in the middle")
    half = len(payload) // 2
    client.send(BINARY, payload[:half], fin=False, rsv=RSV1)
    client.send(PING, b"mid")
    pong = client.read_frame()
    assert (pong.opcode, pong.rsv, pong.payload) == (PONG, 0, b"mid")
    client.send(CONT, payload[half:])
    assert client.read_message() == (BINARY, b"ping in the middle")


def test_12_rsv1_on_a_continuation_fails_1002(server: Server) -> None:
    client = deflate_client(server)
    payload = raw_deflate(zlib.compressobj(wbits=-15), b"abcdef" * 10)
    client.send(TEXT, payload[:4], fin=False, rsv=RSV1)
    client.send(CONT, payload[4:], rsv=RSV1)  # RFC 7692 §6.1: RSV1 only on the first frame
    server.expect_close(client, 1002)


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE], ids=["ping", "pong", "close"])
def test_12_rsv1_on_a_control_frame_fails_1002(server: Server, opcode: int) -> None:
    client = deflate_client(server)
    client.send(opcode, close_body(1000) if opcode == CLOSE else b"ctl", rsv=RSV1)
    server.expect_close(client, 1002)


def test_12_rsv2_with_deflate_fails_1002(server: Server) -> None:
    client = deflate_client(server)
    client.send(TEXT, b"plain", rsv=RSV2)
    server.expect_close(client, 1002)


def test_12_undecompressable_payload_fails_1002(server: Server) -> None:
    client = deflate_client(server)
    client.send(BINARY, b"\xff\xff not deflate data", rsv=RSV1)
    server.expect_close(client, 1002)  # RFC 7692 §8.1: fail the connection (websockets: 1002)


def test_12_compressed_invalid_utf8_fails_1007(server: Server) -> None:
    client = deflate_client(server)
    client.send(TEXT, raw_deflate(zlib.compressobj(wbits=-15), b"abc\xed\xa0\x80"), rsv=RSV1)
    server.expect_close(client, 1007)
