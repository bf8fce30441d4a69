"""WebSocket (RFC 6455) over an asyncio transport: frames <-> the WebSocket session.

Framing, masking, control frames, close codes and permessage-deflate are the sans-I/O
``ServerProtocol`` of the ``websockets`` library; this module is glue. HTTP/1.1 parses the
upgrade request and hands the connection over (``HTTP1Protocol._switch_to_websocket``), so the
handshake is checked here from the parsed request, not re-parsed.

What the peer does, and what the session (``WebSocketCycle``) is told:

* a close frame: echoed at once, then ``peer_left(code, reason, clean=True)`` and the TCP close
  (the server closes first, RFC 6455 §7.1.1): the normal end of a session, not abandoned work;
* FIN or RST without a close frame: ``peer_left(1006)`` at once, also while reading is paused
  because the app is not consuming messages (the hangup watcher, as for HTTP);
* a protocol violation: websockets fails the connection with the RFC's code (1002, 1007,
  1009) and that code is what the app is told;
* no pong within ``--ws-ping-timeout`` of a ping: the peer is gone (a pulled cable): 1006.

Writes follow HTTP's rule: the write buffer's high-water mark is 0, so ``send()`` returns only
once the kernel has the frame, or waits (backpressure), or raises ``ClientDisconnected``.
"""

from __future__ import annotations

import codecs
import logging
from typing import Any

from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from ..errors import ClientDisconnected
from .hangup import ERR, FIN, HUP, PausableReading
from .keepalive import Pinger
from .stall import WRITE_HIGH_WATER, WriteFlowControl, WriteStall, wake_all
from ..logs import error_logger
from ..cycle import WebSocketCycle
from .wire import NO_BODY_STATUSES, STATUS_LINES, build_head, check_field, chunk

# websockets logs every open/close at INFO on its own logger; Tether has its access log.
_quiet_logger = logging.getLogger("tether.websocket")
_quiet_logger.propagate = False
_quiet_logger.addHandler(logging.NullHandler())
_quiet_logger.setLevel(logging.WARNING)

TEXT, BINARY, CONT, CLOSE, PONG = Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.CLOSE, Opcode.PONG
_utf8_decoder = codecs.getincrementaldecoder("utf-8")


# ---------------------------------------------------------------------- handshake (sans-I/O)
# websockets 17 checks the handshake's method and HTTP version itself; 16, the newest on
# Python 3.10, has neither field in its Request.
_REQUEST_HAS_METHOD = "method" in Request.__dataclass_fields__


def handshake_request(scope: dict) -> Request:
    """The upgrade request as websockets' ``Request``, from what HTTP/1.1 already parsed."""
    target = scope["raw_path"] + (b"?" + scope["query_string"] if scope["query_string"] else b"")
    headers = Headers((name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"])
    if not _REQUEST_HAS_METHOD:
        return Request(target.decode("latin-1"), headers)
    return Request(target.decode("latin-1"), headers, method=scope["method"],
                   protocol="HTTP/" + scope["http_version"])


def handshake_response(ws: ServerProtocol, scope: dict) -> Any:
    """websockets' answer to the upgrade request: the 101, or a refusal."""
    if not _REQUEST_HAS_METHOD:  # the checks websockets 17 makes, with its statuses and texts
        if scope["method"] != "GET":
            response = ws.reject(405, f"Failed to open a WebSocket connection: unsupported HTTP method: {scope['method']}.\n")
            response.headers["Allow"] = "GET"
            return response
        if scope["http_version"] != "1.1":
            return ws.reject(505, "Failed to open a WebSocket connection: unsupported HTTP version: "
                                  f"HTTP/{scope['http_version']}.\n")
    return ws.accept(handshake_request(scope))


def accept_head(negotiated: Headers, subprotocol: str | None, extra: Any, default_lines: bytes) -> bytes:
    """The 101 response: websockets' negotiated headers, the app's subprotocol and headers."""
    parts = [STATUS_LINES[101]]
    for name, value in negotiated.raw_items():
        if name.lower() != "date":  # ours is in default_lines
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    if subprotocol:
        parts.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode("latin-1") + b"\r\n")
    for item in extra:
        name, value = check_field(item, "'websocket.accept' header")
        if name.lower() in (b"sec-websocket-protocol", b"sec-websocket-accept", b"upgrade", b"connection"):
            continue  # the handshake's own headers are ours to write
        parts.append(name + b": " + value + b"\r\n")
    parts.append(default_lines)
    parts.append(b"\r\n")
    return b"".join(parts)


def reject_response(status: int, headers: Headers, body: bytes, default_lines: bytes) -> bytes:
    """A refused handshake, as a complete HTTP/1.1 response that closes the connection."""
    pairs = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in headers.raw_items()
        if name.lower() not in ("date", "connection", "content-length")
    ]
    info = build_head(status, pairs, len(body), False, False, True, False, default_lines)
    return info.head + body


