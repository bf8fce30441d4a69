"""HTTP/2 with real clients: httpx (prior knowledge and TLS with ALPN), curl, and the h2 library
on a raw socket where the client must act exactly (resets, windows, pings): scope, bodies both
ways, multiplexing, trailers, pathsend, per-stream disconnect in every state, the cancel policy
and the extension per stream, flow control, settings, keep-alive pings, graceful shutdown."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import httpx
import pytest

from tests.conftest import serve
from tests.realworld import Recorder
from tests.test_tls import Certs

pytestmark = pytest.mark.timeout(60)
TIMEOUT = 10.0


class H2Client:
    """The h2 library as a client on a plain socket (prior knowledge)."""

    def __init__(self, port: int, settings: dict | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.flush()
        self.events: list = []
        self.data: dict[int, bytes] = {}
        self.closed = False

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str = "/", method: str = "GET", body: bytes | None = None, end: bool = True,
                headers: list | None = None) -> int:
        stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream, [(":method", method), (":path", path), (":scheme", "http"),
                                        (":authority", "127.0.0.1"), *(headers or [])],
                               end_stream=end and body is None)
        if body is not None:
            self.conn.send_data(stream, body, end_stream=end)
        self.flush()
        return stream

    def reset(self, stream: int) -> None:
        self.conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
        self.flush()

    def pump(self, timeout: float = 0.2, ack_data: bool = True) -> None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return
        for event in self.conn.receive_data(data):
            self.events.append(event)
            if isinstance(event, h2.events.DataReceived):
                self.data[event.stream_id] = self.data.get(event.stream_id, b"") + event.data
                if ack_data:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self.flush()

    def wait_for(self, predicate: Any, timeout: float = TIMEOUT, ack_data: bool = True) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if predicate(event):
                    return event
            if self.closed:
                break
            self.pump(0.1, ack_data)
        raise AssertionError(f"no matching event within {timeout} s; got {self.events[-10:]}")

    def ended(self, stream: int, timeout: float = TIMEOUT) -> bytes:
        self.wait_for(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == stream, timeout)
        return self.data.get(stream, b"")

    def close(self) -> None:
        self.sock.close()


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("disconnected mid-body")
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def scope_app(rec: Recorder) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        rec.mark(f"scope {scope['path']}", scope)
        if scope["path"] == "/big":
            size = int(scope["query_string"] or b"65536")
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
            chunk = bytes(range(256)) * 256
            for offset in range(0, size, len(chunk)):
                await send({"type": "http.response.body", "body": chunk[: size - offset], "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"connection", b"keep-alive"), (b"x-len", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": hashlib.sha256(body).hexdigest().encode() if body else b"hello"})
    return app


# ---------------------------------------------------------------------- httpx
def test_httpx_prior_knowledge_scope_and_headers() -> None:
    rec = Recorder()
    with serve(scope_app(rec)) as srv:
        with httpx.Client(http1=False, http2=True, timeout=TIMEOUT) as client:
            response = client.get(srv.url + "/a%20b?x=1", headers={"X-Test": "yes"})
        assert response.http_version == "HTTP/2" and response.text == "hello"
        assert "connection" not in response.headers  # connection-specific: dropped
        assert response.headers["server"] == "tether" and "date" in response.headers
    scope = rec.values["scope /a b"]
    assert scope["http_version"] == "2" and scope["scheme"] == "http" and scope["method"] == "GET"
    assert scope["raw_path"] == b"/a%20b" and scope["query_string"] == b"x=1"
    headers = dict(scope["headers"])
    assert headers[b"x-test"] == b"yes" and headers[b"host"] == f"127.0.0.1:{srv.port}".encode()
    assert not any(name.startswith(b":") for name, _ in scope["headers"])
    assert {"http.response.trailers", "http.response.pathsend", "tether.disconnect"} <= set(scope["extensions"])


def test_httpx_bodies_both_ways_and_multiplexing() -> None:
    rec = Recorder()
    with serve(scope_app(rec)) as srv:
        async def main() -> None:
            async with httpx.AsyncClient(http1=False, http2=True, timeout=TIMEOUT) as client:
                upload = bytes(range(256)) * 4096  # 1 MiB: more than the window, so flow control runs
                response = await client.post(srv.url + "/upload", content=upload)
                assert response.text == hashlib.sha256(upload).hexdigest()
                response = await client.get(srv.url + "/big", params=None, headers={})
                big = await client.get(srv.url + "/big?5242880")
                assert len(big.content) == 5242880 and big.content[:256] == bytes(range(256))
                bodies = [f"body {i}".encode() for i in range(50)]
                responses = await asyncio.gather(*[client.post(srv.url + f"/m{i}", content=b) for i, b in enumerate(bodies)])
                assert [r.text for r in responses] == [hashlib.sha256(b).hexdigest() for b in bodies]
                assert {r.http_version for r in responses} == {"HTTP/2"}

        asyncio.run(main())


def test_httpx_over_tls_negotiates_h2_by_alpn(tmp_path: Path) -> None:
    certs = Certs(tmp_path)
    rec = Recorder()
    with serve(scope_app(rec), ssl_certfile=str(certs.cert_file), ssl_keyfile=str(certs.key_file)) as srv:
        with httpx.Client(http2=True, verify=certs.client_context(), timeout=TIMEOUT) as client:
            response = client.get(srv.url + "/tls")
        assert response.http_version == "HTTP/2" and response.text == "hello"
    assert rec.values["scope /tls"]["scheme"] == "https"


# ---------------------------------------------------------------------- curl
def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True, timeout=20)


needs_curl_h2 = pytest.mark.skipif(shutil.which("curl") is None or "HTTP2" not in curl("-V").stdout,
                                   reason="curl with HTTP/2 support is not installed")


@needs_curl_h2
def test_curl_prior_knowledge_and_h2c_upgrade() -> None:
    rec = Recorder()
    with serve(scope_app(rec)) as srv:
        result = curl("--http2-prior-knowledge", "-w", " %{http_version}", srv.url + "/pk")
        assert result.stdout == "hello 2", result
        result = curl("--http2", "-w", " %{http_version}", srv.url + "/upgrade")  # Upgrade: h2c
        assert result.stdout == "hello 2", result
    assert rec.values["scope /upgrade"]["http_version"] == "2"


@needs_curl_h2
def test_curl_over_tls(tmp_path: Path) -> None:
    certs = Certs(tmp_path)
    with serve(scope_app(Recorder()), ssl_certfile=str(certs.cert_file), ssl_keyfile=str(certs.key_file)) as srv:
        result = curl("--http2", "--cacert", str(certs.ca_file), "-w", " %{http_version}", srv.url + "/")
        assert result.stdout == "hello 2", result


@needs_curl_h2
def test_http_1_only_and_2_only_modes() -> None:
    with serve(scope_app(Recorder()), http="1") as srv:
        assert curl("--http2", "-w", " %{http_version}", srv.url + "/").stdout == "hello 1.1"
        assert curl("--http2-prior-knowledge", srv.url + "/").returncode != 0
    with serve(scope_app(Recorder()), http="2") as srv:
        assert curl("--http2-prior-knowledge", "-w", " %{http_version}", srv.url + "/").stdout == "hello 2"
        assert curl("--http1.1", srv.url + "/").returncode != 0


# ---------------------------------------------------------------------- trailers and pathsend
def test_trailers_and_pathsend(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"f" * 100000)

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/file":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.pathsend", "path": str(target)})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"body"})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})

    with serve(app) as srv:
        client = H2Client(srv.port)
        try:
            stream = client.request("/trailers")
            assert client.ended(stream) == b"body"
            trailers = client.wait_for(lambda e: isinstance(e, h2.events.TrailersReceived))
            assert ("x-checksum", "abc") in trailers.headers
            stream = client.request("/file")
            assert client.ended(stream) == b"f" * 100000
        finally:
            client.close()


# ---------------------------------------------------------------------- per-stream disconnect
def state_app(rec: Recorder) -> Any:
    """Per path, the app waits in one state until the stream is reset; records what it saw."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        signal = scope["extensions"]["tether.disconnect"]
        try:
            if path == "/after-body":
                await read_body(receive)
                rec.mark(f"{path} ready")
                message = await receive()
                rec.mark(f"{path} saw", message["type"])
            elif path == "/mid-upload":
                first = await receive()
                rec.mark(f"{path} ready", first.get("more_body"))
                while (message := await receive())["type"] != "http.disconnect":
                    pass
                rec.mark(f"{path} saw", message["type"])
            elif path in ("/streaming", "/blocked"):
                await send({"type": "http.response.start", "status": 200, "headers": []})
                rec.mark(f"{path} ready")
                for _ in range(100000):
                    await send({"type": "http.response.body", "body": b"s" * 16384, "more_body": True})
                    if path == "/streaming":
                        await asyncio.sleep(0.01)
            elif path == "/extension":
                rec.mark(f"{path} ready")
                await signal.wait()
                rec.mark(f"{path} saw", "extension")
            elif path == "/sibling":
                await read_body(receive)
                await asyncio.sleep(0.5)
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"sibling done"})
        except OSError as exc:
            rec.mark(f"{path} saw", type(exc).__name__)
        except asyncio.CancelledError:
            rec.mark(f"{path} cancelled")
            raise

    return app


