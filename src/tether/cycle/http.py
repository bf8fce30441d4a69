"""One HTTP request (an HTTP/1.1 message or an HTTP/2 stream), whatever the wire protocol:
the ASGI ``http`` scope's receive/send on the shared ``Cycle``.

Theory of operation
-------------------
A request is the product of three independent state machines and the app task (base.py):

* the request body:  RECEIVING -> COMPLETE          (``body_complete``)
* the response:      IDLE -> START_PENDING -> STREAMING -> [TRAILERS] -> DONE  (``state``)
* the client:        PRESENT -> GONE                 (``client_left``)

``http.response.start`` is held back (START_PENDING) until the first body message, so that a
complete response goes out in one write with a computed Content-Length, and so that an app
that fails after ``start`` but before any body still gets a clean 500. A message moves the
state on only once the protocol accepted it, so that a refused one still gets the 500.

DONE means the app's last message was accepted; the response is *delivered* once all of it
has reached the kernel (``send()`` waits for that anyway). The access line and the request
count are written at delivery, so a response cut on its way (a write timeout, an RST while
the kernel still held part of it) is logged 499 "cut", never 200: a log line never claims
what did not happen.

The deadline (``--timeout-request``, or ``signal.set_deadline()`` for one request) covers the
wait for the answer: if the response has not started when it passes, the client gets 504 and
the work is stopped as for a disconnect (work.py), whatever ``--on-disconnect`` says. A response
that has started is not killed while it delivers: each time the deadline passes it must have
sent something since the last time (an SSE stream's events, a download's chunks), or it is cut
and its work stopped. Work after a complete response is not covered.
"""

from __future__ import annotations

from typing import Any

from ..errors import ClientDisconnected, DeadlineExceeded
from ..logs import STATS, error_logger
from .base import Cycle

# Response states.
IDLE, START_PENDING, STREAMING, TRAILERS, DONE = range(5)

_BODY_TYPES = (bytes, bytearray, memoryview)


