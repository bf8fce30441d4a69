"""Write-stall detection shared by the protocols (--timeout-write).

A client that stops reading leaves our response in the transport's buffer: ``send()`` then
waits in ``drain()``. That is fine while the buffer keeps shrinking; when it has not shrunk for
``--timeout-write`` seconds the peer is treated as gone, so the app's ``send()`` raises instead of
waiting forever. The check runs from the once-a-second sweep, so it costs nothing per write.
"""

from __future__ import annotations

from typing import Any

# The transports' high-water mark: send() returns only once the kernel has the bytes. Not 0:
# TLS transports pause the writer when their buffer is >= the mark, so 0 would pause after every
# write, even with nothing left to send, and a client that only reads would never resume it.
# Plain TCP transports pause at > the mark: 1 byte is as good as 0 there.
WRITE_HIGH_WATER = 1


class WriteStall:
    __slots__ = ("since", "left")

    def __init__(self) -> None:
        self.since = 0.0  # when the buffer last shrank (0: not waiting on the peer)
        self.left = 0

    def paused(self, now: float) -> None:
        self.since = now
        self.left = 1 << 62

    def resumed(self) -> None:
        self.since = 0.0

    def expired(self, transport: Any, now: float, timeout: float) -> bool:
        """True when the buffer has not shrunk for ``timeout`` seconds."""
        if not self.since or not timeout:
            return False
        left = transport.get_write_buffer_size()
        if left < self.left:
            self.left, self.since = left, now
            return False
        return now - self.since > timeout
