"""The ASGI side of one WebSocket session: receive/send for the ``websocket`` scope.

The wire side (frames, handshake bytes, pings, the close handshake) is
``protocols/websocket.py``; this module decides what the application is told and when, on the
same ``Cycle`` base as HTTP requests, so the disconnect signal, the ``tether.disconnect``
extension and ``--on-disconnect cancel`` behave exactly as they do for HTTP.

The session's states, as the app sees them:

* HANDSHAKE: the app has been called and has not answered yet. It may send
  ``websocket.accept`` (-> OPEN), ``websocket.close`` (-> 403, CLOSED), or start an HTTP
  response with the ``websocket.http.response`` extension (-> RESPONDING).
* OPEN: messages both ways; ``websocket.close`` from the app -> CLOSED.
* RESPONDING: the denial response's body is being streamed; its last part -> CLOSED.
* CLOSED: the app has ended the session; nothing more may be sent.

Independently, the session may end from the other side at any moment: ``peer_left(code,
reason, clean)``. From then on ``receive()`` returns ``websocket.disconnect`` with that code once
the messages already received are consumed, the extension's signal is set, and ``send()`` raises
``ClientDisconnected``. How it ended decides the rest:

* *clean*: the peer's close frame (a browser closing its tab sends 1001), or the server's own
  1012 at shutdown. This is how a WebSocket session ends normally, as a complete response ends
  an HTTP request: what the app does next (its cleanup after ``websocket.disconnect``) is not
  abandoned work, is not counted as a disconnect, and ``--on-disconnect cancel`` leaves it alone.
* otherwise the peer *vanished* (FIN or RST without a close frame, a ping timeout, a protocol
  error it made): the app's work is abandoned from then on, counted, logged with the abandoned
  time, and under ``--on-disconnect cancel`` cancelled, as for HTTP.
"""

from __future__ import annotations

import collections
from typing import Any

from ..errors import ClientDisconnected
from ..logs import error_logger
from .base import Cycle

HANDSHAKE, OPEN, RESPONDING, CLOSED = range(4)
_STATE_NAMES = ("before 'websocket.accept'", "on an open WebSocket", "while sending the HTTP response",
                "after the WebSocket was closed")
_DATA_TYPES = (bytes, bytearray, memoryview)


