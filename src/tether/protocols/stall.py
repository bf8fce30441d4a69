"""The writing side shared by the protocols: back-pressure and write-stall detection.

``WritePause`` is what every connection does as a writer (after asyncio's ``FlowControlMixin``):
the transport pauses and resumes it. ``WriteFlowControl`` adds ``drain()``, where ``send()``
waits on HTTP/1.1 and WebSocket (HTTP/2 streams wait on their own window, H2Stream.drain), and
``wake_all`` releases the waiters, with an error when the peer is gone.

A client that stops reading leaves our response in the transport's buffer: ``send()`` then
waits in ``drain()``. That is fine while the buffer keeps shrinking; when it has not shrunk for
``--timeout-write`` seconds the peer is treated as gone, so the app's ``send()`` raises instead of
waiting forever. The check runs from the once-a-second sweep, so it costs nothing per write.
"""

from __future__ import annotations

from typing import Any

from ..errors import ClientDisconnected

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


def wake_all(waiters: list, exc: BaseException | None = None) -> None:
    """Release every future in ``waiters`` (a send() waiting in drain()): with ``exc`` raised in
    it when the peer is gone, normally otherwise."""
    for waiter in waiters:
        if not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)


class WritePause:
    """pause_writing/resume_writing, as the transport calls them: ``write_paused`` and the
    stall clock follow, and ``writable()`` runs when the transport has room again. The class
    using it has ``loop``, ``write_paused`` and a ``WriteStall`` as ``stall``."""

    __slots__ = ()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.stall.paused(self.loop.time())

    def resume_writing(self) -> None:
        self.write_paused = False
        self.stall.resumed()
        self.writable()

    def writable(self) -> None:
        raise NotImplementedError


class WriteFlowControl(WritePause):
    """WritePause for a connection whose send() waits on its transport in ``drain()``. The
    class using it also has ``closed`` and ``drain_waiters``, and names the peer in
    ``gone_message``."""

    __slots__ = ()
    gone_message = "the client has disconnected"

    def writable(self) -> None:
        waiters, self.drain_waiters = self.drain_waiters, []
        wake_all(waiters)

    async def drain(self) -> None:
        if self.closed:
            raise ClientDisconnected(self.gone_message)
        waiter = self.loop.create_future()
        self.drain_waiters.append(waiter)
        await waiter
