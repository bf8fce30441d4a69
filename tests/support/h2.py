"""HTTP/2 clients for tests, and the frame vocabulary of RFC 9113.

* ``frame`` / ``settings`` / ``ping`` / ``rst`` / ``priority`` / ``goaway`` / ``window_update``: a
  frame built by hand (§4.1: 9-byte header + payload), so that malformed input is possible;
  ``request_headers`` a valid header list (blocks come from hpack, or by hand when they must be
  invalid).
* ``RawH2``: a byte-exact client over a raw socket, for the conformance corpus: it sends whatever
  the test builds and reports what the server did (``outcome``). The server's frames are split
  and parsed here, never checked: a frame a library would refuse is reported as it came.
* ``H2Client``: HTTP/2 with the ``h2`` library over a raw socket, for functional tests: the test
  decides when each frame goes, and every received frame is also kept raw.
* ``node_client``: Node's built-in ``node:http2`` (tests/node/h2_client.mjs), a real third client.

Every read has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import hpack
import hyperframe.frame
from h2.errors import ErrorCodes

from tests.support.asgi import receive_body
from tests.support.disconnect import hang_up
from tests.support.sockets import SocketClient
from tests.support.waiting import wait_until

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frame types (§6) and flags.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# Error codes (§7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, \
    REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM = range(12)
# Settings (§6.5.2).
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = \
    range(1, 7)
MAX_WINDOW = 2**31 - 1
TIMEOUT = 5.0


# ---------------------------------------------------------------------- frames by hand
def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def settings(*pairs: tuple[int, int], ack: bool = False) -> bytes:
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment))


def rst(stream: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, stream, struct.pack(">I", code))


def ping(payload: bytes = b"12345678", ack: bool = False, stream: int = 0) -> bytes:
    return frame(PING, ACK if ack else 0, stream, payload)


def priority(stream: int, depends_on: int, weight: int = 15) -> bytes:
    return frame(PRIORITY, 0, stream, struct.pack(">IB", depends_on, weight))


def goaway(stream: int = 0, last: int = 0, code: int = NO_ERROR) -> bytes:
    return frame(GOAWAY, 0, stream, struct.pack(">II", last, code))


def request_headers(path: str = "/", method: str = "GET", extra: list | None = None,
                    authority: str = "127.0.0.1") -> list:
    return [(":method", method), (":scheme", "http"), (":path", path), (":authority", authority), *(extra or [])]


def split_frame(buffer: bytes) -> tuple[bytes, bytes] | None:
    """The first whole frame in ``buffer`` and what follows it, or None while it is incomplete."""
    if len(buffer) < 9:
        return None
    end = 9 + int.from_bytes(buffer[:3], "big")
    if len(buffer) < end:
        return None
    return buffer[:end], buffer[end:]


@dataclass
class Frame:
    """A frame as the server sent it."""

    kind: int
    flags: int
    stream: int
    payload: bytes

    @classmethod
    def parse(cls, raw: bytes) -> "Frame":
        return cls(raw[3], raw[4], struct.unpack(">I", raw[5:9])[0] & MAX_WINDOW, raw[9:])

    @property
    def error_code(self) -> int | None:
        if self.kind == GOAWAY:
            return struct.unpack(">I", self.payload[4:8])[0]
        if self.kind == RST_STREAM:
            return struct.unpack(">I", self.payload[:4])[0]
        return None

    def __repr__(self) -> str:
        return f"Frame(type={self.kind}, flags={self.flags:#x}, stream={self.stream}, {self.payload[:24]!r})"


# ---------------------------------------------------------------------- the app the corpus talks to
async def body_echo_app(scope: dict, receive: Any, send: Any) -> None:
    """200 with the request body echoed ("ok" without one); /slow answers after 1 s."""
    if scope["type"] != "http":
        return
    body = await receive_body(receive)
    if body is None:
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body or b"ok"})


# ---------------------------------------------------------------------- the raw-frame client
class RawH2(SocketClient):
    """A client connection after the preface exchange: our SETTINGS sent, the server's read and
    ACKed. With ``preface``, those bytes are sent instead and nothing is read yet."""

    def __init__(self, port: int, our_settings: tuple = (), preface: bytes | None = None,
                 timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.closed = False
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.last_goaway: tuple[int, int] | None = None  # (last stream id, code)
        self.server_settings: dict[int, int] = {}
        self.sock.sendall(PREFACE + settings(*our_settings) if preface is None else preface)
        if preface is not None:
            return
        first = self.read_frame()
        assert first is not None and first.kind == SETTINGS and not first.flags & ACK, first
        pairs = range(0, len(first.payload), 6)
        self.server_settings = dict(struct.unpack(">HI", first.payload[i:i + 6]) for i in pairs)
        self.sock.sendall(settings(ack=True))

    # -- sending
    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True

    def block(self, headers: list) -> bytes:
        return self.encoder.encode(headers)

    def headers(self, stream: int, headers: list, end_stream: bool = True, flags: int = END_HEADERS) -> bytes:
        return frame(HEADERS, flags | (END_STREAM if end_stream else 0), stream, self.block(headers))

    def request(self, stream: int, path: str = "/", end_stream: bool = True, **kwargs: Any) -> None:
        self.send(self.headers(stream, request_headers(path, **kwargs), end_stream))

    def post(self, stream: int, body: bytes, path: str = "/", extra: list | None = None) -> None:
        self.send(self.headers(stream, request_headers(path, "POST", extra), end_stream=False)
                  + frame(DATA, END_STREAM, stream, body))

    # -- receiving
    def _fill(self, deadline: float) -> bool:
        """More bytes came; False at the deadline or once the server closed (``closed``)."""
        try:
            data = self.receive(deadline)
        except OSError:
            data = b""
        if data is None:
            return False
        self.closed = self.closed or not data
        return bool(data)

    def read_frame(self, timeout: float = TIMEOUT) -> Frame | None:
        """The next frame, or None on timeout or close (``self.closed`` tells which)."""
        deadline = time.monotonic() + timeout
        while (whole := split_frame(self.buf)) is None:
            if self.closed or not self._fill(deadline):
                return None
        raw, self.buf = whole
        return Frame.parse(raw)

    def next_of(self, kind: int, timeout: float = 3.0) -> Frame | None:
        """The next frame of ``kind`` (other frames skipped), None if none came in time."""
        deadline = time.monotonic() + timeout
        while (event := self.read_frame(max(0.0, deadline - time.monotonic()))) is not None:
            if event.kind == kind:
                return event
        return None

    def outcome(self, stream: int | None = None, timeout: float = 3.0) -> tuple:
        """What the server did: ("goaway", code), ("rst", code) on ``stream``, ("response", status)
        on ``stream``, ("closed",) without GOAWAY, or ("nothing",) within the timeout. PINGs are
        answered, other frames skipped."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.read_frame(max(0.0, deadline - time.monotonic()))
            if event is None:
                return ("closed",) if self.closed else ("nothing",)
            if event.kind == GOAWAY:
                self.last_goaway = struct.unpack(">II", event.payload[:8])
                return ("goaway", self.last_goaway[1])
            if event.kind == RST_STREAM and (stream is None or event.stream == stream):
                return ("rst", event.error_code)
            if event.kind == HEADERS and (stream is None or event.stream == stream):
                headers = dict(self.decoder.decode(event.payload, raw=True))  # (always: keeps HPACK in step)
                return ("response", int(headers.get(b":status", b"0")))
            if event.kind == PING and not event.flags & ACK:
                self.send(ping(event.payload, ack=True))

    def body(self, stream: int, timeout: float = 3.0) -> bytes:
        """The DATA of ``stream`` up to END_STREAM (after its HEADERS were read)."""
        data = b""
        deadline = time.monotonic() + timeout
        while (event := self.read_frame(max(0.0, deadline - time.monotonic()))) is not None:
            if event.kind == DATA and event.stream == stream:
                data += event.payload
                if event.flags & END_STREAM:
                    return data
        raise AssertionError(f"stream {stream} did not end; got {data!r}")

    def closes(self, timeout: float = 4.0) -> bool:
        """The server closes the connection within ``timeout`` (frames in between skipped)."""
        deadline = time.monotonic() + timeout
        while self.read_frame(max(0.0, deadline - time.monotonic())) is not None:
            pass
        return self.closed

    def still_serves(self, stream: int) -> bool:
        """A fresh request on ``stream`` gets a 200 (the connection survived)."""
        self.request(stream)
        return self.outcome(stream) == ("response", 200)



