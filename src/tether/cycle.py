"""The ASGI request cycle: receive/send, the disconnect signal and the cancellation policy.

``Cycle`` is what every protocol shares: the client-gone signal, the ``tether.disconnect``
extension, the app task and the cancel policy. ``RequestCycle`` (here) is one HTTP request
(per HTTP/2 stream), whatever the wire protocol; ``WebSocketCycle`` (websocket_cycle.py) is one
WebSocket session.
Protocols translate bytes into calls on the cycle (``start``, which runs the app in a task of
its own, ``feed_body``, ``end_body``, ``client_gone``) and the cycle calls back into the protocol (``conn.send_head`` & co.) to put
the response on the wire. Everything about *what the application is told, and when* lives
here, in one place; docs/design.md explains the same machine in prose.

Theory of operation
-------------------
A request is the product of three independent state machines:

* the request body:  RECEIVING -> COMPLETE          (``body_complete``)
* the response:      IDLE -> START_PENDING -> STREAMING -> [TRAILERS] -> DONE  (``state``)
* the client:        PRESENT -> GONE                 (``client_left``)

and of the application task, which runs until it returns, raises, or is cancelled.

``http.response.start`` is held back (START_PENDING) until the first body message, so that a
complete response goes out in one write with a computed Content-Length, and so that an app
that fails after ``start`` but before any body still gets a clean 500.

The client leaving is one event, ``client_gone()``, raised by the protocol the moment the
kernel reports FIN or RST (or an HTTP/2 RST_STREAM, or a keep-alive probe failing). It

1. wakes every ``receive()`` waiter, which returns ``http.disconnect``;
2. sets the extension's event (``scope["extensions"]["tether.disconnect"]``);
3. makes every later ``send()`` raise ``ClientDisconnected`` (an ``OSError``);
4. if the response was not DONE, marks the request *abandoned*: the phase is counted
   (mid_body / before_response / mid_stream), the time the app keeps running is measured,
   and under ``--on-disconnect cancel`` the app task is cancelled after the grace period,
   unless it is inside ``shield()``, in which case the cancel lands when the shield exits.

A response that is DONE is never abandoned work: code that runs after the final body
(Starlette background tasks) is never cancelled, whatever the policy.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from time import monotonic as _now  # loop.time() is 1 ms coarse under uvloop
from typing import Any, Callable

from .errors import ClientDisconnected
from .logs import STATS, access_logger, error_logger

# What a finished cycle keeps for late log lines, once it has let go of the app's scope.
_FINISHED_SCOPE = {"method": "-", "path": "-", "raw_path": b"-", "query_string": b"", "http_version": "1.1", "client": None}

# Response states.
IDLE, START_PENDING, STREAMING, TRAILERS, DONE = range(5)

_BODY_TYPES = (bytes, bytearray, memoryview)
_debug = error_logger.isEnabledFor
_EXCEPTION_GROUP = getattr(builtins, "BaseExceptionGroup", ())  # Python 3.11+


class DisconnectSignal:
    """The ``tether.disconnect`` scope extension: the disconnect, without consuming receive().

    ``is_set()`` checks without blocking, ``await wait()`` returns once the client has gone,
    ``left_at`` says when, ``shield()`` protects a critical section from ``--on-disconnect cancel``.
    """

    __slots__ = ("_cycle",)

    def __init__(self, cycle: "Cycle") -> None:
        self._cycle = cycle

    def is_set(self) -> bool:
        return self._cycle.client_left

    @property
    def left_at(self) -> float | None:
        """``time.monotonic()`` when Tether saw the client leave, or None while it is there."""
        cycle = self._cycle
        return cycle.gone_at if cycle.client_left else None

    async def wait(self) -> None:
        cycle = self._cycle
        if cycle.client_left:
            return
        if cycle.gone_event is None:
            cycle.gone_event = asyncio.Event()
        await cycle.gone_event.wait()

    @property
    def event(self) -> asyncio.Event:
        """An ``asyncio.Event`` set when the client leaves (created on first use)."""
        cycle = self._cycle
        if cycle.gone_event is None:
            cycle.gone_event = asyncio.Event()
            if cycle.client_left:
                cycle.gone_event.set()
        return cycle.gone_event

    def shield(self) -> "Shield":
        return Shield(self._cycle)


class Shield:
    """``with signal.shield():`` / ``async with signal.shield():`` delays a policy cancel.

    The cancellation is not lost: it is delivered when the outermost shield exits.
    """

    __slots__ = ("_cycle",)

    def __init__(self, cycle: "Cycle") -> None:
        self._cycle = cycle

    def __enter__(self) -> "Shield":
        self._cycle.shield_depth += 1
        return self

    def __exit__(self, *exc_info: Any) -> None:
        cycle = self._cycle
        cycle.shield_depth -= 1
        if cycle.shield_depth == 0 and cycle.cancel_pending:
            cycle.cancel_pending = False
            cycle.cancel_app()

    async def __aenter__(self) -> "Shield":
        return self.__enter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        self.__exit__(*exc_info)


class Cycle:
    """What every ASGI connection scope shares, whatever the protocol: the client-gone signal,
    the receive() waiters, the app task, and the cancellation policy.

    Subclasses (``RequestCycle`` here, ``WebSocketCycle``) say what "the work is finished"
    means (``work_finished``), in which phase a departure abandons work (``abandon_phase``),
    and how an abandoned request is logged (``log_abandoned``).
    """

    __slots__ = (
        "scope",
        "conn",
        "loop",
        # client / disconnect
        "client_left",
        "gone_at",  # when the client left: set by client_gone, read only once client_left
        "left_at",  # when unfinished work was abandoned (0.0: none was)
        "waiters",
        "gone_event",
        # app task and cancellation
        "task",
        "app_done",
        "started_at",
        "shield_depth",
        "cancel_pending",
        "cancelled_by_policy",
        "cancel_handle",
    )

    def __init__(self, scope: dict, conn: Any) -> None:
        self.scope = scope
        self.conn = conn
        self.loop = conn.loop
        self.client_left = False
        self.left_at = 0.0
        self.waiters: list | None = None
        self.gone_event: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.app_done = False
        self.started_at = _now()
        self.shield_depth = 0
        self.cancel_pending = False
        self.cancelled_by_policy = False
        self.cancel_handle: asyncio.TimerHandle | None = None
        scope["extensions"]["tether.disconnect"] = DisconnectSignal(self)

    # ------------------------------------------------------------------ what subclasses define
    def work_finished(self) -> bool:
        """True once the app's answer is complete: nothing it does after that is abandoned."""
        raise NotImplementedError

    def abandon_phase(self) -> str:
        """The STATS phase a departure now falls in (only asked while the work is unfinished)."""
        raise NotImplementedError

    def log_abandoned(self, seconds: float) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ protocol -> cycle
    def client_gone(self) -> None:
        """The client left (FIN/RST/stream reset/close frame/dead peer). Idempotent."""
        if self.client_left:
            return
        self.client_left = True
        self.gone_at = now = _now()
        if self.waiters:
            self._wake()
        if self.gone_event is not None:
            self.gone_event.set()
        if self.app_done or self.task is None or self.work_finished():
            return  # a finished answer, or a queued request that never started
        # The answer is unfinished: the app's work is abandoned from now on.
        self.left_at = now
        STATS.disconnected(self.abandon_phase())
        settings = self.conn.settings
        if settings.cancel_on_disconnect:
            grace = settings.disconnect_grace
            if grace > 0:
                self.cancel_handle = self.loop.call_later(grace, self.cancel_app)
            else:
                self.cancel_app()

    def cancel_app(self) -> None:
        """Apply the cancel policy now (or when the outermost shield exits)."""
        self.cancel_handle = None
        if self.app_done or self.task is None or self.work_finished():
            return
        if self.shield_depth:
            self.cancel_pending = True
            return
        self.cancelled_by_policy = True
        self.task.cancel()

    # ------------------------------------------------------------------ receive() waiting
    async def _wait(self) -> None:
        future = self.loop.create_future()
        if self.waiters is None:
            self.waiters = [future]
        else:
            self.waiters.append(future)
        await future

    def _wake(self) -> None:
        waiters, self.waiters = self.waiters, None
        for future in waiters:  # type: ignore[union-attr]
            if not future.done():
                future.set_result(None)

    # ------------------------------------------------------------------ the app task
    def start(self, app: Callable) -> None:
        """Run ``app`` for this scope in a task of its own, counted in flight until it ends."""
        settings = self.conn.settings
        settings.in_flight += 1
        self.task = self.loop.create_task(self.run_asgi(app))
        settings.tasks.add(self.task)

    # ------------------------------------------------------------------ the end of the app
    def _app_finished(self) -> None:
        self.app_done = True
        settings = self.conn.settings
        settings.in_flight -= 1
        settings.tasks.discard(self.task)
        if self.cancel_handle is not None:
            self.cancel_handle.cancel()
            self.cancel_handle = None
        if self.left_at:
            abandoned = _now() - self.left_at
            STATS.abandoned(abandoned, self.cancelled_by_policy)
            self.log_abandoned(abandoned)
        self.conn.app_finished(self)
        # scope -> extensions -> DisconnectSignal -> cycle -> scope is a reference cycle; break
        # it so that a finished request is freed at once instead of by the cyclic GC.
        self.scope = _FINISHED_SCOPE


