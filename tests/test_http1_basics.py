"""HTTP/1.1 connection management: keep-alive, pipelining, HTTP/1.0, Connection: close,
the keep-alive timeout, default response headers, and a few runs with curl.

The helpers at the top (a raw-socket HTTP/1.1 client that parses responses byte-exactly, and a
few small apps) are shared by the other test_http1_*.py files.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import shutil
import socket
import subprocess
import threading
import time
from typing import Any, Callable, Iterator

import httpx
import pytest

from tests.conftest import serve, wait_until

TIMEOUT = 5.0  # seconds, for every network operation


# ---------------------------------------------------------------------- shared helpers
class Response:
    """One parsed HTTP/1.x response."""

    def __init__(self, version: str, status: int, headers: list, body: bytes, framing: str,
                 trailers: list, raw: bytes) -> None:
        self.version = version
        self.status = status
        self.headers = headers  # [(lower-case name, value)] as str, in wire order
        self.body = body
        self.framing = framing  # "length" | "chunked" | "close" | "none"
        self.trailers = trailers
        self.raw = raw  # the exact bytes of this response

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers} {self.body[:80]!r} ({self.framing})>"


class RawClient:
    """A byte-exact HTTP/1.x client over one socket; every read has a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.eof = False

    @classmethod
    def to(cls, srv: Any) -> "RawClient":
        return cls(srv.connect(TIMEOUT))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Read more bytes into buf; False at EOF (or reset). Raises on timeout."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for the server; have {self.buf[:300]!r}")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(262144)
        except socket.timeout:
            raise AssertionError(f"timed out waiting for the server; have {self.buf[:300]!r}") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, marker: bytes, timeout: float = TIMEOUT) -> bytes:
        """Return everything up to and including ``marker`` (consumed)."""
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            if not self._fill(deadline):
                raise AssertionError(f"connection closed before {marker!r}; have {self.buf[:300]!r}")
        index = self.buf.index(marker) + len(marker)
        data, self.buf = self.buf[:index], self.buf[index:]
        return data

    def read_exact(self, size: int, timeout: float = TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < size:
            if not self._fill(deadline):
                raise AssertionError(f"connection closed after {len(self.buf)} of {size} bytes")
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def read_to_eof(self, timeout: float = TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        data, self.buf = self.buf, b""
        return data

    def read_response(self, head: bool = False, timeout: float = TIMEOUT, allow_interim: bool = False) -> Response:
        """Read one response. ``head``: it answers a HEAD request (no body whatever the headers)."""
        deadline = time.monotonic() + timeout
        raw_head = self.read_until(b"\r\n\r\n", timeout)
        lines = raw_head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status = int(rest.split(" ", 1)[0])
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep, f"malformed header line {line!r}"
            headers.append((name.strip().lower(), value.strip()))
        response = Response(version, status, headers, b"", "none", [], raw_head)
        if 100 <= status < 200 and not allow_interim:
            raise AssertionError(f"unexpected interim response {raw_head!r}")
        if head or 100 <= status < 200 or status in (204, 304):
            return response
        te = response.get("transfer-encoding")
        left = lambda: max(0.01, deadline - time.monotonic())  # noqa: E731
        if te is not None:
            assert te.lower() == "chunked", te
            body = b""
            raw = raw_head
            while True:
                size_line = self.read_until(b"\r\n", left())
                raw += size_line
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    break
                data = self.read_exact(size + 2, left())
                assert data[-2:] == b"\r\n", f"chunk not terminated by CRLF: {data[-10:]!r}"
                raw += data
                body += data[:-2]
            trailers = []
            while True:
                line = self.read_until(b"\r\n", left())
                raw += line
                if line == b"\r\n":
                    break
                name, _, value = line.decode("latin-1").partition(":")
                trailers.append((name.strip().lower(), value.strip()))
            response.body, response.framing, response.trailers, response.raw = body, "chunked", trailers, raw
        elif "content-length" in response:
            size = int(response.get("content-length"))  # type: ignore[arg-type]
            response.body = self.read_exact(size, left())
            response.framing = "length"
            response.raw = raw_head + response.body
        else:
            response.body = self.read_to_eof(left())
            response.framing = "close"
            response.raw = raw_head + response.body
        return response

    def closed_by_server(self, timeout: float = TIMEOUT) -> bool:
        """True once the server closed (EOF or RST) with no further bytes; asserts nothing extra arrives."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                more = self._fill(deadline)
            except AssertionError:
                return False  # timed out: still open
            if not more:
                assert self.buf == b"", f"unexpected bytes before the close: {self.buf[:300]!r}"
                return True

    def nothing_within(self, seconds: float) -> bool:
        """True if no byte arrives (and the connection stays open) for ``seconds``."""
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        self.buf += data
        if not data:
            self.eof = True
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def request(method: str = "GET", path: str = "/", headers: tuple | list = (), body: bytes = b"",
            version: str = "1.1", host: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/{version}"]
    if host:
        lines.append("Host: 127.0.0.1")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*parts: bytes, trailers: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts if p) + b"0\r\n" + trailers + b"\r\n"


def server_idle(srv: Any, timeout: float = TIMEOUT) -> None:
    """Every app task of the server has finished."""
    wait_until(lambda: srv.call(lambda: not srv.state.tasks), timeout, "no app task left")


async def read_body(receive: Any) -> bytes:
    body = b""
    for _ in range(100000):
        message = await receive()
        assert message["type"] == "http.request", message
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body
    raise AssertionError("body never ended")


async def respond(send: Any, body: bytes = b"ok", status: int = 200, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers if headers is not None else [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def echo_path(scope: dict, receive: Any, send: Any) -> None:
    """Responds with the request path (and the method) after reading the body."""
    body = await read_body(receive)
    await respond(send, f"{scope['method']} {scope['path']} {len(body)}".encode())


class Gate:
    """A flag the test thread opens and server-side apps wait on (polling, bounded)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def open(self) -> None:
        self._event.set()

    async def wait(self, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self._event.is_set():
            if time.monotonic() > deadline:
                raise AssertionError("gate never opened")
            await asyncio.sleep(0.005)


@pytest.fixture
def tether_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog sees tether.error (DEBUG and up), whatever logging set-up ran before."""
    logger = logging.getLogger("tether")
    propagate = logger.propagate
    logger.propagate = True
    caplog.set_level(logging.DEBUG, logger="tether.error")
    try:
        yield caplog
    finally:
        logger.propagate = propagate


def error_records(caplog: pytest.LogCaptureFixture) -> list:
    return [r for r in caplog.records if r.name == "tether.error" and r.levelno >= logging.ERROR]


def curl(*args: str, input: bytes | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    assert shutil.which("curl"), "curl is not installed"
    return subprocess.run(["curl", "--silent", "--show-error", "--max-time", "10", *args],
                          input=input, capture_output=True, timeout=timeout)


# ---------------------------------------------------------------------- keep-alive
def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    ports = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        ports.append(scope["client"][1])
        await echo_path(scope, receive, send)

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            for i in range(5):
                client.send(request(path=f"/r{i}"))
                response = client.read_response()
                assert response.status == 200
                assert response.body == f"GET /r{i} 0".encode()
                assert response.get("connection") is None  # HTTP/1.1: persistent by default
                assert response.framing == "length"
            assert client.nothing_within(0.2), "the server sent something unasked or closed"
        # httpx reuses its connection too.
        with httpx.Client(base_url=srv.url, timeout=TIMEOUT) as http:
            for i in range(3):
                assert http.get(f"/h{i}").text == f"GET /h{i} 0"
    assert len(set(ports[:5])) == 1, ports
    assert len(set(ports[5:])) == 1, ports


def test_pipelined_requests_are_answered_in_order_even_when_the_first_is_slowest() -> None:
    started: list[str] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        path = scope["path"]
        started.append(path)
        body = await read_body(receive)
        if path == "/slow":
            await asyncio.sleep(0.3)
        await respond(send, path.encode() + b":" + body)

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(
                request(path="/slow")
                + request("POST", "/fast", [("Content-Length", "5")], b"hello")
                + request("POST", "/chunked", [("Transfer-Encoding", "chunked")], chunked(b"ab", b"cd"))
                + request(path="/last")
            )
            bodies = [client.read_response().body for _ in range(4)]
            assert bodies == [b"/slow:", b"/fast:hello", b"/chunked:abcd", b"/last:"]
            # The connection is still usable afterwards.
            client.send(request(path="/after"))
            assert client.read_response().body == b"/after:"
    assert started == ["/slow", "/fast", "/chunked", "/last", "/after"]


def test_pipelined_response_bytes_are_not_interleaved() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        tag = scope["path"][1:].encode()
        for i in range(3):
            await send({"type": "http.response.body", "body": tag * 10, "more_body": True})
            await asyncio.sleep(0.01 if tag == b"a" else 0)
        await send({"type": "http.response.body", "body": b""})

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request(path="/a") + request(path="/b") + request(path="/c"))
            for tag in (b"a", b"b", b"c"):
                response = client.read_response()
                assert response.framing == "chunked"
                assert response.body == tag * 30


# ---------------------------------------------------------------------- HTTP/1.0
def test_http10_closes_after_the_response_by_default() -> None:
    with serve(echo_path, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request(path="/ten", version="1.0", host=False))
            response = client.read_response()
            assert response.version == "HTTP/1.0"
            assert response.status == 200
            assert response.body == b"GET /ten 0"
            assert response.get("connection") == "close"
            assert client.closed_by_server()


def test_http10_keep_alive_is_honoured_when_asked() -> None:
    with serve(echo_path, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            for i in range(3):
                client.send(request(path=f"/k{i}", headers=[("Connection", "keep-alive")], version="1.0"))
                response = client.read_response()
                assert response.body == f"GET /k{i} 0".encode()
                assert response.get("connection", "").lower() == "keep-alive"
                assert response.framing == "length"
            # Without the header the next one ends the connection.
            client.send(request(path="/bye", version="1.0"))
            assert client.read_response().get("connection") == "close"
            assert client.closed_by_server()


def test_connection_close_request_header_closes_after_the_response() -> None:
    with serve(echo_path, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request(path="/one"))
            assert client.read_response().body == b"GET /one 0"
            client.send(request(path="/two", headers=[("Connection", "close")]))
            response = client.read_response()
            assert response.body == b"GET /two 0"
            assert response.get("connection") == "close"
            assert client.closed_by_server()
        response = httpx.get(srv.url + "/x", headers={"Connection": "close"}, timeout=TIMEOUT)
        assert response.headers["connection"] == "close"


def test_app_connection_close_header_closes_the_connection() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await respond(send, b"bye", headers=[(b"Connection", b"close")])

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request())
            response = client.read_response()
            assert response.body == b"bye"
            assert response.get_all("connection") == ["close"]
            assert client.closed_by_server()


# ---------------------------------------------------------------------- keep-alive timeout
def test_idle_keep_alive_connection_is_closed_after_timeout_keep_alive() -> None:
    with serve(echo_path, lifespan="off", timeout_keep_alive=1) as srv:
        with RawClient.to(srv) as client:
            client.send(request(path="/a"))
            assert client.read_response().status == 200
            idle_from = time.monotonic()
            assert client.closed_by_server(timeout=4), "idle connection not closed"
            assert time.monotonic() - idle_from < 3.5
            assert time.monotonic() - idle_from > 0.5  # not closed right after the response
        # A connection that never sends anything is closed too.
        with RawClient.to(srv) as client:
            assert client.closed_by_server(timeout=4)
        # A busy connection is not cut: a request that takes longer than the timeout completes.
        with RawClient.to(srv) as client:
            for i in range(3):
                client.send(request(path=f"/b{i}"))
                assert client.read_response().status == 200
                time.sleep(0.4)


def test_keep_alive_timeout_does_not_cut_a_slow_response() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await asyncio.sleep(1.6)
        await respond(send, b"late")

    with serve(app, lifespan="off", timeout_keep_alive=1) as srv:
        with RawClient.to(srv) as client:
            client.send(request())
            assert client.read_response().body == b"late"


# ---------------------------------------------------------------------- default headers
def test_date_and_server_headers_present_by_default() -> None:
    with serve(echo_path, lifespan="off") as srv:
        response = httpx.get(srv.url + "/", timeout=TIMEOUT)
        assert response.headers["server"] == "tether"
        date = email.utils.parsedate_to_datetime(response.headers["date"])
        assert abs(date.timestamp() - time.time()) < 5
        assert response.headers["date"].endswith(" GMT")
        with RawClient.to(srv) as client:
            client.send(request())
            names = [name for name, _ in client.read_response().headers]
            assert names.count("server") == 1 and names.count("date") == 1


def test_no_server_header_and_no_date_header_options() -> None:
    with serve(echo_path, lifespan="off", server_header=False, date_header=False) as srv:
        with RawClient.to(srv) as client:
            client.send(request())
            response = client.read_response()
            assert response.status == 200
            assert "server" not in response and "date" not in response, response.headers
    with serve(echo_path, lifespan="off", server_header=False) as srv:
        response = httpx.get(srv.url, timeout=TIMEOUT)
        assert "server" not in response.headers and "date" in response.headers
    with serve(echo_path, lifespan="off", date_header=False) as srv:
        response = httpx.get(srv.url, timeout=TIMEOUT)
        assert "server" in response.headers and "date" not in response.headers


def test_extra_default_headers_are_added() -> None:
    with serve(echo_path, lifespan="off", headers=["X-A: 1", "X-Other:two words"]) as srv:
        response = httpx.get(srv.url, timeout=TIMEOUT)
        assert response.headers["x-a"] == "1"
        assert response.headers["x-other"] == "two words"
        assert response.text == "GET / 0"


def test_app_server_header_does_not_duplicate_when_disabled() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await respond(send, headers=[(b"server", b"my-app")])

    with serve(app, lifespan="off", server_header=False) as srv:
        with RawClient.to(srv) as client:
            client.send(request())
            assert client.read_response().get_all("server") == ["my-app"]


# ---------------------------------------------------------------------- curl
@contextlib.contextmanager
def curl_server(app: Any = echo_path, **options: Any) -> Iterator[Any]:
    with serve(app, lifespan="off", **options) as srv:
        yield srv


def test_curl_reuses_the_connection_for_several_urls() -> None:
    with curl_server() as srv:
        result = curl("-v", f"{srv.url}/one", f"{srv.url}/two", f"{srv.url}/three")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"GET /one 0GET /two 0GET /three 0"
        assert b"Re-using existing connection" in result.stderr or b"Reusing existing connection" in result.stderr


def test_curl_http10_and_head() -> None:
    with curl_server() as srv:
        result = curl("-v", "--http1.0", f"{srv.url}/old")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"GET /old 0"
        assert b"< HTTP/1.0 200" in result.stderr
        result = curl("-I", f"{srv.url}/head")
        assert result.returncode == 0, result.stderr
        head = result.stdout.decode("latin-1").lower()
        assert head.startswith("http/1.1 200")
        assert f"content-length: {len(b'HEAD /head 0')}" in head
        assert result.stdout.endswith(b"\r\n\r\n")  # no body after the head