# ---------------------------------------------------------------------- the h2-library client
class StreamResult:
    def __init__(self) -> None:
        self.headers: list | None = None
        self.data = bytearray()
        self.trailers: list | None = None
        self.ended = False
        self.reset: int | None = None

    @property
    def status(self) -> int:
        assert self.headers is not None, "no response headers"
        return int(dict(self.headers)[b":status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers or ()).get(name)


class H2Client(SocketClient):
    """HTTP/2 over a raw socket with the ``h2`` library: the test decides every frame.

    Incoming bytes are split into whole frames and fed to h2 one frame at a time, and every
    frame is also kept raw (``frames``): after a GOAWAY h2's connection is CLOSED and refuses
    further frames, yet a graceful shutdown still sends the in-flight responses.
    ``auto_ack``: give window back as data arrives (a normal client); off = never WINDOW_UPDATE.
    Header names and values are bytes.
    """

    def __init__(self, port: int, settings: dict | None = None, auto_ack: bool = True, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.auto_ack = auto_ack
        self.port = port
        self.buf = b""
        self.streams: dict[int, StreamResult] = {}
        self.frames: list = []
        self.remote_settings: dict = {}
        self.pings = 0
        self.settings_acked = False
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.eof = False
        self.deaf = False  # True: read and keep frames, but never process or answer them
        self.flush()

    # -------------------------------------------------------------- sending
    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, method: str = "GET", headers: tuple = (), body: bytes | None = None,
                end: bool = True, flush: bool = True) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        header_list = [(b":method", method.encode()), (b":scheme", b"http"),
                       (b":authority", b"127.0.0.1:%d" % self.port), (b":path", path.encode()), *headers]
        self.conn.send_headers(stream_id, header_list, end_stream=end and not body)
        self.streams[stream_id] = StreamResult()
        if body:
            self.send_body(stream_id, body, end=end)
        if flush:
            self.flush()
        return stream_id

    def send_body(self, stream_id: int, body: bytes, end: bool = False) -> None:
        """Send what the window allows now (the caller pumps for more)."""
        view = memoryview(body)
        while view:
            size = min(len(view), self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            assert size > 0, "send_body called without window: use upload()"
            self.conn.send_data(stream_id, bytes(view[:size]))
            view = view[size:]
        if end:
            self.conn.end_stream(stream_id)
        self.flush()

    def upload(self, stream_id: int, body: bytes, timeout: float = 20.0) -> None:
        """Send ``body`` whole, waiting for WINDOW_UPDATE as needed, then END_STREAM."""
        deadline = time.monotonic() + timeout
        view = memoryview(body)
        while view:
            size = min(len(view), self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if size <= 0:
                assert time.monotonic() < deadline, f"upload stalled with {len(view)} bytes left"
                self.pump(0.1)
                continue
            self.conn.send_data(stream_id, bytes(view[:size]))
            self.flush()
            view = view[size:]
        self.conn.end_stream(stream_id)
        self.flush()

    def reset(self, stream_id: int, code: ErrorCodes = ErrorCodes.CANCEL) -> float:
        """RST_STREAM; returns the moment just before it was written."""
        self.conn.reset_stream(stream_id, code)
        left = time.monotonic()
        self.flush()
        return left

    def close(self, how: str = "fin") -> float:
        """Leave like a client that goes away ("fin" or "rst"); returns the moment it left."""
        return hang_up(self.sock, how)

    # -------------------------------------------------------------- receiving
    def pump(self, timeout: float = 0.1) -> None:
        """One read (up to ``timeout``), every whole frame in it processed."""
        if self.eof:
            time.sleep(min(timeout, 0.05))
            return
        try:
            data = self.receive(time.monotonic() + timeout)
        except ConnectionResetError:
            data = b""
        if data is None:
            return
        if not data:
            self.eof = True
            return
        while (whole := split_frame(self.buf)) is not None:
            raw, self.buf = whole
            parsed, _ = hyperframe.frame.Frame.parse_frame_header(memoryview(raw[:9]))
            parsed.parse_body(memoryview(raw[9:]))
            self.frames.append(parsed)
            if self.goaway is None and not self.deaf:
                self._handle(self.conn.receive_data(raw))
        if self.goaway is None and not self.deaf:
            self.flush()

    def _handle(self, events: list) -> None:
        for event in events:
            stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
            if isinstance(event, h2.events.ResponseReceived):
                stream.headers = event.headers
            elif isinstance(event, h2.events.DataReceived):
                stream.data += event.data
                if self.auto_ack and event.flow_controlled_length:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                stream.trailers = event.headers
            elif isinstance(event, h2.events.StreamEnded):
                stream.ended = True
            elif isinstance(event, h2.events.StreamReset):
                stream.reset = event.error_code
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self.remote_settings.update({code: change.new_value for code, change in event.changed_settings.items()})
            elif isinstance(event, h2.events.SettingsAcknowledged):
                self.settings_acked = True
            elif isinstance(event, h2.events.PingReceived):
                self.pings += 1
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event

    def wait(self, predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
        """``wait_until``, reading from the connection between polls."""
        return wait_until(predicate, timeout, what, between=lambda: self.pump(0.05))

    def response(self, stream_id: int, timeout: float = 10.0) -> StreamResult:
        stream = self.streams[stream_id]
        self.wait(lambda: stream.ended or stream.reset is not None or self.eof, timeout, f"end of stream {stream_id}")
        assert stream.reset is None, f"stream {stream_id} was reset with {stream.reset!r}"
        assert stream.ended, f"the connection closed before stream {stream_id} ended"
        return stream



# ---------------------------------------------------------------------- Node's client
NODE_CLIENT = Path(__file__).resolve().parents[1] / "node" / "h2_client.mjs"


def node_client(url: str, mode: str, count: int = 1, window: int | None = None) -> subprocess.Popen:
    """Node's HTTP/2 client (tests/node/h2_client.mjs); ``window``: its flow-control windows."""
    args = ["node", str(NODE_CLIENT), url, mode, str(count)] + ([str(window)] if window else [])
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def node_result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, f"node client failed ({proc.returncode}): {out} {err}"
    return json.loads(out.strip().splitlines()[-1])
