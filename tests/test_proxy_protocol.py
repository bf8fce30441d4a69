"""--proxy-protocol against raw sockets: a real Tether on 127.0.0.1, headers written by hand.

What the scope and the access log say with v1/v2 headers (both event loops), headers split or
followed by the request in one segment, HTTP/2 and WebSocket after a header, TLS started after
the header (also with the ClientHello in the header's segment), and the refusals: no header,
malformed headers, an untrusted peer, a header that never completes. tests/test_acceptance_haproxy.py
has the same against a real HAProxy.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
import time
from typing import Any

import h2.connection
import h2.events
import pytest

from tests.support.process import assert_one_error_line, run_cli, running
from tests.support.asgi import respond_with_addresses
from tests.support.logs import messages
from tests.support.server import serve
from tests.support.waiting import wait_until
from tether.server.proxy_protocol import V2_SIGNATURE

trustme = pytest.importorskip("trustme")
pytestmark = pytest.mark.timeout(60)

LOOPS = ["uvloop", "asyncio"]
V1 = b"PROXY TCP4 203.0.113.7 198.51.100.1 40123 443\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 40123 8443\r\n"
CLIENT, SERVER = ["203.0.113.7", 40123], ["198.51.100.1", 443]
REQUEST = b"GET /who HTTP/1.1\r\nHost: example.org\r\n\r\n"


def v2_header(client: tuple = ("203.0.113.7", 40123), server: tuple = ("198.51.100.1", 443), command: int = 1,
              tlvs: bytes = b"") -> bytes:
    kind = socket.AF_INET6 if ":" in client[0] else socket.AF_INET
    body = socket.inet_pton(kind, client[0]) + socket.inet_pton(kind, server[0]) + struct.pack("!HH", client[1], server[1])
    family = 0x21 if kind == socket.AF_INET6 else 0x11
    return V2_SIGNATURE + bytes((0x20 | command, family)) + struct.pack("!H", len(body + tlvs)) + body + tlvs


V2 = v2_header(tlvs=b"\x01\x00\x02h2" + b"\x05\x00\x04abcd")  # (ALPN and unique-id TLVs: skipped)


class Calls:
    def __init__(self) -> None:
        self.scopes: list[dict] = []
        self.disconnected: list[float] = []


def who_app(calls: Calls) -> Any:
    """Answers with the scope's addresses as JSON; /wait waits for the client to leave."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        calls.scopes.append(scope)
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": json.dumps(scope["client"])})
            await send({"type": "websocket.close"})
            return
        if scope["path"] == "/wait":
            while (await receive())["type"] != "http.disconnect":
                pass
            calls.disconnected.append(time.monotonic())
            return
        await respond_with_addresses(scope, send)

    return app