class WebSocketCycle(Cycle):
    """One WebSocket session. The protocol uses it only as contract.WebSocketCycle says."""

    __slots__ = ("state", "queue", "connect_delivered", "close_code", "close_reason", "status", "bytes_sent",
                 "ended_cleanly")

    def __init__(self, scope: dict, conn: Any) -> None:
        Cycle.__init__(self, scope, conn)
        self.state = HANDSHAKE
        self.queue: collections.deque = collections.deque()
        self.connect_delivered = False
        self.close_code = 1006
        self.close_reason = ""
        self.status = 0  # what the handshake was answered with: 101, 403, 500 or the app's status
        self.bytes_sent = 0
        self.ended_cleanly = False  # a close frame (or our shutdown) ended it: nothing is abandoned

    # ------------------------------------------------------------------ named queries (contract)
    @property
    def session_open(self) -> bool:
        return self.state == OPEN

    @property
    def session_closed(self) -> bool:
        return self.state == CLOSED

    # ------------------------------------------------------------------ Cycle's questions
    def work_finished(self) -> bool:
        return self.state == CLOSED or self.ended_cleanly

    def abandon_phase(self) -> str:
        return "websocket"

    def describe(self) -> str:
        return f"WebSocket {self.target()}"

    # ------------------------------------------------------------------ protocol -> cycle
    def deliver(self, message: dict) -> int:
        queue = self.queue
        queue.append(message)
        if self.waiters:
            self._wake()
        return len(queue)

    def peer_left(self, code: int, reason: str = "", clean: bool = False) -> None:
        """The session ended from the other side: ``clean`` for a close frame (or the server's
        shutdown), not for a peer that vanished. Idempotent."""
        if self.client_left:
            return
        if self.state != CLOSED:
            self.close_code, self.close_reason = int(code), reason  # (websockets gives an IntEnum)
        self.ended_cleanly = clean
        self.client_gone()

    # ------------------------------------------------------------------ ASGI receive
    async def receive(self) -> dict:
        while True:
            if not self.connect_delivered:
                self.connect_delivered = True
                return {"type": "websocket.connect"}
            if self.queue and self.state != CLOSED:
                message = self.queue.popleft()
                self.conn.message_consumed(len(self.queue))
                return message
            if self.client_left or self.state == CLOSED:
                return {"type": "websocket.disconnect", "code": self.close_code, "reason": self.close_reason}
            await self._wait()

    # ------------------------------------------------------------------ ASGI send
    async def send(self, message: dict) -> None:
        if self.client_left:
            raise ClientDisconnected("the WebSocket client has disconnected")
        mtype = message["type"]
        handler = _SEND.get((mtype, self.state))
        if handler is None:
            raise RuntimeError(f"Unexpected ASGI message {mtype!r} sent {_STATE_NAMES[self.state]}")
        handler(self, message)
        if self.conn.write_paused:
            try:
                await self.conn.drain()
            except ClientDisconnected:
                self.peer_left(1006)
                raise

    # The messages the app may send, by (type, session state): each moves the session on.
    def _send_message(self, message: dict) -> None:
        text = message.get("text")
        data = message.get("bytes")
        if (text is None) == (data is None):
            raise RuntimeError("'websocket.send' needs exactly one of 'text' and 'bytes'")
        if text is not None:
            if type(text) is not str:
                raise RuntimeError(f"'text' in 'websocket.send' must be str, not {type(text).__name__}")
            self.bytes_sent += self.conn.send_text(text)
        else:
            if not isinstance(data, _DATA_TYPES):
                raise RuntimeError(f"'bytes' in 'websocket.send' must be bytes, not {type(data).__name__}")
            self.bytes_sent += self.conn.send_bytes(data)

    def _close(self, message: dict) -> None:
        code = message.get("code")
        code = 1000 if code is None else code
        reason = message.get("reason") or ""
        if type(code) is not int or type(reason) is not str:
            raise RuntimeError("'code' in 'websocket.close' must be an int and 'reason' a str")
        handshake = self.state == HANDSHAKE
        self.state = CLOSED
        self.close_code, self.close_reason = code, reason
        if handshake:  # a close before accept refuses the handshake
            self.status = 403
            self.conn.deny(403)
        else:
            self.conn.close(code, reason)
        if self.waiters:
            self._wake()

    def _accept(self, message: dict) -> None:
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and type(subprotocol) is not str:
            raise RuntimeError("'subprotocol' in 'websocket.accept' must be a str or None")
        self.conn.accept(subprotocol, message.get("headers") or ())
        self.state = OPEN
        self.status = 101

    def _respond(self, message: dict) -> None:
        status = message["status"]
        if type(status) is not int or not 100 <= status <= 599 or status == 101:
            raise RuntimeError(f"'status' in 'websocket.http.response.start' must be an int from 100 to 599 other than 101, not {status!r}")
        self.conn.start_response(status, message.get("headers") or ())
        self.state = RESPONDING
        self.status = status

    def _respond_body(self, message: dict) -> None:
        body = message.get("body", b"")
        if not isinstance(body, _DATA_TYPES):
            raise RuntimeError(f"'body' in 'websocket.http.response.body' must be bytes, not {type(body).__name__}")
        more = bool(message.get("more_body", False))
        self.conn.send_response_body(bytes(body), more)
        self.bytes_sent += len(body)
        if not more:
            self.state = CLOSED
            self.close_code = 1000
            if self.waiters:
                self._wake()

    # ------------------------------------------------------------------ the app's end
    def fail(self) -> None:
        self._end_session(500, 1011)

    def app_returned(self) -> None:
        if self.state == HANDSHAKE:
            error_logger.error("ASGI callable returned without accepting or closing the WebSocket (%s)", self.describe())
        elif self.state == RESPONDING:
            error_logger.error("ASGI callable returned without completing the HTTP response (%s)", self.describe())
        self._end_session(500, 1000)

    def _end_session(self, status: int, code: int) -> None:
        """The app is finished: whatever state it left the session in, end it properly."""
        state, self.state = self.state, CLOSED
        if state == HANDSHAKE:
            self.status = status
            self.conn.deny(status)
        elif state == OPEN:
            self.close_code = code
            self.conn.close(code, "")
        elif state == RESPONDING:
            self.conn.abort()

    # ------------------------------------------------------------------ the access log
    def log_end(self, abandoned: float | None) -> None:
        """One access line per session, when the app is done with it."""
        if self.status == 101:
            note = f" websocket closed {self.close_code}"
            if abandoned is not None:
                note += self.abandoned_note(abandoned)
        else:
            note = " websocket denied"
        self.log_access(self.status or 1006, self.bytes_sent, note)


_SEND = {
    ("websocket.send", OPEN): WebSocketCycle._send_message,
    ("websocket.close", HANDSHAKE): WebSocketCycle._close,
    ("websocket.close", OPEN): WebSocketCycle._close,
    ("websocket.accept", HANDSHAKE): WebSocketCycle._accept,
    ("websocket.http.response.start", HANDSHAKE): WebSocketCycle._respond,
    ("websocket.http.response.body", RESPONDING): WebSocketCycle._respond_body,
}