def _refusal(status: int, headers: Headers, text: str) -> tuple[int, Headers, bytes]:
    """websockets answers a bad version with 400; RFC 6455 §4.4 asks for 426 + the version
    (a missing version header is a malformed handshake: 400 stays)."""
    if status == 400 and "Sec-WebSocket-Version" in text and "missing" not in text:
        headers = Headers([("Content-Type", "text/plain; charset=utf-8"), ("Sec-WebSocket-Version", "13")])
        return 426, headers, text.encode()
    if status in (405, 505):  # not GET / not HTTP/1.1: a malformed handshake either way
        return 400, headers, text.encode()
    return status, headers, text.encode()


# ---------------------------------------------------------------------- the protocol
class WebSocketProtocol(WriteFlowControl, PausableReading):
    """An asyncio protocol for one upgraded connection (set with ``transport.set_protocol``)."""

    gone_message = "the WebSocket client has disconnected"

    __slots__ = (
        "settings", "loop", "transport", "fd", "ws", "cycle", "handshake", "write_paused", "drain_waiters",
        "read_paused", "closed", "message_text", "message_parts", "decoder", "pinger",
        "close_handle", "shutting_down", "idle_since", "http_info", "server_closed", "failed",
        "stall",
    )

    def __init__(self, settings: Any, transport: Any, fd: int) -> None:
        self.settings = settings
        self.loop = settings.loop
        self.transport = transport
        self.fd = fd
        options = settings.ws
        self.ws = ServerProtocol(
            extensions=[ServerPerMessageDeflateFactory()] if options.per_message_deflate else None,
            max_size=options.max_size,
            state=OPEN,  # the handshake is checked from the parsed request, not from bytes
            select_subprotocol=lambda protocol, offered: None,  # the app picks, in websocket.accept
            logger=_quiet_logger,
        )
        self.cycle: WebSocketCycle | None = None
        self.handshake: Any = None
        self.write_paused = False
        self.drain_waiters: list = []
        self.read_paused = False
        self.closed = False
        self.message_text = False
        self.message_parts: list = []
        self.decoder: Any = None
        self.pinger = Pinger(self.loop, options.ping_interval, options.ping_timeout, 4, self._send_ping, self._ping_timed_out)
        self.close_handle: Any = None
        self.shutting_down = False
        self.idle_since = 0.0  # never idle: the keep-alive sweep leaves WebSockets alone
        self.http_info: Any = None
        self.server_closed = False  # we sent the first close frame (the app, or shutdown)
        self.failed = False  # we failed the connection for the peer's bad data
        self.stall = WriteStall()

    # ------------------------------------------------------------------ start
    def start(self, scope: dict, early_data: bytes) -> None:
        """Check the handshake; if it is valid, run the app with a ``websocket`` scope."""
        settings = self.settings
        settings.connections.add(self)
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER)  # send() returns once the kernel has the bytes
        response = handshake_response(self.ws, scope)
        if response.status_code != 101:
            status, headers, body = _refusal(response.status_code, response.headers, response.body.decode())
            if error_logger.isEnabledFor(logging.DEBUG):
                error_logger.debug("WebSocket handshake refused (%d): %s", status, body.decode().strip())
            self.transport.write(reject_response(status, headers, body, settings.head_lines))
            self._close_transport()
            return
        self.handshake = response.headers
        scope["type"] = "websocket"
        scope["scheme"] = "wss" if settings.is_ssl else "ws"
        scope["asgi"] = {"version": "3.0", "spec_version": "2.4"}
        scope["subprotocols"] = [
            token.strip()
            for value in response_values(scope["headers"], b"sec-websocket-protocol")
            for token in value.split(",") if token.strip()
        ]
        scope["extensions"] = {"websocket.http.response": {}}
        del scope["method"]
        cycle = self.cycle = WebSocketCycle(scope, self)
        cycle.start(settings.app)
        if early_data:  # frames the client sent right behind its handshake
            self.data_received(early_data)

    # ------------------------------------------------------------------ transport events
    def connection_made(self, transport: Any) -> None:  # (the transport was handed over)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        for frame in ws.events_received():
            opcode = frame.opcode
            if opcode is TEXT or opcode is BINARY or opcode is CONT:
                self._data_frame(opcode, frame.data, frame.fin)
            elif opcode is PONG:
                self.pinger.answered(frame.data)
        self._flush()
        if ws.state is not OPEN:
            self._session_ending()

    def eof_received(self) -> bool:
        self.ws.receive_eof()  # without a close frame first, websockets fails with 1006
        self._flush()
        self._session_ending()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.settings.connections.discard(self)
        if self.fd >= 0:
            self.settings.hangups.unwatch(self.fd, self)
        self.pinger.stop()
        if self.close_handle is not None:
            self.close_handle.cancel()
            self.close_handle = None
        if self.cycle is not None:
            self.cycle.peer_left(1006)
        waiters, self.drain_waiters = self.drain_waiters, []
        wake_all(waiters, ClientDisconnected(self.gone_message))

    def hangup(self, events: int) -> None:
        """FIN/RST seen by the hangup watcher while reading was paused."""
        if events & (HUP | ERR):
            self.transport.abort()
            self.connection_lost(ConnectionResetError("connection reset by peer"))
        elif events & FIN:
            self._resume_reading()  # what is left to read is bounded now: read it, then the EOF

    # ------------------------------------------------------------------ incoming messages
    def _data_frame(self, opcode: Opcode, data: bytes, fin: bool) -> None:
        if self.failed:
            return  # RFC 6455 section 7.1.7: nothing after the failure is processed (frames later in the same read)
        if opcode is not CONT:
            self.message_text = opcode is TEXT
            self.message_parts = []
            self.decoder = _utf8_decoder() if self.message_text else None
        if self.message_text:
            try:  # checked as fragments arrive, so a bad message fails fast (Autobahn 6.x)
                self.message_parts.append(self.decoder.decode(data, fin))
            except UnicodeDecodeError as exc:
                self.failed = True
                self.ws.fail(1007, f"invalid UTF-8 in a text message at position {exc.start}")
                return
        else:
            self.message_parts.append(data)
        if not fin:
            return
        parts, self.message_parts = self.message_parts, []
        if self.message_text:
            message = {"type": "websocket.receive", "text": parts[0] if len(parts) == 1 else "".join(parts)}
        else:
            message = {"type": "websocket.receive", "bytes": parts[0] if len(parts) == 1 else b"".join(parts)}
        cycle = self.cycle
        if cycle is None or cycle.session_closed:  # the app ended the session: discard
            return
        if cycle.deliver(message) >= self.settings.ws.max_queue:
            self._pause_reading()

    def message_consumed(self, queued: int) -> None:
        if self.read_paused and queued < self.settings.ws.max_queue:
            self._resume_reading()

    def _session_ending(self) -> None:
        """websockets left the OPEN state: a close frame came, or it failed the connection."""
        ws = self.ws
        cycle = self.cycle
        if cycle is not None and not cycle.client_left:
            if ws.close_rcvd is not None and not self.server_closed:
                cycle.peer_left(ws.close_rcvd.code, ws.close_rcvd.reason, clean=True)  # the peer closed
            elif ws.parser_exc is not None or self.failed:
                # The peer broke the protocol (or the stream ended without a close frame):
                # the app is told the code websockets closed with, 1006 for a bare EOF.
                sent = ws.close_sent
                if isinstance(ws.parser_exc, EOFError) or sent is None:
                    cycle.peer_left(1006)
                else:
                    cycle.peer_left(sent.code, sent.reason)
        if self.read_paused:
            self._resume_reading()  # read on until the peer's close frame or EOF

    # ------------------------------------------------------------------ session -> wire
    def accept(self, subprotocol: str | None, headers: Any) -> None:
        if self.closed:
            raise ClientDisconnected("the WebSocket client has disconnected")
        self.transport.write(accept_head(self.handshake, subprotocol, headers, self.settings.head_lines))
        self.handshake = None
        if self.shutting_down:
            self.close(1012, "")
            self.cycle.peer_left(1012, clean=True)  # type: ignore[union-attr]
            return
        self.pinger.start()

    def send_text(self, text: str) -> int:
        if self.closed or self.ws.state is not OPEN:
            raise ClientDisconnected("the WebSocket connection is closing")
        data = text.encode()
        self.ws.send_text(data)
        self._flush()
        return len(data)

    def send_bytes(self, data: Any) -> int:
        if self.closed or self.ws.state is not OPEN:
            raise ClientDisconnected("the WebSocket connection is closing")
        self.ws.send_binary(data)
        self._flush()
        return len(data)

    def close(self, code: int, reason: str) -> None:
        """The server ends the session: a close frame, then wait for the peer's (bounded)."""
        self.server_closed = True
        if self.ws.state is OPEN:
            try:
                self.ws.send_close(code, reason)
            except Exception as exc:  # an invalid code or reason from the app
                error_logger.error("invalid 'websocket.close' (%r, %r): %s; closing with 1011", code, reason, exc)
                self.ws.send_close(1011, "")
            self._flush()
        if self.read_paused:
            self._resume_reading()
        if self.close_handle is None and not self.closed:
            self.close_handle = self.loop.call_later(self.settings.ws.close_timeout, self._close_timed_out)

    def deny(self, status: int) -> None:
        """Refuse the handshake with a plain response (403 for a close before accept, 500)."""
        body = b"Forbidden" if status == 403 else b"Internal Server Error"
        headers = Headers([("Content-Type", "text/plain; charset=utf-8")])
        if not self.closed:
            self.transport.write(reject_response(status, headers, body, self.settings.head_lines))
        self._close_transport()

    def start_response(self, status: int, headers: Any) -> None:
        """The ``websocket.http.response`` extension: the app answers with an HTTP response."""
        self.http_info = (status, headers)  # written with the first body part, framed then

    def send_response_body(self, body: bytes, more: bool) -> None:
        if self.closed:
            raise ClientDisconnected("the WebSocket client has disconnected")
        info = self.http_info
        if isinstance(info, tuple):
            status, headers = info
            info = self.http_info = build_head(status, headers, len(body), more, False, True, False,
                                               self.settings.head_lines)
            data = info.head
            if status in NO_BODY_STATUSES:
                body = b""
        else:
            data = b""
        if info.chunked:
            data += chunk(body) + (b"" if more else b"0\r\n\r\n")
        else:
            data += body
        if data:
            self.transport.write(data)
        if not more:
            self._close_transport()

    def abort(self) -> None:
        self.transport.abort()

    # ------------------------------------------------------------------ keep-alive pings
    def _send_ping(self, payload: bytes) -> bool:
        if self.closed or self.ws.state is not OPEN:
            return False
        self.ws.send_ping(payload)
        self._flush()
        return True

    def _ping_timed_out(self) -> None:
        """No pong in time: the peer vanished (no FIN, no RST). Don't wait on its buffers."""
        if self.closed:
            return
        error_logger.info("WebSocket peer did not answer a ping within %ss: closing", self.settings.ws.ping_timeout)
        if self.cycle is not None:
            self.cycle.peer_left(1006, "ping timeout")
        self.transport.abort()

    def _close_timed_out(self) -> None:
        self.close_handle = None
        if not self.closed:
            self.transport.abort()

    def check_timeouts(self, now: float) -> None:
        """From the once-a-second sweep: a peer that stopped reading for --timeout-write is gone."""
        if not self.closed and self.stall.expired(self.transport, now, self.settings.timeout_write):
            self.transport.abort()  # connection_lost: the app gets websocket.disconnect 1006

    # ------------------------------------------------------------------ shutdown
    def close_idle(self) -> None:
        """Server shutdown: end the session with 1012 (service restart)."""
        self.shutting_down = True
        cycle = self.cycle
        if cycle is None or self.handshake is not None:
            return  # not started, or the app has not answered the handshake yet
        if self.ws.state is OPEN and cycle.session_open:
            self.close(1012, "")
            cycle.peer_left(1012, clean=True)

    # ------------------------------------------------------------------ plumbing
    def app_finished(self, cycle: WebSocketCycle) -> None:
        if self.ws.state is OPEN and not self.closed:
            self.close(1000, "")  # (the cycle closed it already unless something went wrong)

    def _flush(self) -> None:
        for data in self.ws.data_to_send():
            if data:
                if not self.closed:
                    self.transport.write(data)
            else:  # websockets' end-of-stream: the server closes the TCP connection first
                self._close_transport()

    def _close_transport(self) -> None:
        if self.fd >= 0 and not self.closed:
            self.settings.hangups.unwatch(self.fd, self)
        self.transport.close()


def response_values(headers: list, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in headers if key == name]