@pytest.fixture
def logs(tether_logs: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    return tether_logs  # (conftest.py: tether.error at DEBUG and tether.access in caplog)


def read_response(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """One response with a content-length body (raw socket), or whatever came before the close."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def body_json(response: bytes) -> Any:
    assert response.startswith(b"HTTP/1.1 200"), response
    return json.loads(response.partition(b"\r\n\r\n")[2])


def closed_without_answer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """The server closes (FIN or RST) and sends nothing at all."""
    sock.settimeout(timeout)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


# ---------------------------------------------------------------------- the addresses
@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("mode, header", [("v1", V1), ("v2", V2), ("auto", V1), ("auto", V2)], ids=["v1", "v2", "auto-v1", "auto-v2"])
def test_the_scope_and_the_access_log_have_the_original_addresses(loop: str, mode: str, header: bytes, logs: Any) -> None:
    calls = Calls()
    with serve(who_app(calls), proxy_protocol=mode, loop=loop, lifespan="off") as srv:
        with srv.connect() as sock:
            sock.sendall(header + REQUEST)  # one segment: the header and the request after it
            first = body_json(read_response(sock))
            sock.sendall(REQUEST)  # keep-alive: the header is once per connection
            second = body_json(read_response(sock))
        assert first["client"] == second["client"] == CLIENT
        assert first["server"] == second["server"] == SERVER
        assert first["scheme"] == "http"
        wait_until(lambda: len(messages(logs, "tether.access")) >= 2, what="access log lines")
        access = messages(logs, "tether.access")
        assert all(line.startswith("203.0.113.7:40123 - \"GET /who HTTP/1.1\" 200") for line in access), access


@pytest.mark.parametrize("loop", LOOPS)
def test_a_header_that_arrives_byte_by_byte(loop: str) -> None:
    calls = Calls()
    with serve(who_app(calls), proxy_protocol="auto", loop=loop, lifespan="off") as srv:
        for header in (V1_TCP6, V2):
            with srv.connect() as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for byte in header:
                    sock.send(bytes((byte,)))
                    time.sleep(0.002)
                sock.sendall(REQUEST)
                answer = body_json(read_response(sock))
            expected = ["2001:db8::7", 40123] if header is V1_TCP6 else CLIENT
            assert answer["client"] == expected


def test_unknown_and_local_keep_the_socket_addresses() -> None:
    calls = Calls()
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"  # v2 LOCAL (a proxy's health check)
    unspec = V2_SIGNATURE + b"\x21\x00\x00\x00"  # v2 PROXY, family UNSPEC
    with serve(who_app(calls), proxy_protocol="auto", lifespan="off") as srv:
        for header in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", local, unspec):
            with srv.connect() as sock:
                sock.sendall(header + REQUEST)
                answer = body_json(read_response(sock))
                assert answer["client"] == list(sock.getsockname()[:2]), header
                assert answer["server"] == ["127.0.0.1", srv.port], header


def test_http2_prior_knowledge_and_websocket_after_a_header() -> None:
    calls = Calls()
    with serve(who_app(calls), proxy_protocol="v2", lifespan="off") as srv:
        with srv.connect() as sock:
            conn = h2.connection.H2Connection()
            conn.initiate_connection()
            conn.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":path", "/who"), (":authority", "x")],
                              end_stream=True)
            sock.sendall(V2 + conn.data_to_send())
            answer = h2_response(sock, conn, 1)
        assert answer["http_version"] == "2" and answer["client"] == CLIENT and answer["server"] == SERVER

        with srv.connect() as sock:
            sock.sendall(V2 + b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            sock.settimeout(5)
            data = b""
            while CLIENT[0].encode() not in data:
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
            assert data.startswith(b"HTTP/1.1 101")
        assert calls.scopes[-1]["type"] == "websocket" and calls.scopes[-1]["client"] == tuple(CLIENT)


def h2_response(sock: Any, conn: h2.connection.H2Connection, stream: int, recv: Any = None) -> Any:
    recv = recv or (lambda: sock.recv(65536))
    body = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        data = recv()
        assert data, "connection closed before the HTTP/2 response"
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                return json.loads(body)
        out = conn.data_to_send()
        if out:
            sock.sendall(out) if not hasattr(sock, "send_tls") else sock.send_tls(out)
    raise AssertionError("no HTTP/2 response within 5 s")


def test_x_forwarded_for_is_trusted_only_from_a_trusted_header_client() -> None:
    """The header's client is the peer now: X-Forwarded-For counts only if it is in --forwarded-allow-ips."""
    calls = Calls()
    request = b"GET /who HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.0.2.99\r\n\r\n"
    with serve(who_app(calls), proxy_protocol="v1", forwarded_allow_ips="127.0.0.1,10.0.0.5", lifespan="off") as srv:
        with srv.connect() as sock:
            sock.sendall(V1 + request)  # the header's client, 203.0.113.7, is not trusted
            assert body_json(read_response(sock))["client"] == CLIENT
        with srv.connect() as sock:
            sock.sendall(b"PROXY TCP4 10.0.0.5 10.0.0.1 5000 80\r\n" + request)  # a trusted proxy behind the proxy
            assert body_json(read_response(sock))["client"] == ["192.0.2.99", 0]


@pytest.mark.parametrize("loop", LOOPS)
def test_the_client_leaving_is_still_seen_at_once(loop: str) -> None:
    calls = Calls()
    with serve(who_app(calls), proxy_protocol="v1", loop=loop, lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(V1 + b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: calls.scopes, what="the request")
        time.sleep(0.1)
        left = time.monotonic()
        sock.close()
        wait_until(lambda: calls.disconnected, timeout=2, what="http.disconnect")
        assert (calls.disconnected[0] - left) < 0.5


# ---------------------------------------------------------------------- refusals
@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("mode, data, reason", [
    ("auto", REQUEST, "expected a PROXY protocol v1 or v2 header, got b'GET /who HTTP/1.1"),
    ("v2", REQUEST, "expected a PROXY protocol v2 header"),
    ("v1", V2 + REQUEST, "expected a PROXY protocol v1 header"),
    ("v2", V1 + REQUEST, "expected a PROXY protocol v2 header"),
    ("auto", b"PROXY TCP4 203.0.113.7 198.51.100.1 40123\r\n" + REQUEST, "malformed PROXY v1 line"),
    ("auto", b"PROXY TCP4 203.0.113.777 198.51.100.1 1 2\r\n" + REQUEST, "is not an TCP4 address"),
    ("auto", b"PROXY TCP4 203.0.113.7 198.51.100.1 1 2\n" + REQUEST, "must end with CRLF"),
    ("auto", b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n", "without CRLF in its first 107 bytes"),
    ("auto", V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\0" * 12 + REQUEST, "version 3"),
    ("auto", V2_SIGNATURE + b"\x21\x12\x00\x0c" + b"\0" * 12 + REQUEST, "unsupported family/transport 0x12"),
    ("auto", V2_SIGNATURE + b"\x21\x11\x20\x00" + b"\0" * 100, "more than 4096"),
    ("auto", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "got b'\\x16\\x03\\x01"),  # TLS without a header
], ids=["http", "http-v2", "v2-in-v1", "v1-in-v2", "fields", "address", "lf", "long", "version", "udp", "length", "tls"])
def test_missing_or_malformed_headers_close_the_connection(loop: str, mode: str, data: bytes, reason: str, logs: Any) -> None:
    calls = Calls()
    with serve(who_app(calls), proxy_protocol=mode, loop=loop, lifespan="off") as srv:
        with srv.connect() as sock:
            sock.sendall(data)
            assert closed_without_answer(sock)
        assert not calls.scopes, "the app was called"
        wait_until(lambda: any(reason in line for line in messages(logs, "tether.error")), what=f"a log line with {reason!r}")
        line = next(line for line in messages(logs, "tether.error") if reason in line)
        assert line.startswith("PROXY protocol: connection from 127.0.0.1:") and " closed: " in line
        assert not srv.state.connections


@pytest.mark.parametrize("loop", LOOPS)
def test_an_untrusted_peer_is_refused_even_with_a_valid_header(loop: str, logs: Any) -> None:
    calls = Calls()
    with serve(who_app(calls), proxy_protocol="auto", forwarded_allow_ips="10.0.0.0/8, 192.168.1.1", loop=loop,
               lifespan="off") as srv:
        for data in (V1 + REQUEST, V2 + REQUEST, REQUEST, b""):
            with srv.connect() as sock:
                if data:
                    sock.sendall(data)
                assert closed_without_answer(sock)
        assert not calls.scopes
        assert any("refused: not in --forwarded-allow-ips" in line and "127.0.0.1:" in line
                   for line in messages(logs, "tether.error"))
    # '*' trusts everyone (and the same header is then honoured).
    with serve(who_app(calls), proxy_protocol="auto", forwarded_allow_ips="*", loop=loop, lifespan="off") as srv:
        with srv.connect() as sock:
            sock.sendall(V1 + REQUEST)
            assert body_json(read_response(sock))["client"] == CLIENT


def test_a_header_that_never_completes_times_out(logs: Any) -> None:
    calls = Calls()
    with serve(who_app(calls), proxy_protocol="auto", timeout_request_header=1, lifespan="off") as srv:
        with srv.connect() as partial, srv.connect() as silent:
            partial.sendall(V1[:20])
            started = time.monotonic()
            assert closed_without_answer(partial, timeout=5) and closed_without_answer(silent, timeout=5)
            elapsed = time.monotonic() - started
        assert 0.9 < elapsed < 3.5, elapsed  # (the once-a-second sweep: between 1 and 2 s, plus slack)
        assert not calls.scopes
        wait_until(lambda: any("no complete header from 127.0.0.1:" in line and "within 1" in line
                               for line in messages(logs, "tether.error")), what="the timeout's log line")
        wait_until(lambda: not srv.state.connections, what="the connections forgotten")


def test_shutdown_closes_connections_still_waiting_for_their_header() -> None:
    calls = Calls()
    with serve(who_app(calls), proxy_protocol="auto", lifespan="off", timeout_graceful_shutdown=10) as srv:
        sock = srv.connect()
        sock.sendall(V1[:10])
        wait_until(lambda: srv.state.connections, what="the connection registered")
        started = time.monotonic()
    assert time.monotonic() - started < 2, "shutdown waited for a connection that had not sent its header"
    assert closed_without_answer(sock)
    sock.close()


def test_off_is_the_default_and_a_header_is_then_a_bad_request() -> None:
    calls = Calls()
    with serve(who_app(calls), lifespan="off") as srv:
        with srv.connect() as sock:
            sock.sendall(V1 + REQUEST)
            assert read_response(sock).startswith(b"HTTP/1.1 400")
        assert not calls.scopes


# ---------------------------------------------------------------------- TLS after the header
@pytest.fixture(scope="module")
def certs(tmp_path_factory: Any) -> Any:
    directory = tmp_path_factory.mktemp("pp-certs")
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    return ca, str(directory / "server.pem")


class TLSClient:
    """TLS over a raw socket through memory BIOs, so that the PROXY header and the ClientHello
    can share one write (a proxy may send them in one segment; Tether must not read past the header)."""

    def __init__(self, port: int, ca: Any, prefix: bytes, alpn: str, with_finished: bytes = b"") -> None:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        context.set_alpn_protocols([alpn])
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._step()
        self.sock.sendall(prefix + self.outgoing.read())
        while not self._step():
            if self.outgoing.pending:
                self.sock.sendall(self.outgoing.read())
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed during the TLS handshake")
            self.incoming.write(data)
        if with_finished:  # the first request in the same segment as the client's Finished
            self.tls.write(with_finished)
        self.sock.sendall(self.outgoing.read())

    def _step(self) -> bool:
        try:
            self.tls.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    @property
    def alpn(self) -> str | None:
        return self.tls.selected_alpn_protocol()

    def send_tls(self, data: bytes) -> None:
        self.tls.write(data)
        self.sock.sendall(self.outgoing.read())

    def recv(self) -> bytes:
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                data = self.sock.recv(65536)
                if not data:
                    return b""
                self.incoming.write(data)
            except ssl.SSLZeroReturnError:
                return b""

    def response(self) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = self.recv()
            if not chunk:
                break
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("header", [V1, V2], ids=["v1", "v2"])
def test_tls_after_the_header_http1(loop: str, header: bytes, certs: Any) -> None:
    ca, pem = certs
    calls = Calls()
    with serve(who_app(calls), proxy_protocol="auto", ssl_certfile=pem, loop=loop, lifespan="off") as srv:
        client = TLSClient(srv.port, ca, header, "http/1.1")
        try:
            assert client.alpn == "http/1.1"
            client.send_tls(REQUEST)
            answer = body_json(client.response())
        finally:
            client.close()
        assert answer == {"client": CLIENT, "server": SERVER, "scheme": "https", "http_version": "1.1"}
        # The request in the same segment as the client's Finished (asyncio may hand it over
        # before start_tls returns): not lost.
        client = TLSClient(srv.port, ca, header, "http/1.1", with_finished=REQUEST)
        try:
            assert body_json(client.response())["client"] == CLIENT
        finally:
            client.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_after_the_header_http2_by_alpn(loop: str, certs: Any) -> None:
    ca, pem = certs
    calls = Calls()
    with serve(who_app(calls), proxy_protocol="v2", ssl_certfile=pem, loop=loop, lifespan="off") as srv:
        client = TLSClient(srv.port, ca, V2, "h2")
        try:
            assert client.alpn == "h2"
            conn = h2.connection.H2Connection()
            conn.initiate_connection()
            conn.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":path", "/who"), (":authority", "x")],
                              end_stream=True)
            client.send_tls(conn.data_to_send())
            answer = h2_response(client, conn, 1, recv=client.recv)
        finally:
            client.close()
        assert answer == {"client": CLIENT, "server": SERVER, "scheme": "https", "http_version": "2"}


def test_tls_without_a_header_or_from_an_untrusted_peer_is_refused(certs: Any) -> None:
    ca, pem = certs
    calls = Calls()
    with serve(who_app(calls), proxy_protocol="auto", ssl_certfile=pem, lifespan="off") as srv:
        with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
            TLSClient(srv.port, ca, b"", "http/1.1")
    with serve(who_app(calls), proxy_protocol="auto", ssl_certfile=pem, forwarded_allow_ips="10.0.0.1",
               lifespan="off") as srv:
        with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
            TLSClient(srv.port, ca, V2, "http/1.1")
    assert not calls.scopes


# ---------------------------------------------------------------------- the option
def test_the_option_on_the_command_line(tmp_path: Any) -> None:
    assert_one_error_line(run_cli("simple_apps:hello", "--proxy-protocol", "v3"), "--proxy-protocol", "v3")
    assert_one_error_line(run_cli("simple_apps:hello", env={"TETHER_PROXY_PROTOCOL": "yes"}), "yes")
    assert_one_error_line(run_cli("simple_apps:hello", "--proxy-protocol", "v2", "--uds", str(tmp_path / "s")),
                          "--proxy-protocol on a UNIX socket (--uds) needs --forwarded-allow-ips '*'")
    help_text = run_cli("--help").stdout
    assert "--proxy-protocol [off|v1|v2|auto]" in help_text


def test_the_option_from_the_environment_with_workers() -> None:
    """TETHER_PROXY_PROTOCOL reaches every forked worker; the access log names the header's client."""
    with running("edge_apps:info", "--workers", "2", ready=2, env={"TETHER_PROXY_PROTOCOL": "v2"}) as srv:
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
                sock.sendall(V2 + REQUEST)
                assert body_json(read_response(sock))["client"] == CLIENT
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
                sock.sendall(REQUEST)
                assert closed_without_answer(sock)
        wait_until(lambda: srv.output().count('203.0.113.7:40123 - "GET /who HTTP/1.1" 200') == 4, what="4 access lines")
        assert "expected a PROXY protocol v2 header" in srv.output()
