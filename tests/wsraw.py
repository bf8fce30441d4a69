"""A byte-exact WebSocket client over a raw socket, for tests that must send what no library
would (unmasked frames, reserved bits, broken UTF-8, bad close codes). Frames are built by hand
(RFC 6455 §5.2); every read has a deadline."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
import zlib
from dataclasses import dataclass

TIMEOUT = 10.0
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    """One frame; ``rsv`` is the 3 reserved bits (RSV1 = 4, RSV2 = 2, RSV3 = 1)."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _xor(payload, key)


def _xor(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(data), "big")


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


def deflate(data: bytes) -> bytes:
    """permessage-deflate body of one message (RFC 7692 §7.2.1: the final 00 00 ff ff removed)."""
    compressor = zlib.compressobj(wbits=-15)
    body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert body.endswith(b"\x00\x00\xff\xff")
    return body[:-4]


def inflate(data: bytes) -> bytes:
    return zlib.decompressobj(wbits=-15).decompress(data + b"\x00\x00\xff\xff")


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None


class RawWebSocket:
    def __init__(self, port: int, path: str = "/", extra: bytes = b"", timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
        )
        self.head = self._read_until(b"\r\n\r\n", timeout)
        self.status = int(self.head.split(b" ", 2)[1])

    def header(self, name: str) -> str | None:
        for line in self.head.decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kwargs: object) -> None:
        self.sock.sendall(frame(opcode, payload, **kwargs))  # type: ignore[arg-type]

    def _fill(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for the server; have {self.buf[:200]!r}")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            raise AssertionError(f"timed out waiting for the server; have {self.buf[:200]!r}") from None
        except ConnectionResetError:
            data = b""
        if not data:
            return False
        self.buf += data
        return True

    def _read_until(self, marker: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            if not self._fill(deadline):
                raise AssertionError(f"closed before {marker!r}: {self.buf[:200]!r}")
        index = self.buf.index(marker) + len(marker)
        data, self.buf = self.buf[:index], self.buf[index:]
        return data

    def _need(self, size: int, deadline: float) -> bytes:
        while len(self.buf) < size:
            if not self._fill(deadline):
                raise AssertionError(f"connection closed mid-frame ({len(self.buf)} of {size} bytes)")
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def read_frame(self, timeout: float = TIMEOUT) -> Frame:
        deadline = time.monotonic() + timeout
        b0, b1 = self._need(2, deadline)
        assert not b1 & 0x80, "the server masked a frame"
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._need(2, deadline))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._need(8, deadline))[0]
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, self._need(length, deadline))

    def read_message(self, timeout: float = TIMEOUT) -> Frame:
        """The next data message, reassembled (control frames before it are skipped)."""
        first = self.read_frame(timeout)
        while first.opcode in (PING, PONG):
            first = self.read_frame(timeout)
        payload = first.payload
        while not first.fin:
            part = self.read_frame(timeout)
            if part.opcode in (PING, PONG):
                continue
            assert part.opcode == CONT, part
            payload += part.payload
            first.fin = part.fin
        return Frame(True, first.rsv, first.opcode, payload)

    def read_close(self, timeout: float = TIMEOUT) -> Frame:
        """The server's close frame (data frames and pongs before it are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.read_frame(max(0.01, deadline - time.monotonic()))
            if got.opcode == CLOSE:
                return got

    def closed_by_server(self, timeout: float = TIMEOUT) -> bool:
        """True once the server has closed TCP (EOF or reset) after whatever it still sends."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            self.buf = b""
        return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawWebSocket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
