"""HTTP/2 over an asyncio transport: h2's events <-> one RequestCycle per stream.

Framing, HPACK, stream states and flow-control arithmetic are the ``h2`` library's. This module
is glue, and the policy h2 leaves to a server:

* Each stream is one request on the shared ``RequestCycle``; its ``conn`` is an ``H2Stream``,
  which gives the cycle the same interface HTTP/1.1 does (send_head, send_body, drain, ...).
* The client leaving is per stream: RST_STREAM -> that stream's ``client_gone()`` at once; the
  connection closing (FIN, RST, GOAWAY, a missed PING) -> every stream's.
* Backpressure both ways. Request bodies: WINDOW_UPDATE is granted only as the app consumes
  the body (``body_consumed``), so a slow app holds the client to the initial window instead
  of buffering without bound. Responses: data waits for the peer's window, and ``send()``
  waits (``drain``) until its data has gone to the kernel, as on HTTP/1.1.
* Abuse: RST_STREAM, PING, SETTINGS and empty DATA frames are counted per second; past the
  limits the connection gets GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487, and its
  cousins). h2 itself bounds CONTINUATION sequences (CVE-2024-27316) and header list sizes.
* Streams beyond ``--h2-max-concurrent-streams`` are refused with REFUSED_STREAM (a stream
  error, RFC 9113 §5.1.2); h2's own, connection-fatal check only stops a client that ignores
  that by a wide margin.
"""

from __future__ import annotations

import os
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import hpack
import hpack.hpack
import hyperframe.frame
import hpack.table
from h2.errors import ErrorCodes, _error_code_from_int
from h2.settings import SettingCodes
from h2.utilities import HeaderValidationFlags, validate_headers

from ..cycle import RequestCycle
from ..errors import ClientDisconnected
from ..logs import error_logger
from ..proxy import apply_proxy_headers
from .keepalive import Pinger
from .stall import WRITE_HIGH_WATER, WritePause, WriteStall, wake_all
from .wire import NO_BODY_STATUSES, check_field, declared_length, decode_path, status_text

# RFC 9113 §8.2.2: connection-specific header fields must not appear in HTTP/2.
CONNECTION_HEADERS = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
MAX_RESETS_PER_SECOND = 200
LINGER_SECONDS = 2.0  # how long a connection closed for an error drains the client's input
MAX_CONTROL_FRAMES_PER_SECOND = 1000
PUMP_QUANTUM = 65536  # response bytes a stream sends per turn when several wait for the socket
PUMP_BURST = 262144  # response bytes framed per loop pass, whatever the socket would take
_EMPTY: tuple = ()


class _QuietLog:
    """hpack logs every integer and header it codes at DEBUG (~20 calls per request, a tenth of
    the per-request cost): Tether's HTTP/2 connections use this instead of hpack's logger."""

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass


hpack.hpack.log = _QuietLog()  # type: ignore[assignment]


class _Table(hpack.table.HeaderTable):
    """An HPACK dynamic table that counts its changes, so that coding results can be reused."""

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.generation += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        self.generation += 1
        hpack.table.HeaderTable.maxsize.fset(self, value)  # type: ignore[attr-defined]


# HPACK coding is a function of (header block, dynamic table): while the table is unchanged, a
# block that changed nothing codes the same again. Clients repeat their request headers and
# apps their response headers, so both directions keep a few recent results per connection
# (about a quarter of the per-request cost in h2load runs). Small and bounded per connection.
_CACHED_BLOCKS = 32
_CACHED_BLOCK_SIZE = 1024


class _Encoder(hpack.Encoder):
    """Response headers: no Huffman coding (pure Python per character in hpack, for a few bytes
    on headers the dynamic table mostly indexes anyway), and recent results reused."""

    def __init__(self) -> None:
        super().__init__()
        self.header_table = _Table()
        self.recent: dict = {}

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        table = self.header_table
        try:
            key = tuple(headers)
            hit = self.recent.get(key)
        except TypeError:
            key = hit = None
        if hit is not None and hit[1] == table.generation and not table.resized:
            return hit[0]
        generation = table.generation
        data = super().encode(headers, huffman=False)
        if key is not None and table.generation == generation:  # (it changed nothing)
            if len(self.recent) >= _CACHED_BLOCKS:
                self.recent.clear()
            self.recent[key] = (data, generation)
        return data


