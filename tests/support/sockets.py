"""What every raw test client shares: one socket, a buffer of what the server sent, bounded reads.

A client decides what a timeout and a reset mean for it (``_fill``: more bytes came, or the
server closed); ``take_until`` and ``take`` consume the buffer on top of that.
"""

from __future__ import annotations

import socket
import time
from typing import TypeVar

Client = TypeVar("Client", bound="SocketClient")


class SocketClient:
    sock: socket.socket
    buf: bytes

    def receive(self, deadline: float) -> bytes | None:
        """One read into ``buf``: the bytes read, b"" once the server has closed, None when the
        deadline passes first. A reset raises ConnectionResetError."""
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 18)
        except socket.timeout:
            return None
        self.buf += data
        return data

    def _fill(self, deadline: float) -> bool | bytes:
        """More bytes came (truthy) or the server closed (falsy); the client's own policy."""
        raise NotImplementedError

    def take_until(self, marker: bytes, deadline: float) -> bytes:
        """Everything up to and including ``marker`` (consumed)."""
        while marker not in self.buf:
            if not self._fill(deadline):
                raise AssertionError(f"connection closed before {marker!r}; have {self.buf[:300]!r}")
        end = self.buf.index(marker) + len(marker)
        data, self.buf = self.buf[:end], self.buf[end:]
        return data

    def take(self, size: int, deadline: float) -> bytes:
        """Exactly ``size`` bytes (consumed)."""
        while len(self.buf) < size:
            if not self._fill(deadline):
                raise AssertionError(f"connection closed after {len(self.buf)} of {size} bytes")
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def close(self) -> None:
        self.sock.close()

    def __enter__(self: Client) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
