"""Keep-alive pings: how a connection notices a peer that vanished without FIN or RST.

HTTP/2 (PING frames, --h2-ping-interval/--h2-ping-timeout) and WebSocket (ping frames,
--ws-ping-interval/--ws-ping-timeout) share the timing: a ping every ``interval`` seconds; with a
``timeout``, the next ping waits for the answer, and no answer within ``timeout`` means the peer
is gone. The protocol supplies how to send a ping and what to do when the answer never comes.
"""

from __future__ import annotations

import os
from typing import Any, Callable


class Pinger:
    __slots__ = ("loop", "interval", "timeout", "payload_size", "send", "on_timeout", "payload", "handle")

    def __init__(self, loop: Any, interval: float, timeout: float, payload_size: int,
                 send: Callable[[bytes], bool], on_timeout: Callable[[], None]) -> None:
        self.loop = loop
        self.interval = interval
        self.timeout = timeout
        self.payload_size = payload_size
        self.send = send  # sends one ping; False when the connection can no longer ping
        self.on_timeout = on_timeout
        self.payload: bytes | None = None  # the ping awaiting its answer
        self.handle: Any = None  # the next ping, or (with a timeout) the deadline of the answer

    def start(self) -> None:
        if self.interval > 0:
            self.handle = self.loop.call_later(self.interval, self._ping)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def answered(self, payload: bytes) -> None:
        """A ping answer (PING ACK, pong) arrived."""
        if self.payload is None or payload != self.payload:
            return  # unsolicited, or an answer to an older ping
        self.payload = None
        if self.timeout > 0 and self.handle is not None:
            self.handle.cancel()
            self.handle = self.loop.call_later(self.interval, self._ping)

    def _ping(self) -> None:
        self.handle = None
        payload = os.urandom(self.payload_size)
        if not self.send(payload):
            return
        self.payload = payload
        if self.timeout > 0:
            self.handle = self.loop.call_later(self.timeout, self._missing)
        else:
            self.handle = self.loop.call_later(self.interval, self._ping)

    def _missing(self) -> None:
        self.handle = None
        self.on_timeout()