class _Decoder(hpack.Decoder):
    """Request headers: recent results reused while the table and the size limit are unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.header_table = _Table()
        self.max_allowed_table_size = self.header_table.maxsize
        self.recent: dict = {}

    def decode(self, data: Any, raw: bool = False) -> Any:
        table = self.header_table
        if len(data) > _CACHED_BLOCK_SIZE:
            return self._decode(data, raw)
        data = bytes(data)
        hit = self.recent.get(data)
        if hit is not None and hit[1] == table.generation and hit[2] == self.max_header_list_size and hit[3] == raw:
            return list(hit[0])
        generation = table.generation
        headers = self._decode(data, raw)
        if table.generation == generation:
            if len(self.recent) >= _CACHED_BLOCKS:
                self.recent.clear()
            self.recent[data] = (tuple(headers), generation, self.max_header_list_size, raw)
        return headers


    def _decode(self, data: Any, raw: bool) -> Any:
        try:
            return super().decode(data, raw)
        except hpack.OversizedHeaderListError:
            raise  # (h2 answers it with ENHANCE_YOUR_CALM)
        except (hpack.HPACKError, IndexError, TypeError, UnicodeDecodeError) as exc:
            raise _CompressionError(f"invalid header block: {exc}") from None


class _CompressionError(h2.exceptions.ProtocolError):
    """RFC 9113 §4.3: a header block that does not decode is a COMPRESSION_ERROR (h2 would
    report every decoding failure as PROTOCOL_ERROR)."""

    error_code = ErrorCodes.COMPRESSION_ERROR


class _FrameBuffer(h2.frame_buffer.FrameBuffer):
    """h2 holds up to 64 CONTINUATION frames of a header block before it checks anything: up to
    64 x the frame size per connection (CVE-2024-27316). Stop earlier: an encoded block larger
    than the header list limit (plus a frame of slack) cannot decode within it."""

    def __init__(self, max_block: int) -> None:
        super().__init__(server=True)
        self.max_block = max_block

    def _update_header_buffer(self, f: Any) -> Any:
        if self._headers_buffer:
            size = sum(len(part.data) for part in self._headers_buffer) + len(getattr(f, "data", b""))
            if size > self.max_block:
                raise h2.exceptions.DenialOfServiceError(f"header block over {self.max_block} bytes")
        return super()._update_header_buffer(f)


class _Settings(h2.settings.Settings):
    """Our SETTINGS. The advertised MAX_CONCURRENT_STREAMS is enforced by Tether with
    REFUSED_STREAM (a stream error); h2 applies this property as a connection-fatal limit, so
    it gets a wider one, reached only by a client that ignores the refusals."""

    @property
    def max_concurrent_streams(self) -> int:
        return 2 * self.get(SettingCodes.MAX_CONCURRENT_STREAMS, 100) + 16


class _Connection(h2.connection.H2Connection):
    """h2's connection, with one correction: a received GOAWAY does not end it.

    h2 moves its state machine to CLOSED on any GOAWAY and drops the frames it has queued
    (python-hyper/h2#1181), after which the streams in flight can never be answered. RFC 9113
    section 6.8 says the opposite: a GOAWAY stops *new* streams; those already opened complete.
    A client's GOAWAY (Node's ``session.close()`` sends GOAWAY NO_ERROR, last stream 0, then waits
    for its streams) therefore only becomes the ``ConnectionTerminated`` event here, and
    ``H2Protocol._goaway_received`` decides what ends. This is the one place Tether overrides h2's
    connection logic (tests/test_h2_goaway.py)."""

    def _receive_goaway_frame(self, frame: Any) -> tuple:
        event = h2.events.ConnectionTerminated()
        event.error_code = _error_code_from_int(frame.error_code)
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


def response_headers(status: int, headers: Any, default_headers: list, body_length: int | None = None) -> list:
    """The app's headers as an HTTP/2 header list: checked (``wire.check_field``), lower-case
    names, connection-specific fields dropped (RFC 9113 §8.2.2), Tether's server/date headers
    appended, and a content-length when the whole body is known (``body_length``) and the app
    gave none. Sans-I/O."""
    try:
        key = tuple(headers)
        part = _APP_PARTS.get(key)
    except TypeError:  # (unhashable header items, e.g. lists: not cached)
        key = part = None
    if part is None:
        part = _app_part(headers)
        if key is not None:
            if len(_APP_PARTS) >= 512:
                _APP_PARTS.clear()
            _APP_PARTS[key] = part
    pairs, has_length = part
    result = [(b":status", b"%d" % status), *pairs]
    if body_length is not None and not has_length and status not in NO_BODY_STATUSES:
        result.append((b"content-length", b"%d" % body_length))
    result.extend(default_headers)
    return result


# The checked, lower-cased header pairs by the app's header list (as wire.build_head does for
# HTTP/1.1): apps repeat a few lists, so the checks run once per distinct list.
_APP_PARTS: dict = {}


def _app_part(headers: Any) -> tuple[list, bool]:
    pairs = []
    has_length = False
    for item in headers:
        name, value = check_field(item)
        name = name.lower()
        if name in CONNECTION_HEADERS:
            continue
        if name == b"content-length":
            if not value.strip().isdigit():
                raise RuntimeError(f"invalid content-length header {value!r}")
            has_length = True
        pairs.append((name, value))
    return pairs, has_length


def request_scope(headers: list, settings: Any, server: Any, client: Any, scheme: str) -> dict:
    """The ASGI scope of a stream's request headers (h2 has validated them). Sans-I/O."""
    method = path = authority = b""
    plain = []
    has_host = False
    for name, value in headers:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":scheme":
                scheme = value.decode("latin-1")
        else:
            if name == b"host":
                has_host = True
            plain.append((name, value))
    if authority and not has_host:
        plain.insert(0, (b"host", authority))
    raw_path, _, query = path.partition(b"?")
    decoded = decode_path(raw_path)
    root_path = settings.root_path
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "2",
        "server": server,
        "client": client,
        "scheme": scheme,
        "method": method.decode("latin-1"),
        "root_path": root_path,
        "path": root_path + decoded if root_path else decoded,
        "raw_path": raw_path,
        "query_string": query,
        "headers": plain,
        "state": settings.lifespan_state.copy(),
        "extensions": {"http.response.trailers": {}, "http.response.pathsend": {}},
    }
    if settings.proxy_headers:
        apply_proxy_headers(scope, settings)
    return scope


