"""HTTP/1.1 over an asyncio transport: bytes <-> the request cycle.

Parsing is httptools (llhttp); the response framing is plain functions over bytes in
``wire.py`` (``build_head``, ``chunk``), testable without an event loop. The protocol class is glue: it
feeds the parser, builds the scope, and tells the cycle when the body arrives and when the
client leaves. The disconnect rules it applies (docs/design.md has the why):

* FIN on an idle keep-alive connection: close it.
* FIN while a request body is incomplete, or while a response is being streamed: the client
  left (``client_gone``).
* FIN after a complete HTTP/1.1 request whose response has not started (plain TCP): this may be
  a half-close (``shutdown(SHUT_WR)``) by a client that still wants its answer, so it is not a
  disconnect by itself. Tether writes an interim ``100 Continue`` as a probe: a client that
  half-closed ignores it (RFC 9110 §15.2), a client that closed answers with RST, which the
  hangup watcher reports within one round trip, and that is the disconnect.
* RST: the client left.
* While reading is paused (backpressure, pipelining), the hangup watcher reports FIN/RST.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import socket
from typing import Any

import httptools

from ..cycle import RequestCycle
from ..errors import ClientDisconnected
from ..logs import error_logger
from ..proxy import apply_proxy_headers
from .hangup import ERR, FIN, HUP, PausableReading
from .stall import WRITE_HIGH_WATER, WriteFlowControl, WriteStall, wake_all
from .wire import (NO_BODY_STATUSES, HeadInfo, build_head, chunk, decode_path, simple_response, status_text,
                   trailer_block)

HIGH_WATER = 65536  # request body bytes buffered before reading pauses
MAX_CHUNK_LINE = 16384  # chunk-size line + extensions, on average per chunk (Node's bound, CVE-2024-22019)
CHUNK_LINE_ALLOWANCE = 64  # bytes of framing a plain chunk costs: size line, CRLFs
LINGER_SECONDS = 2.0  # how long a connection closed after an error answer drains the client's input
SHUTDOWN_GRACE = 1.0  # at shutdown, how long a new connection's first request gets to arrive
PROBE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _check_old_version(version: str) -> None:
    """HTTP/1.0 is served; HTTP/0.9 and HTTP/2+ in an HTTP/1 request line are not."""
    if version == "1.0":
        return
    if version.startswith("0."):
        raise _Refused(400, b"HTTP/0.9 is not supported")
    raise _Refused(505, b"HTTP version not supported")


def _check_transfer_encoding(value: bytes) -> None:
    """Only ``chunked`` is understood (RFC 9112 section 6.1): chunked not last -> 400; another coding
    before it -> 501; anything llhttp might read differently -> 400. Checked before the app runs."""
    codings = [coding.strip(b" \t").lower() for coding in value.split(b",")]
    if codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
        raise _Refused(400, b"Transfer-Encoding must end with chunked")
    if len(codings) > 1:
        raise _Refused(501, b"Transfer-Encoding not implemented")
    if value.lower() != b"chunked":
        raise _Refused(400, b"Invalid Transfer-Encoding")


def request_scope(method: str, url: bytes, http_version: str, headers: list, settings: Any, server: Any,
                  client: Any, scheme: str) -> dict:
    """The ASGI scope of a parsed request head (origin-form, ``*``, or absolute-form, whose
    authority replaces Host: RFC 9112 section 3.2.2). Raises _Refused for a target that is none
    of these. Sans-I/O."""
    if url[:1] == b"/":
        raw_path, _, query = url.partition(b"#")[0].partition(b"?")  # (a fragment is no part of the request)
    elif method == "OPTIONS" and url == b"*":
        raw_path, query = b"*", b""
    else:
        try:
            parsed = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            raise _Refused(400, b"Invalid request target") from None
        raw_path, query = parsed.path or b"/", parsed.query or b""
        if parsed.host:
            authority = parsed.host + (b":%d" % parsed.port if parsed.port else b"")
            headers = [(n, authority if n == b"host" else v) for n, v in headers]
    path = decode_path(raw_path) if b"%" in raw_path or not raw_path.isascii() else raw_path.decode("ascii")
    root_path = settings.root_path
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": http_version,
        "server": server,
        "client": client,
        "scheme": scheme,
        "method": method,
        "root_path": root_path,
        "path": root_path + path if root_path else path,
        "raw_path": raw_path,
        "query_string": query,
        "headers": headers,
        "state": settings.lifespan_state.copy(),
        "extensions": {"http.response.trailers": {}, "http.response.pathsend": {}} if http_version == "1.1"
        else {"http.response.pathsend": {}},
    }


class _Refused(Exception):
    """Raised from a parser callback to refuse a request with ``status`` (a limit was hit)."""

    def __init__(self, status: int, message: bytes) -> None:
        self.status = status
        self.message = message


HEAD_TOO_LARGE = (431, b"Request header fields too large")
# Request headers that on_header looks at (the rest are only collected).
_WATCHED_HEADERS = frozenset({b"host", b"transfer-encoding", b"expect", b"content-length", b"x-forwarded-for",
                              b"x-forwarded-proto"})
_OWS = (b" ", b"\t")
# uri-host [":" port] (RFC 9112 section 3.2, RFC 3986): an IP literal, or reg-name / IPv4 characters.
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+;=%]*)(:[0-9]*)?")
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


# ---------------------------------------------------------------------- the protocol
class _BodyOnly:
    """Parser callbacks for a body alone (see HTTP1Protocol._read_body_after_ignored_upgrade)."""

    __slots__ = ("protocol", "done")

    def __init__(self, protocol: HTTP1Protocol) -> None:
        self.protocol = protocol
        self.done = False

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.protocol.on_body(body)

    def on_chunk_header(self) -> None:
        self.protocol.on_chunk_header()

    def on_message_complete(self) -> None:
        if not self.done:  # (the connection closes after this request: nothing later is parsed for it)
            self.done = True
            self.protocol.on_message_complete()


class HTTP1Protocol(WriteFlowControl, PausableReading, asyncio.Protocol):
    __slots__ = (
        "settings", "loop", "transport", "parser", "fd", "server", "client", "scheme",
        "sock", "url", "headers", "head_size", "expect_100", "parsing", "cycle", "pipeline",
        "keep_alive", "read_paused", "write_paused", "drain_waiters", "closed", "closing",
        "peer_fin", "probing", "idle_since", "head_info", "remaining", "head_request",
        "http11", "upgrade", "in_head", "head_raw", "trailer_headers", "upgrade_scope",
        "upgrade_rest", "fresh", "head_started", "body_at", "body_seen", "stall", "out", "out_size", "declared_length", "forwarded", "hosts", "transfer_encoding", "reject_after", "head_began", "draining", "body_after_upgrade", "valid_host",
        "feed_body", "feed_chunks", "chunk_check", "chunk_open", "chunk_head_feed", "chunk_debt",
        "trailer_size", "chunk_cycle",
    )

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.loop = settings.loop
        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.fd = -1
        self.url = b""
        self.headers: list = []
        self.head_size = 0
        self.expect_100 = False
        self.parsing: RequestCycle | None = None  # receiving parser callbacks
        self.cycle: RequestCycle | None = None  # producing the current response
        self.pipeline: collections.deque = collections.deque()
        self.keep_alive = True
        self.read_paused = False
        self.write_paused = False
        self.drain_waiters: list = []
        self.closed = False
        self.closing = False
        self.peer_fin = False
        self.probing = False
        self.idle_since = 0.0
        self.head_info: HeadInfo | None = None
        self.remaining: int | None = None
        self.head_request = False
        self.http11 = True
        self.upgrade = b""
        self.in_head = False
        self.head_raw = 0
        self.trailer_headers: list = []
        self.upgrade_scope: dict | None = None  # a WebSocket or h2c upgrade, until it is handed over
        self.upgrade_rest = b""  # what followed the upgrade request's head
        self.body_after_upgrade: RequestCycle | None = None  # an ignored upgrade's request, whose body follows
        self.valid_host = b""  # the last Host value that passed the check
        self.fresh = True  # nothing received yet: the bytes may be an HTTP/2 preface
        self.head_started = 0.0  # for --timeout-request-header
        self.body_at = 0.0  # last request-body progress, for --timeout-request-body
        self.body_seen = 0  # request-body bytes so far, for --limit-request-body
        self.stall = WriteStall()
        self.out: list = []  # parts of a streamed response written at the end of this loop pass
        self.out_size = 0
        self.declared_length = 0  # the request's Content-Length, for --limit-request-body
        self.forwarded = False  # X-Forwarded-* seen: --proxy-headers has work to do
        self.hosts = 0  # Host header lines in this request
        self.transfer_encoding: bytes | None = None
        self.reject_after: tuple | None = None  # an error answer due once the response in progress is out
        self.head_began = False  # a head began during the current read (head_raw counts later reads)
        self.draining = False  # closing after an error answer: input is read and discarded
        # The chunk-line bound (_bound_chunk_lines): per read, body bytes and chunks seen.
        self.feed_body = 0
        self.feed_chunks = 0
        self.chunk_check = False  # a chunked body was parsed during this read
        self.chunk_open = False  # ... and it is not complete yet
        self.chunk_head_feed = False  # its head completed during this read
        self.chunk_debt = 0  # framing bytes beyond the allowance, carried from read to read
        self.trailer_size = 0
        self.chunk_cycle: RequestCycle | None = None  # the request the bound applies to

    # ------------------------------------------------------------------ transport events
    def connection_made(self, transport: Any, addresses: tuple | None = None) -> None:
        """``addresses``: (server, client) from a PROXY header (server/proxy_protocol.py), not the socket's."""
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH_WATER)  # send() returns once the kernel has the bytes
        sock = self.sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        if addresses is not None:
            self.server, self.client = addresses
        else:
            server = transport.get_extra_info("sockname")
            peer = transport.get_extra_info("peername")
            self.server = tuple(server[:2]) if isinstance(server, tuple) else None
            self.client = tuple(peer[:2]) if isinstance(peer, tuple) else None
        self.scheme = "https" if self.settings.is_ssl else "http"
        self.idle_since = self.loop.time()
        self.settings.connections.add(self)
        if self.settings.switch.starts_as_http2(self.settings, transport):
            self._switch_to_http2(b"")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        peer_gone = exc is not None or not self.closing
        self.settings.connections.discard(self)
        if self.fd >= 0:
            self.settings.hangups.unwatch(self.fd, self)
        for cycle in (self.cycle, self.parsing, *(queued for queued, _ in self.pipeline)):
            if cycle is not None and (peer_gone or not cycle.response_done):
                cycle.client_gone()
        self.pipeline.clear()
        self.parsing = None
        waiters, self.drain_waiters = self.drain_waiters, []
        wake_all(waiters, ClientDisconnected(self.gone_message) if peer_gone else None)

    def eof_received(self) -> bool | None:
        if self.draining:
            return None  # the client has read our answer and closed: close too
        if self.out:
            self.flush()  # what send() accepted reaches the kernel before the cycle is told
        self.peer_fin = True
        cycle = self.cycle
        if cycle is None or cycle.response_done or self.parsing is not None:
            return None  # idle, or a request (this one or a pipelined one) cut short
        if not cycle.response_started and self.http11 and not self.settings.is_ssl:
            # Possibly a half-close: keep our side open and probe (see the module docstring).
            self.probing = True
            self.transport.write(PROBE)
            if self._reset_by_peer():  # on loopback the RST is often back already
                self.hangup(HUP)
                return None
            self.settings.hangups.watch(self.fd, self, fin=False)
            return True
        return None

    def hangup(self, events: int) -> None:
        """The hangup watcher saw FIN/HUP/ERR on our socket while the loop was not reading."""
        if events & (HUP | ERR):
            self.transport.abort()
            self.connection_lost(ConnectionResetError("connection reset by peer"))
        elif events & FIN:
            # The client can send no more, so what is left in the kernel buffer is bounded:
            # read it, and let eof_received decide, exactly as for an unpaused connection.
            self.peer_fin = True
            self._resume_reading()

    def _reset_by_peer(self) -> bool:
        try:
            return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0
        except OSError:
            return True

    def data_received(self, data: bytes) -> None:
        if self.draining:
            return  # after an error answer: discarded until the client closes (_close_lingering)
        self.idle_since = 0.0
        if self.fresh:
            self.fresh = False
            if data[:3] == b"PRI" and self.settings.http == "auto" and self.settings.switch.is_h2_preface(data):
                self._switch_to_http2(data)  # h2c with prior knowledge
                return
        self.feed_body = 0  # (body bytes in this read: _bound_chunk_lines)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._handle_upgrade(data[upgrade.args[0]:])
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self._reject(refused.status, refused.message)
            else:
                error_logger.exception("internal error while parsing a request")
                self._reject(500, b"Internal Server Error")
        except httptools.HttpParserError as exc:
            if error_logger.isEnabledFor(logging.DEBUG):
                error_logger.debug("invalid HTTP request from %s: %s", self.client, exc)
            self._reject(400, b"Invalid HTTP request")
        else:
            if self.in_head:  # a head still incomplete: bound what llhttp may be holding
                if self.head_began:  # (it began inside this read: earlier bytes were not its own)
                    self.head_began = False
                else:
                    self.head_raw += len(data)
                    if self.head_raw > self.settings.max_head_size:
                        self._reject(*HEAD_TOO_LARGE)
            if self.chunk_check:
                self._bound_chunk_lines(data)

    def _bound_chunk_lines(self, data: bytes) -> None:
        """A chunk-size line may carry extensions, which llhttp skips without a limit: a client
        could send megabytes that are neither body nor head (the class of CVE-2024-22019 in Node).
        httptools reports no positions, so the bound is on what this read held besides body and
        heads: beyond CHUNK_LINE_ALLOWANCE bytes per chunk, at most MAX_CHUNK_LINE bytes, carried
        over from read to read (a line split across reads counts whole). Then 400."""
        framing = len(data) - self.feed_body
        allowance = CHUNK_LINE_ALLOWANCE * self.feed_chunks
        if self.chunk_head_feed:  # heads came in this read too (the chunked request's, pipelined ones)
            self.chunk_head_feed = False
            allowance += self.settings.max_head_size
        self.chunk_debt = max(0, self.chunk_debt + framing - allowance)
        self.feed_chunks = 0
        self.chunk_check = self.chunk_open
        if self.chunk_debt > MAX_CHUNK_LINE:
            error_logger.debug("chunk extensions from %s over %d bytes", self.client, MAX_CHUNK_LINE)
            self.chunk_check = self.chunk_open = False
            cycle = self.chunk_cycle
            if self.parsing is None and cycle is not None and cycle is self.cycle:
                # Parsed whole within this read: refused all the same, as a body cut short.
                cycle.discard_body()
                self.parsing = cycle
            self._reject(400, b"Chunk extension too long")

    # ------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_size = 0
        self.head_raw = 0
        self.head_began = True
        self.in_head = True
        self.expect_100 = False
        self.idle_since = 0.0
        self.head_started = 0.0  # (the sweep starts the clock: no clock read per request)
        self.declared_length = 0
        self.forwarded = False
        self.hosts = 0
        self.transfer_encoding = None

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if len(self.url) > self.settings.limit_request_line:
            raise _Refused(414, b"Request-URI too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            # A chunked body's trailer: never merged into the request's headers (RFC 9110
            # section 6.5.1), bounded like a head, and not framing for _bound_chunk_lines.
            self.trailer_size += len(name) + len(value) + 4
            self.feed_body += len(name) + len(value) + 4 + CHUNK_LINE_ALLOWANCE
            if self.trailer_size > self.settings.max_head_size:
                raise _Refused(*HEAD_TOO_LARGE)
            return
        settings = self.settings
        name = name.lower()
        padded = value[-1:] in _OWS
        if padded:
            value = value.rstrip(b" \t")  # (llhttp keeps trailing whitespace; it is not part of the value)
        size = len(name) + len(value)
        self.head_size += size + 4
        if (
            size > settings.limit_request_field_size
            or self.head_size > settings.max_head_size
            or len(self.headers) >= settings.limit_request_fields
        ):
            raise _Refused(*HEAD_TOO_LARGE)
        if name in _WATCHED_HEADERS:
            if name == b"host":
                self.hosts += 1
                if value != self.valid_host:  # (keep-alive clients repeat it: checked once)
                    if _HOST.fullmatch(value) is None:
                        raise _Refused(400, b"Invalid Host header")  # RFC 9112 section 3.2
                    self.valid_host = value
            elif name == b"transfer-encoding":  # (several lines make one list)
                if padded:  # whether llhttp reads "chunked\t" as chunked is its own choice: refuse
                    raise _Refused(400, b"Transfer-Encoding must end with chunked")
                previous = self.transfer_encoding
                self.transfer_encoding = value if previous is None else previous + b", " + value
            elif name == b"expect":
                self.expect_100 = value.lower() == b"100-continue"
            elif name == b"content-length":
                self.declared_length = int(value) if value.isdigit() else 0
            else:
                self.forwarded = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        settings = self.settings
        http_version = parser.get_http_version()
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii")
        self.http11 = http_version == "1.1"
        self.in_head = False
        if not self.http11:
            _check_old_version(http_version)
        if self.hosts != 1 and (self.hosts or self.http11):
            raise _Refused(400, b"A request needs exactly one Host header")  # RFC 9112 section 3.2
        if self.transfer_encoding is not None:
            _check_transfer_encoding(self.transfer_encoding)
            self.chunk_check = self.chunk_open = self.chunk_head_feed = True
            self.chunk_debt = self.trailer_size = 0
        self.body_seen = 0
        self.body_at = 0.0  # (started by the sweep, restarted by each piece of body)
        limit = settings.limit_request_body
        if limit is not None and self.declared_length > limit:
            raise _Refused(413, b"Request body too large")
        scope = request_scope(method, self.url, http_version, self.headers, settings, self.server, self.client,
                              self.scheme)
        self.headers = scope["headers"]
        if self.forwarded and settings.proxy_headers:
            apply_proxy_headers(scope, settings)
        keep_alive = parser.should_keep_alive() and not settings.shutting_down
        if self.transfer_encoding is not None and not self.http11:
            keep_alive = False  # RFC 9112 section 6.1: HTTP/1.0 with Transfer-Encoding is faulty framing: close after
        if parser.should_upgrade():
            self.upgrade = next((v.lower() for n, v in self.headers if n == b"upgrade"), b"?")
            keep_alive = False
            if b"websocket" in self.upgrade:
                if self.declared_length or self.transfer_encoding is not None:
                    # RFC 6455 section 4.1: the handshake is a GET without a body; bytes that a front
                    # end would read as a body must never reach the app as WebSocket frames.
                    raise _Refused(400, b"WebSocket handshake must not have a body")
                self.upgrade_scope = scope
                return  # handed over when the parser reports the upgrade (_handle_upgrade)
            if self.upgrade == b"h2c" and self._can_upgrade_to_h2c():
                self.upgrade_scope = scope
                return
        cycle = RequestCycle(scope, self, self.expect_100 and self.http11)
        if self.transfer_encoding is not None:
            self.chunk_cycle = cycle
        if self.upgrade and (self.declared_length or self.transfer_encoding is not None):
            self.body_after_upgrade = cycle  # llhttp skips this body: _read_body_after_ignored_upgrade
        else:
            self.parsing = cycle
        if self.cycle is None:
            self._start(cycle, keep_alive)
        else:
            self.pipeline.append((cycle, keep_alive))
            self._pause_reading()

    def on_chunk_header(self) -> None:
        self.feed_chunks += 1

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        self.feed_body += len(body)
        self.body_at = 0.0  # progress: the sweep restarts the clock
        limit = self.settings.limit_request_body
        if limit is not None:
            self.body_seen += len(body)
            if self.body_seen > limit:  # (chunked: the length was not declared up front)
                raise _Refused(413, b"Request body too large")
        if cycle is None or cycle.client_left or cycle.response_done:
            return  # (done: the app answered without reading it all: drain and discard the rest)
        if cycle.feed_body(body) > HIGH_WATER and not self.read_paused and not self.peer_fin:
            self._pause_reading()

    def on_message_complete(self) -> None:
        cycle = self.parsing
        self.chunk_open = False
        if cycle is not None:
            cycle.end_body()
        self.parsing = None
        if cycle is not None and cycle.response_done and self.cycle is None and not self.closing:
            # The drained body of an answered request: the connection is idle only now.
            if self.keep_alive:
                self.idle_since = self.loop.time()
            else:
                self._close()

    # ------------------------------------------------------------------ running requests
    def _start(self, cycle: RequestCycle, keep_alive: bool) -> None:
        """``cycle`` answers next: its app starts (a task: it first runs after this read)."""
        self.cycle = cycle
        self.keep_alive = keep_alive
        self.head_request = cycle.scope["method"] == "HEAD"
        self.head_info = None
        cycle.start_request()

    def app_finished(self, cycle: RequestCycle) -> None:
        pass  # (the connection waits for the response, not for the app: response_complete)

    def response_complete(self, cycle: RequestCycle) -> None:
        if self.cycle is not cycle:
            return
        self.cycle = None
        if self.upgrade_scope is not None and not self.closed:
            self._switch_to_websocket(self.upgrade_scope, self.upgrade_rest)
        elif not self.keep_alive or self.closed:
            if self.reject_after is not None and not self.closed:
                self.transport.write(simple_response(*self.reject_after, self._default_lines(), False))
            self._close()
        elif self.pipeline:
            self._start(*self.pipeline.popleft())
            if not self.pipeline:
                self._resume_reading()
        elif self.peer_fin:
            self._close()  # a half-closed client has been answered: nothing more can come
        else:
            self.idle_since = self.loop.time()
            if self.read_paused:  # (parsing: a body the app left unread, drained by on_body)
                self._resume_reading()

    def body_consumed(self) -> None:
        if self.read_paused and not self.pipeline and self.parsing is not None:
            self._resume_reading()

    def _close(self) -> None:
        self.flush()
        if not self.closing:
            self.closing = True
            if self.fd >= 0:
                self.settings.hangups.unwatch(self.fd, self)
            self.transport.close()

    def _close_lingering(self) -> None:
        """Close after an error answer, the way nginx does (lingering close): FIN, then read and
        discard what the client still sends for a moment. Closing at once with unread input
        sends RST, which can destroy the error response in the client's buffer unread."""
        self.flush()
        transport = self.transport
        if self.closing or self.settings.is_ssl or not transport.can_write_eof():
            self._close()
            return
        self.closing = True
        self.draining = True
        if self.fd >= 0:
            self.settings.hangups.unwatch(self.fd, self)
        transport.write_eof()
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        self.loop.call_later(LINGER_SECONDS, transport.close)

    def check_timeouts(self, now: float) -> None:
        """From the once-a-second sweep: a client too slow with its head, its body, or reading."""
        settings = self.settings
        if self.closing:
            return
        if self.in_head:
            timeout = settings.timeout_request_header
            if not self.head_started:
                self.head_started = now
            elif timeout and now - self.head_started > timeout:
                error_logger.debug("request head from %s timed out after %ss", self.client, timeout)
                self._reject(408, b"Request header timeout")
        elif self.parsing is not None and not self.read_paused and not self.peer_fin:
            # (paused: the app is not reading, which is not the client's fault)
            timeout = settings.timeout_request_body
            if not self.body_at:
                self.body_at = now
            elif timeout and now - self.body_at > timeout:
                error_logger.debug("request body from %s stalled for %ss", self.client, timeout)
                if self.parsing is self.cycle:
                    self._reject(408, b"Request body timeout")  # the app gets http.disconnect
                else:
                    self._close()  # the body of an answered request: nobody waits for it
        if self.stall.expired(self.transport, now, settings.timeout_write):
            error_logger.debug("%s stopped reading for %ss: closing", self.client, settings.timeout_write)
            self.transport.abort()

    def close_idle(self) -> None:
        """Keep-alive timeout or shutdown: close if no request is in progress. At shutdown, a
        connection accepted but not yet read from, or halfway through a head, may carry a
        request on its way (a client that connected just as the worker was being replaced):
        it gets SHUTDOWN_GRACE seconds to arrive, is answered, and then the connection closes."""
        if self.cycle is None and self.parsing is None and not self.pipeline:
            if self.settings.shutting_down and (self.fresh or self.in_head) and not self.closing:
                self.keep_alive = False
                self.loop.call_later(SHUTDOWN_GRACE, self._close_if_idle)
                return
            self._close()
        else:
            self.keep_alive = False

    def _close_if_idle(self) -> None:
        if self.cycle is None and self.parsing is None and not self.pipeline and not self.closed:
            self._close()

    def _reject(self, status: int, message: bytes) -> None:
        """A protocol error: answer it (if nothing else is in flight) and close."""
        self.parser = httptools.HttpRequestParser(self)  # the old one is in an error state
        broken = self.parsing if self.parsing is not None and self.parsing is self.cycle else None
        if broken is not None:
            # The body of the request in flight is unreadable, so its app would wait for it
            # forever: it is told as if the client had left (receive() -> http.disconnect),
            # and the error is answered here if its response has not started.
            unanswered = not broken.response_started
            broken.client_gone()
            self.parsing = None
            self.pipeline.clear()
            if unanswered and not self.closing:
                self.transport.write(simple_response(status, message, self._default_lines(), False))
            self._close_lingering()
            return
        answered = self.parsing is not None and self.parsing.response_done  # (its body was being drained)
        if self.cycle is None and not self.closing and not answered:
            self.transport.write(simple_response(status, message, self._default_lines(), False))
        else:
            if self.keep_alive and self.cycle is not None and self.parsing is not self.cycle:
                self.reject_after = (status, message)  # a bad request behind one in progress: answered after it
            self.keep_alive = False  # (a connection already closing after this response owes nothing more)
        self.parsing = None
        self.pipeline.clear()
        if self.cycle is None:
            self._close_lingering()
        else:
            self._pause_reading()

    def _handle_upgrade(self, rest: bytes) -> None:
        scope, self.upgrade_scope = self.upgrade_scope, None
        if self.upgrade == b"h2c" and scope is not None:
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n")
            settings_header = next(v for n, v in scope["headers"] if n == b"http2-settings")
            self._switch_to_http2(rest, (settings_header, scope))
            return
        if b"websocket" not in self.upgrade:
            # Another upgrade (or an h2c one that cannot be honoured): the request is served
            # as HTTP/1.1 (RFC 9110 section 7.8 lets a server ignore Upgrade), then the connection closes.
            if self.body_after_upgrade is not None:
                self._read_body_after_ignored_upgrade(rest)
            else:
                self._pause_reading()
            return
        if not self.settings.ws_enabled:
            self._reject(400, b"Unsupported upgrade request")
            return
        if self.cycle is None:
            self._switch_to_websocket(scope, rest)  # type: ignore[arg-type]
        else:  # pipelined behind a response still in progress: hand over once it is done
            self.upgrade_scope, self.upgrade_rest = scope, rest
            self._pause_reading()

    def _read_body_after_ignored_upgrade(self, rest: bytes) -> None:
        """llhttp treats everything after an upgrade request's head as the new protocol, so the body
        of a request whose upgrade is ignored (``curl --http2 -d ...``) would be lost. A second parser
        reads it, framed as the head declared (the head is already checked: only framing is needed)."""
        self.parsing, self.body_after_upgrade = self.body_after_upgrade, None
        if self.transfer_encoding is not None:
            framing = b"Transfer-Encoding: chunked"
        else:
            framing = b"Content-Length: %d" % self.declared_length
        self.parser = httptools.HttpRequestParser(_BodyOnly(self))
        self.data_received(b"POST / HTTP/1.1\r\nConnection: close\r\n" + framing + b"\r\n\r\n" + rest)

    def _can_upgrade_to_h2c(self) -> bool:
        """RFC 7540 §3.2: honour ``Upgrade: h2c`` for a bodyless request with HTTP2-Settings."""
        if self.settings.http != "auto" or self.settings.is_ssl or self.cycle is not None or self.pipeline:
            return False
        names = {name for name, _ in self.headers}
        if b"http2-settings" not in names or b"transfer-encoding" in names:
            return False
        return all(value.strip() == b"0" for name, value in self.headers if name == b"content-length")

    def _hand_over(self) -> None:
        """This object is done with the connection: another protocol takes the transport."""
        settings = self.settings
        settings.connections.discard(self)
        if self.read_paused:
            self.read_paused = False
            settings.hangups.unwatch(self.fd, self)
            self.transport.resume_reading()
        self.closed = True

    def _switch_to_websocket(self, scope: dict, early_data: bytes) -> None:
        self.upgrade_scope, self.upgrade_rest = None, b""
        self._hand_over()
        self.settings.switch.to_websocket(self.settings, self.transport, self.fd, scope, early_data)

    def _switch_to_http2(self, data: bytes, upgrade: tuple | None = None) -> None:
        self._hand_over()
        self.settings.switch.to_http2(self.settings, self.transport, self.server, self.client, self.fd, data, upgrade)

    # ------------------------------------------------------------------ cycle -> wire
    def supports_trailers(self, cycle: RequestCycle) -> bool:
        return self.http11

    def send_continue(self) -> None:
        if not self.closed:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def send_head(self, cycle: RequestCycle, status: int, headers: Any, body: bytes, more: bool) -> None:
        if cycle.expect_100 and self.parsing is cycle:
            self.keep_alive = False  # the client still holds back the body: what it sends next is that body
        info = build_head(
            status, headers, len(body), more, self.keep_alive, self.http11, self.head_request,
            self._default_lines(),
        )
        self.keep_alive = info.keep_alive
        self.head_info = info
        if self.head_request or status in NO_BODY_STATUSES:
            self.transport.write(info.head)
            return
        if info.content_length is not None:
            self.remaining = info.content_length
            self._check_length(len(body), more)
        if info.chunked:
            data = chunk(body)
            if more:
                self._write_soon(info.head + data)
            else:
                self.transport.write(info.head + data + b"0\r\n\r\n")
        elif more:
            self._write_soon(info.head + body if len(body) < 16384 else info.head)
            if len(body) >= 16384:
                self._write_soon(body)
        elif len(body) < 16384:
            self.transport.write(info.head + body)
        else:
            self.transport.writelines((info.head, body))

    def send_body(self, cycle: RequestCycle, body: bytes, more: bool) -> None:
        info = self.head_info
        if self.head_request or cycle.status in NO_BODY_STATUSES or self.closed:
            return
        if info.chunked:  # type: ignore[union-attr]
            data = chunk(body)
            if not more and not cycle.trailers:
                data += b"0\r\n\r\n"
        else:
            if info.content_length is not None:  # type: ignore[union-attr]
                self._check_length(len(body), more)
            data = body
        if more:
            if data:
                self._write_soon(data)
        elif self.out:
            if data:
                self.out.append(data)
            self.flush()
        elif data:
            self.transport.write(data)

    def _write_soon(self, data: bytes) -> None:
        """A part of a streamed response: written with the others the app sends in this pass of
        the event loop (one syscall instead of one per part). The flush runs before the loop
        polls again, so no disconnect can be noticed before these bytes reach the kernel."""
        out = self.out
        if not out:
            self.loop.call_soon(self.flush)
        out.append(data)
        self.out_size += len(data)
        if self.out_size >= 65536:  # (enough for one syscall: write now, so backpressure applies)
            self.flush()

    def flush(self) -> None:
        out = self.out
        if out:
            self.out = []
            self.out_size = 0
            if not self.closed:
                self.transport.write(b"".join(out))

    def _check_length(self, size: int, more: bool) -> None:
        self.remaining -= size  # type: ignore[operator]
        if self.remaining < 0:  # type: ignore[operator]
            raise RuntimeError("Response content longer than Content-Length")
        if not more and self.remaining:
            # Too short: the only honest signal left is closing the connection.
            self.keep_alive = False
            error_logger.error("Response content shorter than Content-Length")

    def send_trailers(self, cycle: RequestCycle, headers: Any, more: bool) -> None:
        self.trailer_headers.extend(headers)  # all trailer messages go out as one block
        if more:
            return
        headers, self.trailer_headers = self.trailer_headers, []
        if self.head_request or self.closed or not self.head_info.chunked:  # type: ignore[union-attr]
            return  # (no chunked body, e.g. 204 or an app-provided length: nowhere to put them)
        self.out.append(trailer_block(headers))
        self.flush()

    async def send_file(self, cycle: RequestCycle, status: int, headers: Any, path: str) -> None:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            has_length = any(name.lower() == b"content-length" for name, _ in headers)
            if not has_length:
                headers = [*headers, (b"content-length", str(size).encode("ascii"))]
            self.send_head(cycle, status, headers, b"", True)
            self.flush()
            if self.head_request or status in NO_BODY_STATUSES:
                return
            cycle.bytes_sent = size
            if self.write_paused:
                await self.drain()
            try:
                await self.loop.sendfile(self.transport, fh, 0, size)
            except (NotImplementedError, AttributeError):
                await self._copy_file(fh)
            except (ConnectionError, RuntimeError) as exc:
                if self.closed:
                    raise ClientDisconnected("the client has disconnected") from exc
                raise

    async def _copy_file(self, fh: Any) -> None:
        while data := fh.read(65536):
            if self.closed:
                raise ClientDisconnected("the client has disconnected")
            self.transport.write(data)
            if self.write_paused:
                await self.drain()

    def send_error(self, cycle: RequestCycle, status: int) -> None:
        if self.closed:
            return
        if cycle.expect_100 and self.parsing is cycle:
            self.keep_alive = False
        self.transport.write(
            simple_response(status, status_text(status), self._default_lines(), self.keep_alive)
        )

    def _default_lines(self) -> bytes:
        """server, date and --header lines for responses Tether writes itself (errors)."""
        return self.settings.head_lines

    def abort_response(self, cycle: RequestCycle) -> None:
        self.keep_alive = False
        self._close()