class RequestCycle(Cycle):
    """One HTTP request (an HTTP/1.1 message or an HTTP/2 stream)."""

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
    )

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

    def work_finished(self) -> bool:
        return self.state == DONE

    def abandon_phase(self) -> str:
        if not self.body_complete:
            return "mid_body"
        if self.state < STREAMING:
            return "before_response"
        return "mid_stream"

    def start_request(self) -> None:
        """Start the app, or past --limit-concurrency answer 503 without it."""
        settings = self.conn.settings
        limit = settings.limit_concurrency
        self.start(service_unavailable if limit is not None and settings.in_flight >= limit else settings.app)

    def log_abandoned(self, seconds: float) -> None:
        self.log_access(499, f" abandoned {seconds * 1000:.1f}ms" + (" cancelled" if self.cancelled_by_policy else ""))

    # ------------------------------------------------------------------ protocol -> cycle
    def feed_body(self, chunk: bytes) -> None:
        self.body = self.body + chunk if self.body else chunk
        if self.waiters:
            self._wake()

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
            raise ClientDisconnected("the client has disconnected")
        mtype = message["type"]
        state = self.state
        if mtype == "http.response.body":
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if type(body) is not bytes:
                if not isinstance(body, _BODY_TYPES):
                    raise RuntimeError(f"'body' in 'http.response.body' must be bytes, not {type(body).__name__}")
                body = bytes(body)
            # The protocol may reject the message (bad headers, too long a body): only a
            # message that went out moves the state on, so that the failure still gets a 500.
            if state == START_PENDING:
                self.conn.send_head(self, self.status, self.headers, body, more or self.trailers)
                self.state = STREAMING if more else (TRAILERS if self.trailers else DONE)
                self.bytes_sent = len(body)
            elif state == STREAMING:
                self.conn.send_body(self, body, more or self.trailers)
                if not more:
                    self.state = TRAILERS if self.trailers else DONE
                self.bytes_sent += len(body)
            else:
                raise RuntimeError(_unexpected(mtype, state))
            if self.state == DONE:
                self._response_done()
            if self.conn.write_paused:
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
            self.trailers = bool(message.get("trailers", False)) and self.conn.supports_trailers(self)
            self.state = START_PENDING
            return
        if mtype == "http.response.trailers":
            if state != TRAILERS:
                raise RuntimeError(_unexpected(mtype, state))
            more = message.get("more_trailers", False)
            self.conn.send_trailers(self, message.get("headers", ()), more)  # (may refuse them: then a reset)
            if not more:
                self.state = DONE
                self._response_done()
            if self.conn.write_paused:
                await self._drain()
            return
        if mtype == "http.response.pathsend":
            if state != START_PENDING:
                raise RuntimeError(_unexpected(mtype, state))
            path = message["path"]
            self.state = STREAMING
            await self.conn.send_file(self, self.status, self.headers, path)
            self.state = DONE
            self._response_done()
            return
        raise RuntimeError(_unexpected(mtype, state))

    async def _drain(self) -> None:
        try:
            await self.conn.drain()
        except ClientDisconnected:
            self.client_gone()  # also for a DONE response that the kernel never fully took
            raise

    def _response_done(self) -> None:
        if self.waiters:
            self._wake()
        self.conn.response_complete(self)

    # ------------------------------------------------------------------ the app task
    async def run_asgi(self, app: Callable) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:  # the app's failure is ours to report, whatever it is
            self._app_failed(exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            if result is not None:
                error_logger.error("ASGI callable returned a value (%r); it should return None", result)
            if self.state != DONE and not self.client_left:
                self._app_returned_early()
        finally:
            self._app_finished()

    def _app_failed(self, exc: BaseException) -> None:
        if self.client_left:
            if isinstance(exc, asyncio.CancelledError) or _caused_by_disconnect(exc):
                if _debug(logging.DEBUG):
                    error_logger.debug("%s ended with %s after the client left", self.request_line(), type(exc).__name__)
            else:
                error_logger.error("Exception in ASGI application after the client left (%s)", self.request_line(), exc_info=exc)
            return
        if isinstance(exc, asyncio.CancelledError):
            error_logger.warning("%s was cancelled before it finished its response", self.request_line())
        else:
            error_logger.error("Exception in ASGI application (%s)", self.request_line(), exc_info=exc)
        self._fail_response()

    def _app_returned_early(self) -> None:
        if self.state == IDLE or self.state == START_PENDING:
            error_logger.error("ASGI callable returned without sending a complete response (%s)", self.request_line())
        else:
            error_logger.error("ASGI callable returned without completing the response (%s)", self.request_line())
        self._fail_response()

    def _fail_response(self) -> None:
        if self.state < STREAMING:
            self.status = 500
            self.state = DONE
            self.conn.send_error(self, 500)
            self._response_done()
        elif self.state != DONE:
            self.state = DONE
            self.conn.abort_response(self)

    # ------------------------------------------------------------------ logging
    def request_line(self) -> str:
        scope = self.scope
        query = scope["query_string"]
        path = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"]
        target = f"{path}?{query.decode('latin-1')}" if query else path
        return f"{scope['method']} {target} HTTP/{scope['http_version']}"

    def log_access(self, status: int, note: str = "") -> None:
        if not access_logger.isEnabledFor(logging.INFO):
            return
        scope = self.scope
        client = scope.get("client")
        access_logger.info(
            self.conn.settings.access_log_format.format(
                client=f"{client[0]}:{client[1]}" if client else "-",
                request_line=self.request_line(),
                method=scope["method"],
                path=scope["path"],
                query_string=scope["query_string"].decode("latin-1"),
                http_version=scope["http_version"],
                status=status,
                bytes=self.bytes_sent,
                duration_ms=(_now() - self.started_at) * 1000,
                note=note,
            )
        )


def _unexpected(mtype: str, state: int) -> str:
    where = ("before 'http.response.start'", "after 'http.response.start'", "while streaming the body",
             "while trailers are expected", "after the response was complete")[state]
    return f"Unexpected ASGI message {mtype!r} sent {where}"


def _caused_by_disconnect(exc: BaseException, depth: int = 0) -> bool:
    """True if ClientDisconnected is this exception, inside its group, or in its chain."""
    if depth > 20 or exc is None:
        return False
    if isinstance(exc, (ClientDisconnected, asyncio.CancelledError)):
        return True
    if isinstance(exc, _EXCEPTION_GROUP):
        return all(_caused_by_disconnect(inner, depth + 1) for inner in exc.exceptions)
    return _caused_by_disconnect(exc.__cause__ or exc.__context__, depth + 1)  # type: ignore[arg-type]


async def service_unavailable(scope: dict, receive: Any, send: Any) -> None:
    """The app that runs instead of the user's past --limit-concurrency."""
    await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Service Unavailable"})