@pytest.mark.parametrize("path, expected", [
    ("/after-body", "http.disconnect"),
    ("/mid-upload", "http.disconnect"),
    ("/streaming", "ClientDisconnected"),
    ("/blocked", "ClientDisconnected"),
    ("/extension", "extension"),
])
def test_stream_reset_reaches_the_app_in_every_state_and_siblings_carry_on(path: str, expected: str) -> None:
    rec = Recorder()
    with serve(state_app(rec)) as srv:
        settings = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0} if path == "/blocked" else None
        client = H2Client(srv.port, settings)
        try:
            sibling = client.request("/sibling")
            if path == "/mid-upload":
                stream = client.request(path, "POST", b"part", end=False)
            else:
                stream = client.request(path)
            deadline = time.monotonic() + TIMEOUT
            while not rec.seen(f"{path} ready") and time.monotonic() < deadline:
                client.pump(0.05, ack_data=path != "/blocked")
            assert rec.seen(f"{path} ready")
            time.sleep(0.1)
            reset_at = time.monotonic()
            client.reset(stream)
            assert rec.wait(f"{path} saw", 5), f"the app never learned of the reset in {path}"
            assert rec.values[f"{path} saw"] == expected
            assert rec.since(f"{path} saw", reset_at) < 1000
            if path != "/blocked":  # (a zero window holds every stream's DATA)
                assert client.ended(sibling) == b"sibling done"
        finally:
            client.close()