def _without_hop_headers(headers: list) -> list:
    """An h2c upgrade request's headers as an HTTP/2 request's: the HTTP/1.1 hop's own fields
    (Connection, Upgrade, HTTP2-Settings, and whatever Connection names) do not reach the app."""
    named = {token.strip().lower() for name, value in headers if name == b"connection" for token in value.split(b",")}
    drop = CONNECTION_HEADERS | named | {b"http2-settings"}
    return [(name, value) for name, value in headers if name not in drop]


def server_connection(options: Any) -> h2.connection.H2Connection:
    """The h2 state machine of one server connection, configured from the --h2-* options
    (``HTTP2Settings``). bench/h2_ceiling.py times this same object."""
    # Inbound headers are validated with h2's own rules, but here (_malformed) rather than
    # inside h2: a malformed request is then a stream error, as RFC 9113 section 8.1.1 requires
    # (h2 makes it a connection error), and a header list equal to the last valid one is not
    # validated again (h2load, browsers: the same list on every request; it was a quarter of
    # the per-request cost). Outbound headers are built and checked by response_headers(), so
    # h2's second pass over them is skipped too.
    config = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                       validate_inbound_headers=False,
                                       validate_outbound_headers=False, normalize_outbound_headers=False)
    conn = _Connection(config=config)
    conn.encoder = _Encoder()
    conn.decoder = _Decoder()
    conn.incoming_buffer = _FrameBuffer(options.max_header_list_size + 16384)
    conn.local_settings = _Settings(client=False, initial_values={
        SettingCodes.MAX_CONCURRENT_STREAMS: options.max_concurrent_streams,
        SettingCodes.MAX_HEADER_LIST_SIZE: options.max_header_list_size,
        SettingCodes.INITIAL_WINDOW_SIZE: options.initial_window_size,
        SettingCodes.MAX_FRAME_SIZE: options.max_frame_size,
        SettingCodes.ENABLE_PUSH: 0,
    })
    # h2 takes initial_values as already in force, so it never applies these on the
    # client's SETTINGS ACK: apply them here (they bind the client from its first frame on).
    conn.decoder.max_header_list_size = options.max_header_list_size
    conn.max_inbound_frame_size = options.max_frame_size
    return conn


