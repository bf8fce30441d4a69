"""The WebSocket "limit" reference: a bare uvloop protocol that answers the handshake and echoes
text frames, no ASGI at all. Its rate shows what bench/ws_load.py can drive on this machine
(the client must not be the bottleneck) and the ceiling for a Python server."""

import asyncio
import base64
import hashlib
import sys

import uvloop

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = bytearray()
        self.open = False

    def data_received(self, data):
        self.buf += data
        if not self.open:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[:end + 4]
            key = next(line.split(":", 1)[1].strip() for line in head.split("\r\n")
                       if line.lower().startswith("sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest())
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            self.open = True
        buf = self.buf
        out = []
        pos = 0
        while len(buf) - pos >= 6:
            length = buf[pos + 1] & 0x7F  # (small frames only: that is all the client sends)
            if len(buf) - pos < 6 + length:
                break
            mask = buf[pos + 2:pos + 6]
            masked = bytes(buf[pos + 6:pos + 6 + length])
            key = (bytes(mask) * (length // 4 + 1))[:length]
            payload = (int.from_bytes(masked, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
            out.append(bytes([buf[pos], length]) + payload)
            pos += 6 + length
        del buf[:pos]
        if out:
            self.transport.write(b"".join(out))


async def main(port):
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port, backlog=2048)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