class RequestCycle(Cycle):
    """One HTTP request. Protocols use it only as contract.HTTPCycle says."""

    __slots__ = (
        # request body
        "body",
        "body_complete",
        "body_delivered",
        "expect_100",
        # response
        "state",
        "status",
        "headers",
        "trailers",
        "bytes_sent",
        "logged",
        "response_done",  # (state == DONE, as a plain attribute: protocols ask it on their hot paths)
        "deadline",  # a Deadline, or None
    )

    logs_every_end = False  # (a complete response is logged at delivery)

    def __init__(self, scope: dict, conn: Any, expect_100: bool = False) -> None:
        Cycle.__init__(self, scope, conn)
        self.body = b""
        self.body_complete = False
        self.body_delivered = False
        self.expect_100 = expect_100
        self.state = IDLE
        self.status = 0
        self.headers: Any = ()
        self.trailers = False
        self.bytes_sent = 0
        self.logged = False
        self.response_done = False
        self.deadline: Deadline | None = None

    # ------------------------------------------------------------------ named queries (contract)
    @property
    def response_started(self) -> bool:
        return self.state >= STREAMING


    # ------------------------------------------------------------------ Cycle's questions
    def work_finished(self) -> bool:
        return self.state == DONE

    def abandon_phase(self) -> str:
        if not self.body_complete:
            return "mid_body"
        if self.state < STREAMING:
            return "before_response"
        return "mid_stream"

    def describe(self) -> str:
        return f"{self.scope['method']} {self.target()} HTTP/{self.scope['http_version']}"

    def log_end(self, abandoned: float | None) -> None:
        if self.timed_out:
            stopped = self.stopper.what_stopped() if self.stopper is not None else []
            note = f" deadline {self.deadline.seconds:g}s" + ("" if self.status == 504 else ", response cut")  # type: ignore[union-attr]
            note += f", work stopped {abandoned * 1000:.1f}ms later" if abandoned is not None else ""
            self.log_access(self.status, self.bytes_sent, note + (f" ({', '.join(stopped)})" if stopped else ""))
        elif abandoned is not None:
            self.log_access(499, self.bytes_sent, self.abandoned_note(abandoned))

    # ------------------------------------------------------------------ protocol -> cycle
    def start_request(self) -> None:
        """Start the app, or past --limit-concurrency answer 503 without it."""
        worker = self.worker
        limit = worker.limit_concurrency
        self.start(service_unavailable if limit is not None and worker.in_flight >= limit else worker.app)
        if worker.timeout_request:
            self.set_deadline(worker.timeout_request)

    # ------------------------------------------------------------------ the deadline
    def set_deadline(self, seconds: float | None) -> None:
        """The request must be answered within ``seconds`` from now (None or 0: no deadline)."""
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if seconds and not self.app_done and self.state != DONE:
            deadline = self.deadline = Deadline(seconds)
            deadline.handle = self.loop.call_later(seconds, self._deadline_passed)

    def _deadline_passed(self) -> None:
        deadline = self.deadline
        if deadline is None or self.app_done or self.client_left or self.state == DONE:
            return
        if self.state >= STREAMING:
            if self.bytes_sent != deadline.sent:  # delivering: it goes on, as long as it keeps delivering
                deadline.sent = self.bytes_sent
                deadline.handle = self.loop.call_later(deadline.seconds, self._deadline_passed)
                return
            self.timed_out = True
            self.state = DONE
            self.response_done = True
            self.conn.abort_response(self)
        else:
            self.timed_out = True
            self.status = 504
            self.state = DONE
            self.bytes_sent = 0
            self.conn.send_error(self, 504)
            self._response_done()
        STATS.deadline_timeout()
        self.left_at = self._mark_gone()
        self.stop_work("deadline", self.listening)

    def feed_body(self, chunk: bytes) -> int:
        body = self.body = self.body + chunk if self.body else chunk
        if self.waiters:
            self._wake()
        return len(body)

    def end_body(self) -> None:
        self.body_complete = True
        if self.waiters:
            self._wake()

    def discard_body(self) -> None:
        """The body received is refused after all (the protocol found it malformed before the
        app read it): receive() will not hand it out."""
        if not self.body_delivered:
            self.body = b""
            self.body_complete = False

    # ------------------------------------------------------------------ ASGI receive
    async def receive(self) -> dict:
        while True:
            if not self.body_delivered:
                if self.body or self.body_complete:
                    return self._take_body()
                if self.client_left or self.state == DONE:  # ASGI: disconnect once the response is sent
                    return {"type": "http.disconnect"}
                if self.expect_100:
                    self.expect_100 = False
                    if self.state == IDLE:
                        self.conn.send_continue()
            elif self.client_left or self.state == DONE:
                return {"type": "http.disconnect"}
            await self._wait()

    def _take_body(self) -> dict:
        body = self.body
        self.body = b""
        more = not self.body_complete
        if not more:
            self.body_delivered = True
        self.conn.body_consumed()  # HTTP/1.1: resume reading; HTTP/2: grant the window back
        return {"type": "http.request", "body": body, "more_body": more}

    # ------------------------------------------------------------------ ASGI send
    async def send(self, message: dict) -> None:
        if self.client_left:
            if self.timed_out:
                raise DeadlineExceeded(f"the request's deadline ({self.deadline.seconds:g} s) has passed")  # type: ignore[union-attr]
            raise ClientDisconnected("the client has disconnected")
        mtype = message["type"]
        state = self.state
        conn = self.conn
        if mtype == "http.response.body":
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if type(body) is not bytes:
                if not isinstance(body, _BODY_TYPES):
                    raise RuntimeError(f"'body' in 'http.response.body' must be bytes, not {type(body).__name__}")
                body = bytes(body)
            if state == START_PENDING:
                conn.send_head(self, self.status, self.headers, body, more or self.trailers)
                self.state = STREAMING if more else (TRAILERS if self.trailers else DONE)
                self.bytes_sent = len(body)
            elif state == STREAMING:
                conn.send_body(self, body, more or self.trailers)
                if not more:
                    self.state = TRAILERS if self.trailers else DONE
                self.bytes_sent += len(body)
            else:
                raise RuntimeError(_unexpected(mtype, state))
            if self.state == DONE:
                self._response_done()
            if conn.write_paused:
                await self._drain()
            return
        if mtype == "http.response.start":
            if state != IDLE:
                raise RuntimeError(_unexpected(mtype, state))
            status = message["status"]
            if type(status) is not int or not 100 <= status <= 599:
                raise RuntimeError(f"'status' in 'http.response.start' must be an int from 100 to 599, not {status!r}")
            self.status = status
            self.headers = message.get("headers", ())
            self.trailers = bool(message.get("trailers", False)) and conn.supports_trailers(self)
            self.state = START_PENDING
            return
        if mtype == "http.response.trailers":
            if state != TRAILERS:
                raise RuntimeError(_unexpected(mtype, state))
            more = message.get("more_trailers", False)
            conn.send_trailers(self, message.get("headers", ()), more)  # (may refuse them: then a reset)
            if not more:
                self.state = DONE
                self._response_done()
            if conn.write_paused:
                await self._drain()
            return
        if mtype == "http.response.pathsend":
            if state != START_PENDING:
                raise RuntimeError(_unexpected(mtype, state))
            path = message["path"]
            self.state = STREAMING
            await conn.send_file(self, self.status, self.headers, path)
            self.state = DONE
            self._response_done()
            if conn.write_paused:
                await self._drain()
            return
        raise RuntimeError(_unexpected(mtype, state))

    async def _drain(self) -> None:
        try:
            await self.conn.drain()
        except ClientDisconnected:
            self.client_gone()
            if self.state == DONE and not self.logged:
                self._cut()
            raise
        if self.state == DONE and not self.logged:
            self._delivered()

    def _response_done(self) -> None:
        """The app's last message was accepted: the request is answered."""
        self.response_done = True
        if self.waiters:
            self._wake()
        if self.deadline is not None:
            self.deadline.cancel()
        self.worker.request_counted()
        STATS.requests += 1
        self.conn.response_complete(self)
        if not self.conn.write_paused:
            self._delivered()  # (else send() drains first: _drain logs it)

    def _delivered(self) -> None:
        self.logged = True
        if not self.timed_out:  # (a deadline's 504 is logged with what the stop found: log_end)
            self.log_access(self.status, self.bytes_sent)

    def _cut(self) -> None:
        """The client went away while the kernel did not have all of a complete response."""
        self.logged = True
        STATS.disconnected("mid_stream")
        self.log_access(499, self.bytes_sent, " response cut")

    # ------------------------------------------------------------------ the app's end
    def app_returned(self) -> None:
        if self.state == DONE:
            return
        if self.state == IDLE or self.state == START_PENDING:
            error_logger.error("ASGI callable returned without sending a complete response (%s)", self.describe())
        else:
            error_logger.error("ASGI callable returned without completing the response (%s)", self.describe())
        self.fail()

    def fail(self) -> None:
        if self.state < STREAMING:
            self.status = 500
            self.state = DONE
            self.conn.send_error(self, 500)
            self._response_done()
        elif self.state != DONE:
            self.state = DONE
            self.response_done = True
            self.logged = True  # (not a complete response: the connection closes or the stream resets)
            self.log_access(self.status, self.bytes_sent, " response aborted")
            self.conn.abort_response(self)


class Deadline:
    """A request's deadline: its length, its timer, and what a streaming response had sent when
    it last passed (it goes on while it keeps sending)."""

    __slots__ = ("seconds", "handle", "sent")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.handle: Any = None
        self.sent = 0

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


def _unexpected(mtype: str, state: int) -> str:
    where = ("before 'http.response.start'", "after 'http.response.start'", "while streaming the body",
             "while trailers are expected", "after the response was complete")[state]
    return f"Unexpected ASGI message {mtype!r} sent {where}"


async def service_unavailable(scope: dict, receive: Any, send: Any) -> None:
    """The app that runs instead of the user's past --limit-concurrency."""
    await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Service Unavailable"})

