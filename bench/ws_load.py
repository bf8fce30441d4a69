"""The WebSocket echo load generator for bench/ws.py: N connections, each keeping one small
text message in flight (send, wait for the echo, send again) for a given time.

    python bench/ws_load.py PORT CONNECTIONS SECONDS [SIZE]

Prints one JSON line: {"messages": total echoes received in the measured window, "errors": ...}.
Frames are pre-built and masked once (a fixed mask is fine for a benchmark); the server's
unmasked replies are parsed just enough to count them, so one client core drives far more
than any Python server answers (checked against bench/ws_ceiling.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]

MASK = b"\x11\x22\x33\x44"


def masked_frame(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + MASK + body


def handshake(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (port, key))


def split_frames(buf: bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """Complete frames at the start of buf as (opcode, payload), and how many bytes they used."""
    frames = []
    pos = 0
    size = len(buf)
    while size - pos >= 2:
        length = buf[pos + 1] & 0x7F
        head = 2
        if length == 126:
            if size - pos < 4:
                break
            length = int.from_bytes(buf[pos + 2:pos + 4], "big")
            head = 4
        elif length == 127:
            if size - pos < 10:
                break
            length = int.from_bytes(buf[pos + 2:pos + 10], "big")
            head = 10
        if size - pos < head + length:
            break
        frames.append((buf[pos] & 0x0F, bytes(buf[pos + head:pos + head + length])))
        pos += head + length
    return frames, pos


class EchoClient(asyncio.Protocol):
    def __init__(self, port: int, message: bytes, stats: dict) -> None:
        self.port = port
        self.frame = masked_frame(0x1, message)
        self.stats = stats
        self.buf = bytearray()
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(handshake(self.port))  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.open:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self.stats["errors"] += 1
                self.transport.close()  # type: ignore[union-attr]
                return
            del self.buf[:end + 4]
            self.open = True
            self.stats["open"] += 1
            self.transport.write(self.frame)  # type: ignore[union-attr]
        frames, used = split_frames(self.buf)
        if used:
            del self.buf[:used]
        for opcode, payload in frames:
            if opcode == 0x9:  # ping: answer it
                self.transport.write(masked_frame(0xA, payload))  # type: ignore[union-attr]
            elif opcode in (0x1, 0x2):
                self.stats["messages"] += 1
                self.transport.write(self.frame)  # type: ignore[union-attr]
            elif opcode == 0x8:
                self.stats["errors"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats["lost"] += 1


async def run(port: int, connections: int, seconds: float, size: int) -> dict:
    loop = asyncio.get_running_loop()
    stats = {"messages": 0, "errors": 0, "open": 0, "lost": 0}
    message = b"m" * size
    transports = []
    for _ in range(connections):
        transport, _ = await loop.create_connection(lambda: EchoClient(port, message, stats), "127.0.0.1", port)
        transports.append(transport)
    deadline = time.monotonic() + 10
    while stats["open"] + stats["errors"] < connections and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)  # warm: every connection echoing
    start_count, started = stats["messages"], time.monotonic()
    await asyncio.sleep(seconds)
    counted, elapsed = stats["messages"] - start_count, time.monotonic() - started
    for transport in transports:
        transport.close()
    return {"messages": counted, "seconds": elapsed, "rate": counted / elapsed, "errors": stats["errors"],
            "open": stats["open"], "lost_early": stats["lost"]}


def main(argv: list[str]) -> int:
    port, connections, seconds = int(argv[0]), int(argv[1]), float(argv[2])
    size = int(argv[3]) if len(argv) > 3 else 32
    runner = uvloop.run if uvloop is not None else asyncio.run
    print(json.dumps(runner(run(port, connections, seconds, size))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
