"""The contract between the wire protocols and the request cycle, both ways, declared.

A wire protocol (protocols/http1.py, http2.py, websocket.py) turns bytes into calls on a cycle
and puts on the wire what the cycle hands it; the cycle (this package) decides what the
application is told, and when. Neither reads the other's internals: this module lists
everything each side may use, as ``typing.Protocol`` classes, and nothing else is used.

    protocol  --(HTTPCycle / WebSocketCycle calls: body, end, client gone, ...)-->  cycle
    cycle     --(HTTPWire / WebSocketWire calls: head, body, trailers, drain, ...)-->  protocol
    cycle     --(Worker: the app, limits, policies, in-flight bookkeeping)-->  server state

One object per protocol stands for the connection as the cycle sees it: HTTP1Protocol for an
HTTP/1.1 connection (one cycle at a time, pipelined ones queued), H2Stream for each HTTP/2
stream, WebSocketProtocol for a WebSocket session. The cycle's own states stay private to it;
a protocol asks named questions (``response_started``, ``response_done``, ``session_closed``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Protocol


class Worker(Protocol):
    """What a cycle needs from the worker serving it (server/state.ServerState)."""

    app: Callable
    loop: asyncio.AbstractEventLoop
    tasks: set  # the app tasks in flight (graceful shutdown waits for them)
    in_flight: int
    limit_concurrency: int | None
    cancel_on_disconnect: bool
    disconnect_grace: float
    timeout_request: float | None  # the default deadline of a request (--timeout-request)
    tracks_work: bool  # a cancel or a deadline may stop work: record the tasks requests start
    access_log_format: str

    def request_counted(self) -> None:
        """One more response completed (--limit-max-requests counts these)."""


class Wire(Protocol):
    """What every cycle calls on its connection."""

    settings: Worker
    loop: asyncio.AbstractEventLoop

    @property
    def write_paused(self) -> bool:
        """True while what send() handed over has not all reached the kernel."""

    async def drain(self) -> None:
        """Return once it has; raise ClientDisconnected if the peer went away first."""

    def app_finished(self, cycle: Any) -> None:
        """The app task of ``cycle`` ended (returned, raised or was cancelled)."""


class HTTPWire(Wire, Protocol):
    """What a RequestCycle calls on the connection (or HTTP/2 stream) it answers on.

    ``send_*`` raise RuntimeError for what the protocol cannot put on the wire (bad headers, a
    body longer than its Content-Length) and ClientDisconnected when the peer is gone; the cycle
    moves its state on only once a message was accepted.
    """

    def supports_trailers(self, cycle: Any) -> bool: ...

    def send_continue(self) -> None:
        """Expect: 100-continue: the app started reading the body."""

    def send_head(self, cycle: Any, status: int, headers: Any, body: bytes, more: bool) -> None:
        """The response head with the first body part (``more``: further parts or trailers follow)."""

    def send_body(self, cycle: Any, body: bytes, more: bool) -> None: ...

    def send_trailers(self, cycle: Any, headers: Any, more: bool) -> None: ...

    async def send_file(self, cycle: Any, status: int, headers: Any, path: str) -> None:
        """http.response.pathsend: the head and the whole file."""

    def send_error(self, cycle: Any, status: int) -> None:
        """A complete plain error response (500 for an app that failed before answering, 504
        for a request whose deadline passed)."""

    def abort_response(self, cycle: Any) -> None:
        """End a response that started but cannot complete (connection close, stream reset)."""

    def body_consumed(self) -> None:
        """The app took the body received so far: read on (HTTP/1.1) or grant window (HTTP/2)."""

    def response_complete(self, cycle: Any) -> None:
        """The final message was accepted: the wire may move on (the next pipelined request)."""


class WebSocketWire(Wire, Protocol):
    """What a WebSocketCycle calls on its connection."""

    def message_consumed(self, queued: int) -> None:
        """The app took a message; ``queued`` are left (reading resumes below --ws-max-queue)."""

    def accept(self, subprotocol: str | None, headers: Any) -> None: ...

    def send_text(self, text: str) -> int:
        """Returns the bytes sent (for the access log)."""

    def send_bytes(self, data: Any) -> int: ...

    def close(self, code: int, reason: str) -> None: ...

    def deny(self, status: int) -> None:
        """Refuse the handshake with a plain HTTP response (403, 500)."""

    def start_response(self, status: int, headers: Any) -> None:
        """The websocket.http.response extension: the app answers the handshake with HTTP."""

    def send_response_body(self, body: bytes, more: bool) -> None: ...

    def abort(self) -> None: ...


class HTTPCycle(Protocol):
    """What a protocol may call and ask on the RequestCycle of a request it carries."""

    client_left: bool  # the client is gone (set by client_gone)
    app_done: bool  # the app task has ended
    status: int  # the response status the app chose (0 before http.response.start)
    trailers: bool  # the response ends with trailers (http.response.trailers)
    expect_100: bool  # the client waits for 100 Continue before sending the body

    @property
    def response_started(self) -> bool:
        """Something of the response reached the protocol (an error answer is too late now)."""

    response_done: bool  # the response is complete: what the app does now is not abandoned work

    def start_request(self) -> None:
        """Run the app (or answer 503 past --limit-concurrency)."""

    def feed_body(self, chunk: bytes) -> int:
        """More request body; returns the bytes buffered for the app (backpressure)."""

    def end_body(self) -> None: ...

    def discard_body(self) -> None:
        """The body received is refused after all: receive() will not hand it out."""

    def client_gone(self) -> None:
        """The client left (FIN, RST, stream reset, dead peer, or an unreadable request)."""


class WebSocketCycle(Protocol):
    """What the WebSocket protocol may call and ask on its session."""

    client_left: bool

    @property
    def session_open(self) -> bool:
        """Accepted and not ended by the app."""

    @property
    def session_closed(self) -> bool:
        """Ended by the app (closed, denied, or its HTTP answer sent)."""

    def start(self, app: Callable) -> None: ...

    def deliver(self, message: dict) -> int:
        """A message for the app; returns how many wait unread (backpressure)."""

    def peer_left(self, code: int, reason: str = "", clean: bool = False) -> None:
        """The session ended from the other side: ``clean`` for a close frame or shutdown."""