class H2Stream:
    """One stream: what its RequestCycle sees as ``conn``."""

    __slots__ = ("proto", "stream_id", "cycle", "settings", "loop", "pending", "pending_end", "trailers",
                 "drain_waiters", "unacked", "closed", "head_request", "ended_by_client", "received",
                 "blocked_since")

    def __init__(self, proto: "H2Protocol", stream_id: int, head_request: bool) -> None:
        self.proto = proto
        self.stream_id = stream_id
        self.cycle: RequestCycle | None = None
        self.settings = proto.settings
        self.loop = proto.loop
        self.pending: Any = b""  # response data waiting for window or for the socket (a memoryview)
        self.pending_end = False
        self.trailers: list | None = None
        self.drain_waiters: list = []
        self.unacked = 0  # request body bytes received, not yet consumed by the app
        self.closed = False
        self.head_request = head_request
        self.ended_by_client = False
        self.received = 0  # request body bytes, for --limit-request-body
        self.blocked_since = 0.0  # response data waiting for the peer's window since (--timeout-write)

    @property
    def write_paused(self) -> bool:
        return self.has_output or self.proto.write_paused

    # ------------------------------------------------------------------ cycle -> wire
    def supports_trailers(self, cycle: RequestCycle) -> bool:
        return True

    def send_continue(self) -> None:
        self.proto.send_headers(self, [(b":status", b"100")], False)

    def send_head(self, cycle: RequestCycle, status: int, headers: Any, body: bytes, more: bool) -> None:
        proto = self.proto
        if self.closed:
            return
        whole = None if more else len(body)
        header_list = response_headers(status, headers, proto.settings_headers(), whole)
        bodyless = self.head_request or status in NO_BODY_STATUSES
        if bodyless:
            body = b""
        end_now = not more and not body and not cycle.trailers
        proto.send_headers(self, header_list, end_now, flush=end_now)  # (else: one write with the body)
        if not end_now:
            self.queue(body, not more and not cycle.trailers)

    def send_body(self, cycle: RequestCycle, body: bytes, more: bool) -> None:
        if self.closed:
            return
        if self.head_request or cycle.status in NO_BODY_STATUSES:
            body = b""
        self.queue(body, not more and not cycle.trailers)

    def send_trailers(self, cycle: RequestCycle, headers: Any, more: bool) -> None:
        trailers = self.trailers if self.trailers is not None else []
        for item in headers:
            name, value = check_field(item, "trailer")
            name = name.lower()
            if name not in CONNECTION_HEADERS:
                trailers.append((name, value))
        self.trailers = trailers
        if not more and not self.closed:
            self.proto.pump(self)

    def queue(self, data: bytes, end: bool) -> None:
        # A memoryview, so that taking a frame off the front costs the frame, not the rest: a
        # 32 MiB body re-sliced as bytes for each 16 KiB frame was O(n^2) and held the loop.
        self.pending = memoryview(bytes(self.pending) + data) if self.pending else memoryview(data)
        self.pending_end = end
        self.proto.pump(self)

    @property
    def has_output(self) -> bool:
        """Response data, its end or its trailers still waiting (for window or for the socket)."""
        return bool(self.pending) or self.pending_end or self.trailers is not None

    async def send_file(self, cycle: RequestCycle, status: int, headers: Any, path: str) -> None:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if not any(name.lower() == b"content-length" for name, _ in headers):
                headers = [*headers, (b"content-length", str(size).encode("ascii"))]
            self.send_head(cycle, status, headers, b"", True)
            cycle.bytes_sent = size
            while True:
                data = fh.read(65536)
                if self.closed:
                    raise ClientDisconnected("the HTTP/2 stream was reset")
                self.queue(data, not data)
                if self.write_paused:
                    await self.drain()
                if not data:
                    return

    def send_error(self, cycle: RequestCycle, status: int) -> None:
        if self.closed:
            return
        body = status_text(status)
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
        self.proto.send_headers(self, response_headers(status, headers, self.proto.settings_headers()), False)
        self.queue(body, True)

    def abort_response(self, cycle: RequestCycle) -> None:
        self.proto.reset(self, ErrorCodes.INTERNAL_ERROR)

    async def drain(self) -> None:
        while self.write_paused:
            if self.closed:
                raise ClientDisconnected("the HTTP/2 stream was reset")
            waiter = self.loop.create_future()
            self.drain_waiters.append(waiter)
            await waiter

    def wake_drainers(self, exc: BaseException | None = None) -> None:
        waiters, self.drain_waiters = self.drain_waiters, []
        wake_all(waiters, exc)

    # ------------------------------------------------------------------ cycle bookkeeping
    def body_consumed(self) -> None:
        """The app took the body received so far: grant the client that much window again."""
        if self.unacked:
            self.proto.acknowledge(self, self.unacked)
            self.unacked = 0

    def response_complete(self, cycle: RequestCycle) -> None:
        if not self.ended_by_client and not self.closed:
            # RFC 9113 §8.1: the response is complete while the client is still sending:
            # stop the upload with NO_ERROR once the response has gone out.
            self.proto.reset_after_response(self)
        elif self.unacked:
            self.body_consumed()

    def app_finished(self, cycle: RequestCycle) -> None:
        self.proto.stream_finished(self)


_REQUEST = HeaderValidationFlags(is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False)
_TRAILERS = _REQUEST._replace(is_trailer=True)