def test_connection_loss_disconnects_every_stream() -> None:
    rec = Recorder()
    with serve(state_app(rec)) as srv:
        client = H2Client(srv.port)
        client.request("/after-body")
        client.request("/extension")
        deadline = time.monotonic() + TIMEOUT
        while not (rec.seen("/after-body ready") and rec.seen("/extension ready")) and time.monotonic() < deadline:
            client.pump(0.05)
        client.close()
        assert rec.wait("/after-body saw", 5) and rec.wait("/extension saw", 5)


def test_send_on_a_reset_stream_raises_every_time() -> None:
    rec = Recorder()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        rec.mark("ready")
        assert (await receive())["type"] == "http.disconnect"
        errors = []
        for message in ({"type": "http.response.start", "status": 200, "headers": []},
                        {"type": "http.response.body", "body": b"x"}, {"type": "http.response.body", "body": b"y"}):
            try:
                await send(message)
            except OSError as exc:
                errors.append(type(exc).__name__)
        rec.mark("errors", errors)

    with serve(app) as srv:
        client = H2Client(srv.port)
        try:
            stream = client.request("/")
            assert rec.wait("ready", 5)
            client.reset(stream)
            assert rec.wait("errors", 5)
        finally:
            client.close()
    assert rec.values["errors"] == ["ClientDisconnected"] * 3


def test_cancel_policy_cancels_only_the_reset_stream() -> None:
    rec = Recorder()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        rec.mark(f"{path} ready")
        try:
            await asyncio.sleep(1.0 if path == "/keep" else 30)
        except asyncio.CancelledError:
            rec.mark(f"{path} cancelled")
            raise
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"kept"})

    with serve(app, on_disconnect="cancel") as srv:
        client = H2Client(srv.port)
        try:
            keep = client.request("/keep")
            drop = client.request("/drop")
            assert rec.wait("/drop ready", 5) and rec.wait("/keep ready", 5)
            client.reset(drop)
            assert rec.wait("/drop cancelled", 5)
            assert client.ended(keep) == b"kept"
            assert not rec.seen("/keep cancelled")
        finally:
            client.close()


