"""A byte-exact HTTP/2 client over a raw socket, for tests that send what no library would:
frames are built by hand (RFC 9113 §4.1), header blocks with hpack (or by hand when they must be
invalid), the server's frames parsed with hyperframe. Every read has a deadline."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import hpack
from hyperframe.frame import Frame as _Frame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# Error codes (RFC 9113 §7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, \
    REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM = range(12)
TIMEOUT = 5.0


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def settings(*pairs: tuple[int, int], ack: bool = False) -> bytes:
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment))


def rst(stream: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, stream, struct.pack(">I", code))


def ping(payload: bytes = b"12345678", ack: bool = False, stream: int = 0) -> bytes:
    return frame(PING, ACK if ack else 0, stream, payload)


def request_headers(path: str = "/", method: str = "GET", extra: list | None = None, authority: str = "127.0.0.1") -> list:
    return [(":method", method), (":scheme", "http"), (":path", path), (":authority", authority), *(extra or [])]


async def body_echo_app(scope: dict, receive: Any, send: Any) -> None:
    """The app the raw-frame corpora talk to: 200 with the request body echoed ("ok" without
    one); /slow answers after 1 s."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body or b"ok"})


@dataclass
class Event:
    kind: int
    flags: int
    stream: int
    payload: bytes

    @property
    def error_code(self) -> int | None:
        if self.kind == GOAWAY:
            return struct.unpack(">I", self.payload[4:8])[0]
        if self.kind == RST_STREAM:
            return struct.unpack(">I", self.payload[:4])[0]
        return None


class RawH2:
    """A connection after the preface exchange: our SETTINGS sent, the server's read and ACKed."""

    def __init__(self, port: int, our_settings: tuple = ()) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.closed = False
        self.sock.sendall(PREFACE + settings(*our_settings))
        first = self.read_frame()
        assert first is not None and first.kind == SETTINGS and not first.flags & ACK, first
        self.server_settings = {struct.unpack(">H", first.payload[i:i + 2])[0]: struct.unpack(">I", first.payload[i + 2:i + 6])[0]
                                for i in range(0, len(first.payload), 6)}
        self.sock.sendall(settings(ack=True))
        self.pending: list[Event] = []

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True

    def block(self, headers: list) -> bytes:
        return self.encoder.encode(headers)

    def headers(self, stream: int, headers: list, end_stream: bool = True, flags: int = END_HEADERS) -> bytes:
        return frame(HEADERS, flags | (END_STREAM if end_stream else 0), stream, self.block(headers))

    def request(self, stream: int, path: str = "/", end_stream: bool = True, **kwargs: object) -> None:
        self.send(self.headers(stream, request_headers(path, **kwargs), end_stream))  # type: ignore[arg-type]

    def _fill(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        except (ConnectionResetError, OSError):
            data = b""
        if not data:
            self.closed = True
            return False
        self.buf += data
        return True

    def read_frame(self, timeout: float = TIMEOUT) -> Event | None:
        """The next frame, or None on timeout or close (``self.closed`` tells which)."""
        deadline = time.monotonic() + timeout
        while len(self.buf) < 9:
            if self.closed or not self._fill(deadline):
                return None
        header, length = _Frame.parse_frame_header(memoryview(self.buf[:9]))
        while len(self.buf) < 9 + length:
            if self.closed or not self._fill(deadline):
                return None
        payload, self.buf = self.buf[9:9 + length], self.buf[9 + length:]
        return Event(_TYPES.get(type(header).__name__, 0xFF), _flag_bits(header), header.stream_id, payload)

    def outcome(self, stream: int | None = None, timeout: float = 3.0) -> tuple:
        """What the server did: ("goaway", code), ("rst", code) on ``stream``, ("response", status)
        on ``stream``, ("closed",) without GOAWAY, or ("nothing",) within the timeout. PINGs are
        answered, other frames skipped."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.read_frame(max(0.0, deadline - time.monotonic()))
            if event is None:
                return ("closed",) if self.closed else ("nothing",)
            if event.kind == GOAWAY:
                return ("goaway", event.error_code)
            if event.kind == RST_STREAM and (stream is None or event.stream == stream):
                return ("rst", event.error_code)
            if event.kind == HEADERS and (stream is None or event.stream == stream):
                headers = dict(self.decoder.decode(event.payload, raw=True)) if event.flags & END_HEADERS else {}
                return ("response", int(headers.get(b":status", b"0")))
            if event.kind == PING and not event.flags & ACK:
                self.send(ping(event.payload, ack=True))

    def still_serves(self, stream: int) -> bool:
        """A fresh request on ``stream`` gets a 200 (the connection survived)."""
        self.request(stream)
        return self.outcome(stream) == ("response", 200)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawH2":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_TYPES = {"DataFrame": DATA, "HeadersFrame": HEADERS, "PriorityFrame": PRIORITY, "RstStreamFrame": RST_STREAM,
          "SettingsFrame": SETTINGS, "PushPromiseFrame": PUSH_PROMISE, "PingFrame": PING, "GoAwayFrame": GOAWAY,
          "WindowUpdateFrame": WINDOW_UPDATE, "ContinuationFrame": CONTINUATION, "ExtensionFrame": 0xFF}


def _flag_bits(header: _Frame) -> int:
    names = {"END_STREAM": 0x1, "ACK": 0x1, "END_HEADERS": 0x4, "PADDED": 0x8, "PRIORITY": 0x20}
    return sum(bit for name, bit in names.items() if name in header.flags)