class H2Protocol(WritePause):
    """The asyncio protocol of one HTTP/2 connection (set with ``transport.set_protocol``)."""

    __slots__ = (
        "settings", "loop", "transport", "conn", "streams", "server", "client", "scheme", "write_paused",
        "closed", "closing", "idle_since", "window_start", "resets", "control_frames", "pinger",
        "last_stream_id", "fd", "stall", "draining", "valid_headers", "unflushed", "flush_scheduled",
        "peer_goaway", "pump_scheduled",
    )

    def __init__(self, settings: Any, transport: Any, server: Any, client: Any, fd: int = -1) -> None:
        self.settings = settings
        self.loop = settings.loop
        self.transport = transport
        self.server = server
        self.client = client
        self.fd = fd
        self.scheme = "https" if settings.is_ssl else "http"
        options = settings.h2
        self.conn = server_connection(options)
        self.streams: dict[int, H2Stream] = {}
        self.write_paused = False
        self.closed = False
        self.closing = False
        self.idle_since = self.loop.time()
        self.window_start = self.loop.time()
        self.resets = 0
        self.control_frames = 0
        self.pinger = Pinger(self.loop, options.ping_interval, options.ping_timeout, 8, self._send_ping, self._ping_timed_out)
        self.last_stream_id = 0
        self.stall = WriteStall()
        self.draining = False
        self.valid_headers: list | None = None  # the last request header list that passed _malformed
        self.unflushed = 0  # response bytes h2 holds for flush_soon
        self.flush_scheduled = False
        self.peer_goaway = False  # the client sent GOAWAY NO_ERROR: close once its streams are done
        self.pump_scheduled = False

    # ------------------------------------------------------------------ start
    def start(self, data: bytes = b"", upgrade: tuple | None = None) -> None:
        """Begin: prior knowledge (``data`` starts with the preface) or an h2c upgrade, whose
        ``(settings_header, scope)`` makes the HTTP/1.1 request stream 1."""
        settings = self.settings
        settings.connections.add(self)
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER)  # send() returns once the kernel has the bytes
        if upgrade is None:
            self.conn.initiate_connection()
        else:
            settings_header, scope = upgrade
            try:
                self.conn.initiate_upgrade_connection(settings_header)
            except Exception:  # a malformed HTTP2-Settings header: RFC 9113 §3.2.1 → close
                self.transport.close()
                return
            scope["http_version"] = "2"
            scope["headers"] = _without_hop_headers(scope["headers"])
            self._start_stream(1, scope, ended=True)
        self.flush()
        self.pinger.start()
        if data:
            self.data_received(data)

    def settings_headers(self) -> list:
        return self.settings.h2_default_headers

    # ------------------------------------------------------------------ transport events
    def connection_made(self, transport: Any) -> None:  # (the transport was handed over)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.draining:
            return  # after a GOAWAY for an error: read and discard until the client closes
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            if error_logger.isEnabledFor(10):
                error_logger.debug("HTTP/2 protocol error from %s: %s", self.client, exc)
            self._close_after_goaway()  # (h2 has queued the GOAWAY)
            return
        for event in events:
            if self.draining:
                return  # a flood limit closed the connection: the rest is not served
            kind = type(event)
            if kind is h2.events.RequestReceived:
                self._request(event)
            elif kind is h2.events.DataReceived:
                self._data(event)
            elif kind is h2.events.StreamEnded:
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.ended_by_client = True
                    if stream.cycle is not None:
                        stream.cycle.end_body()
            elif kind is h2.events.StreamReset:
                self._stream_reset(event.stream_id)
            elif kind is h2.events.TrailersReceived:
                self._trailers(event)
            elif kind is h2.events.WindowUpdated:
                self._window_opened(event.stream_id)
            elif kind is h2.events.RemoteSettingsChanged:
                if self._count_control_frame():
                    return
                self._window_opened(0)
            elif kind is h2.events.PingReceived:
                if self._count_control_frame():
                    return
            elif kind is h2.events.PingAckReceived:
                self.pinger.answered(event.ping_data)
            elif kind is h2.events.ConnectionTerminated:
                self._goaway_received(event)
        self.flush()
        if self.peer_goaway and not self.streams:
            self._close()

    def eof_received(self) -> None:
        self.flush()  # what send() accepted reaches the kernel before the streams are told
        return None  # an HTTP/2 client never half-closes: treat FIN as the end (connection_lost)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.settings.connections.discard(self)
        self.pinger.stop()
        gone = ClientDisconnected("the HTTP/2 connection was closed")
        for stream in list(self.streams.values()):
            self._stream_gone(stream, gone)

    def writable(self) -> None:
        """The socket has room again (WritePause.resume_writing)."""
        self.pump_all()
        if not self.write_paused:
            for stream in list(self.streams.values()):
                if not stream.write_paused:
                    stream.wake_drainers()

    # ------------------------------------------------------------------ incoming
    def _malformed(self, stream_id: int, headers: list, flags: HeaderValidationFlags) -> bool:
        """RFC 9113 section 8.1.1: a malformed request (or trailers) is a stream error of type
        PROTOCOL_ERROR; the connection and its other streams go on."""
        if headers == self.valid_headers:
            return False
        try:
            for _ in validate_headers(headers, flags):
                pass
        except h2.exceptions.ProtocolError as exc:
            if error_logger.isEnabledFor(10):
                error_logger.debug("malformed HTTP/2 request from %s: %s", self.client, exc)
            try:
                self.conn.reset_stream(stream_id, ErrorCodes.PROTOCOL_ERROR)
            except h2.exceptions.StreamClosedError:
                pass  # (the client reset it already, later in the same read)
            return True
        if not flags.is_trailer:
            self.valid_headers = headers
        return False

    def _trailers(self, event: Any) -> None:
        """Request trailers are not passed to the app (ASGI has no message for them); malformed
        ones still end the stream."""
        if self._malformed(event.stream_id, event.headers, _TRAILERS):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                self._stream_gone(stream, ClientDisconnected("the HTTP/2 stream had malformed trailers"))

    def _request(self, event: Any) -> None:
        stream_id = event.stream_id
        self.last_stream_id = max(self.last_stream_id, stream_id)
        if self._malformed(stream_id, event.headers, _REQUEST):
            return
        if self.closing or len(self.streams) >= self.settings.h2.max_concurrent_streams:
            try:
                self.conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            except h2.exceptions.StreamClosedError:
                pass  # (the client reset it already, later in the same read)
            return
        scope = request_scope(event.headers, self.settings, self.server, self.client, self.scheme)
        self._start_stream(stream_id, scope, ended=event.stream_ended is not None)
        limit = self.settings.limit_request_body
        if limit is not None and declared_length(scope["headers"]) > limit:
            self._body_too_large(self.streams[stream_id])

    def _start_stream(self, stream_id: int, scope: dict, ended: bool) -> None:
        """A stream's request, and its app started (a task: it first runs after this read)."""
        stream = H2Stream(self, stream_id, scope["method"] == "HEAD")
        # (a request that came whole has no body to wait for: no 100-continue to send)
        expect_100 = not ended and any(n == b"expect" and v.lower() == b"100-continue" for n, v in scope["headers"])
        cycle = stream.cycle = RequestCycle(scope, stream, expect_100)
        self.streams[stream_id] = stream
        self.idle_since = 0.0
        if ended:
            stream.ended_by_client = True
            cycle.end_body()
        cycle.start_request()

    def _data(self, event: Any) -> None:
        stream = self.streams.get(event.stream_id)
        length = event.flow_controlled_length
        if not event.data and event.stream_ended is None and self._count_control_frame():
            return
        if stream is None or stream.cycle is None:
            if length:
                self.conn.acknowledge_received_data(length, event.stream_id)
            return
        cycle = stream.cycle
        if cycle.client_left or cycle.response_done:
            if length:  # nobody will read it: give the window back at once
                self.conn.acknowledge_received_data(length, event.stream_id)
        else:
            stream.unacked += length
            stream.received += len(event.data)
            limit = self.settings.limit_request_body
            if limit is not None and stream.received > limit:
                self.conn.acknowledge_received_data(length, event.stream_id)
                self._body_too_large(stream)
                return
            if event.data:
                cycle.feed_body(event.data)
        if event.stream_ended is not None:
            stream.ended_by_client = True
            cycle.end_body()

    def _body_too_large(self, stream: H2Stream) -> None:
        """--limit-request-body: the app is told the request is gone; the client gets 413 if
        nothing was answered yet, and the stream ends (RST_STREAM NO_ERROR stops the upload)."""
        cycle = stream.cycle
        unanswered = cycle is not None and not cycle.response_started
        if cycle is not None:
            cycle.client_gone()
        if unanswered and not stream.closed:
            body = b"Request body too large"
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
            try:
                self.send_headers(stream, response_headers(413, headers, self.settings_headers()), False)
                stream.queue(body, True)
            except ClientDisconnected:
                return
            self.reset_after_response(stream)
        else:
            self.reset(stream, ErrorCodes.CANCEL)

    def _stream_reset(self, stream_id: int) -> None:
        self.resets += 1
        if self._over_limit():
            return
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._stream_gone(stream, ClientDisconnected("the HTTP/2 stream was reset by the client"))

    def _stream_gone(self, stream: H2Stream, exc: BaseException) -> None:
        stream.closed = True
        stream.pending = b""
        stream.pending_end = False
        stream.trailers = None
        if stream.cycle is not None:
            stream.cycle.client_gone()
        stream.wake_drainers(exc)
        if stream.cycle is None or stream.cycle.app_done:
            self.streams.pop(stream.stream_id, None)

    def _goaway_received(self, event: Any) -> None:
        """The client is going away. With NO_ERROR its streams complete (RFC 9113 section 6.8),
        including ones whose HEADERS follow the GOAWAY (Node queues its GOAWAY ahead of the
        HEADERS of streams it opened just before ``session.close()``), and the connection closes
        once none is left. With an error code the client gave up on the connection: its streams
        are disconnected now."""
        if event.error_code == ErrorCodes.NO_ERROR:
            self.peer_goaway = True  # (closed by data_received or stream_finished once no stream is left)
            return
        self.closing = True
        gone = ClientDisconnected(f"the HTTP/2 client sent GOAWAY {event.error_code!r}")
        for stream in list(self.streams.values()):
            self._stream_gone(stream, gone)
        self._close()

    # ------------------------------------------------------------------ floods
    def _over_limit(self) -> bool:
        now = self.loop.time()
        if now - self.window_start >= 1.0:
            self.window_start = now
            self.resets = self.control_frames = 0
            return False
        if self.resets > MAX_RESETS_PER_SECOND or self.control_frames > MAX_CONTROL_FRAMES_PER_SECOND:
            error_logger.warning("HTTP/2 client %s sent too many resets or control frames: GOAWAY", self.client)
            self.conn.close_connection(ErrorCodes.ENHANCE_YOUR_CALM, last_stream_id=self.last_stream_id)
            self._close_after_goaway()
            return True
        return False

    def _count_control_frame(self) -> bool:
        self.control_frames += 1
        return self._over_limit()

    # ------------------------------------------------------------------ outgoing
    def send_headers(self, stream: H2Stream, headers: list, end_stream: bool, flush: bool = True) -> None:
        try:
            self.conn.send_headers(stream.stream_id, headers, end_stream=end_stream)
        except h2.exceptions.StreamClosedError:
            self._stream_gone(stream, ClientDisconnected("the HTTP/2 stream was reset"))
            raise ClientDisconnected("the HTTP/2 stream was reset") from None
        except h2.exceptions.ProtocolError as exc:
            if self.closed or self.closing:
                self._stream_gone(stream, ClientDisconnected("the HTTP/2 connection is closing"))
                raise ClientDisconnected("the HTTP/2 connection is closing") from None
            raise RuntimeError(f"invalid response headers for HTTP/2: {exc}") from None
        if flush:
            self.flush_soon()

    def pump(self, stream: H2Stream, budget: int = PUMP_BURST) -> None:
        """Send what the stream's window allows, then its trailers, until the socket is full
        (``write_paused``: resume_writing goes on from there) or ``budget`` bytes went out (the
        next loop pass goes on: on loopback the kernel can take a 32 MiB body without ever
        pausing us, and framing it all at once held every other connection for 50 ms)."""
        conn = self.conn
        stream_id = stream.stream_id
        try:
            while (stream.pending or stream.pending_end) and budget > 0 and not self.write_paused:
                pending = stream.pending
                size = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size, len(pending))
                if size <= 0 and pending:
                    if not stream.blocked_since:
                        stream.blocked_since = self.loop.time()
                    break  # blocked: WindowUpdated resumes it
                stream.blocked_since = 0.0
                stream.pending = pending[size:] if size < len(pending) else b""
                end = stream.pending_end and not stream.pending
                conn.send_data(stream_id, pending[:size] if size < len(pending) else pending, end_stream=end)
                budget -= size
                if end:
                    stream.pending_end = False
                self.unflushed += size
                if self.unflushed >= 65536:
                    self.flush()  # (to the kernel now: a full socket pauses us, and the loop breaks)
            if not stream.pending and not stream.pending_end and stream.trailers is not None:
                trailers, stream.trailers = stream.trailers, None
                conn.send_headers(stream_id, trailers, end_stream=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as exc:
            if isinstance(exc, h2.exceptions.StreamClosedError) or self.closed or self.closing:
                self._stream_gone(stream, ClientDisconnected("the HTTP/2 stream was reset"))
                raise ClientDisconnected("the HTTP/2 stream was reset") from None
            raise RuntimeError(f"invalid HTTP/2 response: {exc}") from None
        self.flush_soon()
        if budget <= 0 and stream.pending and not self.write_paused:
            self._pump_soon()
        if not stream.write_paused:
            stream.wake_drainers()

    def _pump_soon(self) -> None:
        if not self.pump_scheduled:
            self.pump_scheduled = True
            self.loop.call_soon(self.pump_all)

    def pump_all(self) -> None:
        """The socket has room (or the connection window opened): send the waiting streams'
        data in turns of PUMP_QUANTUM bytes each, so that one large body does not hold back
        the responses of the other streams on the connection; PUMP_BURST bytes per loop pass."""
        self.pump_scheduled = False
        budget = PUMP_BURST
        while not self.write_paused and not self.closed:
            if budget <= 0:
                self._pump_soon()
                return
            waiting = [stream for stream in self.streams.values() if stream.has_output and not stream.closed]
            if not waiting:
                return
            progress = False
            for stream in waiting:
                if self.write_paused:
                    return
                before = len(stream.pending), stream.pending_end, stream.trailers is not None
                try:
                    self.pump(stream, PUMP_QUANTUM)
                except (ClientDisconnected, RuntimeError):
                    pass  # the waiting send() is told via its drain waiter
                budget -= before[0] - len(stream.pending)
                progress = progress or before != (len(stream.pending), stream.pending_end, stream.trailers is not None)
            if not progress:
                return  # every waiting stream is blocked on its own window

    def _window_opened(self, stream_id: int) -> None:
        if stream_id == 0:
            self.pump_all()
            return
        stream = self.streams.get(stream_id)
        if stream is not None and not stream.closed and stream.has_output:
            try:
                self.pump(stream)
            except (ClientDisconnected, RuntimeError):
                pass  # the waiting send() is told via its drain waiter

    def acknowledge(self, stream: H2Stream, size: int) -> None:
        if stream.closed or self.closed:
            return
        try:
            self.conn.acknowledge_received_data(size, stream.stream_id)
        except h2.exceptions.StreamClosedError:
            return
        self.flush()

    def reset(self, stream: H2Stream, code: ErrorCodes) -> None:
        if not stream.closed and not self.closed:
            stream.closed = True
            try:
                self.conn.reset_stream(stream.stream_id, code)
            except h2.exceptions.StreamClosedError:
                pass
            self.flush()

    def reset_after_response(self, stream: H2Stream) -> None:
        if stream.has_output:
            return  # (the response's end is still waiting for window; the client ends it)
        self.reset(stream, ErrorCodes.NO_ERROR)

    def stream_finished(self, stream: H2Stream) -> None:
        if stream.closed or stream.cycle is None or stream.cycle.response_done:
            if not (stream.pending or stream.pending_end):
                self.streams.pop(stream.stream_id, None)
        if not self.streams:
            self.idle_since = self.loop.time()
            if self.closing or self.peer_goaway:
                self._close()

    def flush_soon(self) -> None:
        """Responses the app tasks send in one pass of the event loop go out in one write (with
        h2load -m 10 or a browser, several streams answer per pass): one syscall, not one each."""
        if self.unflushed >= 65536:  # (enough for one syscall: write now, so backpressure applies)
            self.flush()
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        self.unflushed = 0
        data = self.conn.data_to_send()
        if data and not self.closed and not self.draining:
            self.transport.write(data)

    def check_timeouts(self, now: float) -> None:
        """From the once-a-second sweep: --timeout-write for a stalled connection or stream
        (a peer that stopped reading, or that keeps a stream's window at zero)."""
        timeout = self.settings.timeout_write
        if self.closed or not timeout:
            return
        if self.stall.expired(self.transport, now, timeout):
            self.transport.abort()
            self.connection_lost(ConnectionResetError("write timeout"))
            return
        for stream in list(self.streams.values()):
            if stream.blocked_since and now - stream.blocked_since > timeout and not stream.closed:
                error_logger.debug("HTTP/2 stream %d of %s: no window for %ss", stream.stream_id, self.client, timeout)
                self.reset(stream, ErrorCodes.CANCEL)
                self._stream_gone(stream, ClientDisconnected("the HTTP/2 peer stopped reading"))

    # ------------------------------------------------------------------ keep-alive pings
    def _send_ping(self, payload: bytes) -> bool:
        if self.closed:
            return False
        self.conn.ping(payload)
        self.flush()
        return True

    def _ping_timed_out(self) -> None:
        """No PING ACK in time: the peer vanished without FIN or RST."""
        if not self.closed:
            error_logger.info("HTTP/2 peer %s did not answer a PING within %ss: closing", self.client,
                              self.settings.h2.ping_timeout)
            self.transport.abort()
            self.connection_lost(ConnectionResetError("PING timeout"))

    # ------------------------------------------------------------------ shutdown
    def close_idle(self) -> None:
        """Keep-alive timeout or shutdown: GOAWAY; close once in-flight streams are done."""
        if self.closing and self.streams:
            return
        self.closing = True
        if not self.closed:
            # Not h2's close_connection(): that ends h2's state machine, and the streams in
            # flight could not send their responses any more. The GOAWAY is written by hand
            # (the refusal of new streams is ours, in _request).
            self.flush()
            goaway = hyperframe.frame.GoAwayFrame(0, last_stream_id=self.last_stream_id, error_code=ErrorCodes.NO_ERROR)
            self.transport.write(goaway.serialize())
        if not self.streams:
            self._close()

    def _close_after_goaway(self) -> None:
        """Send the GOAWAY, then FIN, and drain what the client still sends for a moment before
        closing: closing a socket with unread input sends RST, and an RST can destroy the
        GOAWAY in the client's receive buffer before the client has read it."""
        self.flush()
        self.closing = True
        self.draining = True
        transport = self.transport
        if transport.can_write_eof() and not transport.is_closing():
            transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self._close)
        else:
            self._close()

    def _close(self) -> None:
        self.closing = True
        if not self.transport.is_closing():
            self.flush()  # (a flush_soon may be pending: the last responses go out first)
            self.transport.close()