# ---------------------------------------------------------------------- flow control and settings
def test_request_body_window_is_granted_only_as_the_app_reads() -> None:
    rec = Recorder()
    release = threading.Event()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while not release.is_set():
            await asyncio.sleep(0.02)
        body = await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": hashlib.sha256(body).hexdigest().encode()})

    with serve(app) as srv:
        client = H2Client(srv.port)
        try:
            upload = bytes(range(256)) * 1024  # 256 KiB, four windows
            stream = client.request("/", "POST", end=False)
            sent = 0
            for _ in range(100):
                window = min(client.conn.local_flow_control_window(stream), client.conn.max_outbound_frame_size)
                if window <= 0 or sent == len(upload):
                    client.pump(0.1)
                    if client.conn.local_flow_control_window(stream) <= 0:
                        break
                    continue
                piece = upload[sent:sent + window]
                client.conn.send_data(stream, piece)
                client.flush()
                sent += len(piece)
            time.sleep(0.5)
            client.pump(0.2)
            assert client.conn.local_flow_control_window(stream) == 0  # still no window: the app has not read
            assert sent <= 65535 + 16384, f"the client could send {sent} bytes before the app read any"
            release.set()
            deadline = time.monotonic() + 20
            while sent < len(upload) and time.monotonic() < deadline:
                window = min(client.conn.local_flow_control_window(stream), client.conn.max_outbound_frame_size,
                             len(upload) - sent)
                if window > 0:
                    client.conn.send_data(stream, upload[sent:sent + window])
                    sent += window
                    client.flush()
                else:
                    client.pump(0.1)  # waiting for the server's WINDOW_UPDATE
            assert sent == len(upload)
            client.conn.end_stream(stream)
            client.flush()
            assert client.ended(stream) == hashlib.sha256(upload).hexdigest().encode()
        finally:
            client.close()


def test_settings_are_advertised() -> None:
    with serve(scope_app(Recorder()), h2_max_concurrent_streams=3, h2_initial_window_size=100000,
               h2_max_frame_size=32768, h2_max_header_list_size=8192) as srv:
        client = H2Client(srv.port)
        try:
            event = client.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
            values = {code: changed.new_value for code, changed in event.changed_settings.items()}
            codes = h2.settings.SettingCodes
            assert values[codes.MAX_CONCURRENT_STREAMS] == 3
            assert values[codes.INITIAL_WINDOW_SIZE] == 100000
            assert values[codes.MAX_FRAME_SIZE] == 32768
            assert values[codes.MAX_HEADER_LIST_SIZE] == 8192
        finally:
            client.close()


# ---------------------------------------------------------------------- pings and shutdown
def test_server_pings_and_drops_a_peer_that_never_answers() -> None:
    rec = Recorder()
    with serve(state_app(rec), h2_ping_interval=0.3, h2_ping_timeout=0.5) as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "GET"), (":path", "/after-body"), (":scheme", "http"),
                              (":authority", "x")], end_stream=True)
        sock.sendall(conn.data_to_send())  # and then never reads or answers anything
        assert rec.wait("/after-body saw", 10), "a peer that never answers PINGs was not dropped"
        assert rec.values["/after-body saw"] == "http.disconnect"
        sock.close()


def test_pings_answered_keep_the_connection() -> None:
    with serve(scope_app(Recorder()), h2_ping_interval=0.3, h2_ping_timeout=0.5) as srv:
        client = H2Client(srv.port)  # h2 answers PINGs itself
        try:
            client.wait_for(lambda e: isinstance(e, h2.events.PingReceived), 5)
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                client.pump(0.1)
            assert not client.closed
            assert client.ended(client.request("/")) == b"hello"
        finally:
            client.close()


def test_graceful_shutdown_sends_goaway_and_finishes_streams_in_flight() -> None:
    """(A raw client: the h2 library, as a client, refuses frames that follow a GOAWAY.)"""
    from tests.h2raw import DATA, GOAWAY, HEADERS, RawH2

    rec = Recorder()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        rec.mark("in flight")
        await asyncio.sleep(0.7)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"finished"})

    with serve(app, timeout_graceful_shutdown=5, h2_ping_interval=0) as srv, RawH2(srv.port) as conn:
        conn.request(1)
        assert rec.wait("in flight", 5)
        srv.loop.call_soon_threadsafe(srv.server.request_exit)
        kinds, body = [], b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            event = conn.read_frame(1)
            if event is None:
                break
            kinds.append(event.kind)
            if event.kind == GOAWAY:
                assert event.error_code == 0 and int.from_bytes(event.payload[:4], "big") == 1
            if event.kind == DATA and event.stream == 1:
                body += event.payload
        assert conn.closed, "the connection was not closed after the last stream"
    assert GOAWAY in kinds and kinds.index(GOAWAY) < kinds.index(HEADERS)  # GOAWAY first, then the response
    assert body == b"finished"
