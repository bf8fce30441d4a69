"""A byte-exact WebSocket client over a raw socket, for tests that must send what no library
would (unmasked frames, reserved bits, broken UTF-8, bad close codes, a close between fragments).

The upgrade request and the frames are built by hand (RFC 6455 §5.2; ``frame`` puts no check on
what it is given), the server's frames parsed here. The reads are strict: a control frame where a
message was expected, a frame before the close frame, or bytes after it fail the test. Every read
has a deadline.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any, NamedTuple

from tests.support.sockets import SocketClient

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 4, 2, 1  # the 3-bit rsv field of frame()
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TIMEOUT = 5.0


# ---------------------------------------------------------------------- frames by hand
def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    """One frame, byte for byte as RFC 6455 §5.2 draws it; ``rsv`` is the 3 reserved bits."""
    head = struct.pack("!B", (0x80 if fin else 0) | (rsv << 4) | opcode)
    mask_bit = 0x80 if mask else 0
    size = len(payload)
    if size <= 125:
        head += struct.pack("!B", mask_bit | size)
    elif size <= 0xFFFF:
        head += struct.pack("!BH", mask_bit | 126, size)
    else:
        head += struct.pack("!BQ", mask_bit | 127, size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + apply_mask(payload, key)


def apply_mask(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    stream = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


def deflate(data: bytes, compressor: Any = None) -> bytes:
    """A permessage-deflate payload (RFC 7692 §7.2.1): sync-flushed, the 00 00 ff ff tail removed.
    ``compressor``: one kept across messages (context takeover); by default a fresh one."""
    compressor = compressor or zlib.compressobj(wbits=-15)
    body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert body.endswith(b"\x00\x00\xff\xff")
    return body[:-4]


def inflate(data: bytes) -> bytes:
    """One permessage-deflate payload on its own (no context from earlier messages)."""
    return zlib.decompressobj(wbits=-15).decompress(data + b"\x00\x00\xff\xff")


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes
    length_bytes: int = 0  # 0, 2 or 8: how the server encoded the payload length

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None


class Message(NamedTuple):
    opcode: int
    payload: bytes


# ---------------------------------------------------------------------- the client
class RawWebSocket(SocketClient):
    """The upgrade on a new connection (``status``, ``headers``); then frames both ways."""

    def __init__(self, port: int, path: str = "/", extra_headers: bytes = b"", timeout: float = TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
            + extra_headers + b"\r\n"
        )
        head = self.take_until(b"\r\n\r\n", time.monotonic() + timeout).decode("latin-1")
        status_line, *lines = head.split("\r\n")
        self.status = int(status_line.split(" ")[1])
        self.headers: dict[str, str] = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
        self.expected_accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        self.inflater: Any = None  # set once permessage-deflate is negotiated: one for the session

    # -- sending
    def send_frame(self, opcode: int, payload: bytes = b"", **options: Any) -> None:
        self.sock.sendall(frame(opcode, payload, **options))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    # -- receiving
    def _fill(self, deadline: float) -> bytes:
        """The next bytes (b"" once the server closed); a timeout or a reset fails the test."""
        data = self.receive(deadline)
        if data is None:
            raise AssertionError(f"timed out waiting for the server (have {self.buf[:100]!r})")
        return data

    def read_frame(self, timeout: float | None = None) -> Frame:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        first, second = self.take(2, deadline)
        assert not second & 0x80, "a server frame must not be masked (RFC 6455 §5.1)"
        size, length_bytes = second & 0x7F, 0
        if size == 126:
            (size,), length_bytes = struct.unpack("!H", self.take(2, deadline)), 2
        elif size == 127:
            (size,), length_bytes = struct.unpack("!Q", self.take(8, deadline)), 8
        return Frame(bool(first & 0x80), (first >> 4) & 7, first & 0x0F, self.take(size, deadline), length_bytes)

    def read_message(self) -> Message:
        """The next data message, reassembled and inflated if compressed; it must come next."""
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
        return Message(first.opcode, payload)

    def read_close(self) -> Frame:
        """The server's close frame; anything else first is a failure (the server sent it early)."""
        got = self.read_frame()
        assert got.opcode == CLOSE, f"expected a close frame, got {got}"
        return got

    def wait_tcp_closed(self, timeout: float | None = None) -> None:
        """The server closes TCP after its close frame: recv() reads EOF (no reset, no more data)."""
        assert self.buf == b"", f"bytes after the close frame: {self.buf!r}"
        data = self._fill(time.monotonic() + (self.timeout if timeout is None else timeout))
        assert data == b"", f"data after the close frame: {data!r}"

