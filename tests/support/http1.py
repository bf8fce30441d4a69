"""Raw HTTP/1.1 over sockets, for tests that must see (or send) every byte.

* ``request`` / ``chunked``: request bytes; ``RawClient``: a byte-exact client that parses each
  ``Response`` (framing, trailers, the exact bytes) and checks how the server closes;
* ``recv_until`` / ``recv_to_eof``: the same reads on a bare socket;
* ``raw_request`` / ``parse_response`` / ``raw_header_lines``: one request on a new connection;
* ``send_request``: a request whose response is never read (a client that will leave);
* ``answers`` / ``RequestLoop``: is a server serving, and a steady load of new connections;
* ``curl``: the real curl, bounded.

Every read has a deadline.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from typing import Any

from tests.support.sockets import SocketClient

TIMEOUT = 5.0  # seconds, for every network operation


# ---------------------------------------------------------------------- a client that reads every byte
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


class RawClient(SocketClient):
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
        try:
            data = self.receive(deadline)
        except ConnectionResetError:
            data = b""
        if data is None:
            raise AssertionError(f"timed out waiting for the server; have {self.buf[:300]!r}")
        self.eof = not data
        return not self.eof

    def read_until(self, marker: bytes, timeout: float = TIMEOUT) -> bytes:
        """Return everything up to and including ``marker`` (consumed)."""
        return self.take_until(marker, time.monotonic() + timeout)

    def read_exact(self, size: int, timeout: float = TIMEOUT) -> bytes:
        return self.take(size, time.monotonic() + timeout)

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



def request(method: str = "GET", path: str = "/", headers: tuple | list = (), body: bytes = b"",
            version: str = "1.1", host: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/{version}"]
    if host:
        lines.append("Host: 127.0.0.1")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*parts: bytes, trailers: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts if p) + b"0\r\n" + trailers + b"\r\n"


# ---------------------------------------------------------------------- bare sockets
def _recv(sock: socket.socket, deadline: float, failure: str, data: bytes) -> bytes:
    """The next bytes from ``sock`` (b"" at EOF); AssertionError ``failure`` at the deadline."""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            return sock.recv(65536)
        except socket.timeout:
            continue
    raise AssertionError(f"{failure}; got {data[:300]!r}")


def recv_until(sock: socket.socket, marker: bytes, timeout: float = 5.0, data: bytes = b"") -> bytes:
    """Everything received (after ``data``) up to and including ``marker``, and what came with it."""
    deadline = time.monotonic() + timeout
    while marker not in data:
        more = _recv(sock, deadline, f"{marker!r} not received within {timeout} s", data)
        if not more:
            raise AssertionError(f"connection closed before {marker!r}; got {data[:300]!r}")
        data += more
    return data


def recv_to_eof(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything received until the server closes."""
    deadline = time.monotonic() + timeout
    data = b""
    while more := _recv(sock, deadline, f"the server did not close within {timeout} s", data):
        data += more
    return data


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, bool]:
    """What the server sends until it closes (EOF or reset: True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return bytes(data), True
        if not chunk:
            return bytes(data), True
        data += chunk
    return bytes(data), False


def send_request(port: int, path: str = "/", host: str = "127.0.0.1", timeout: float = TIMEOUT) -> socket.socket:
    """Connect and send a complete GET request; the response is never read."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.sendall(request("GET", path, [("Host", f"{host}:{port}"), ("User-Agent", "tether-acceptance")], host=False))
    return sock


# ---------------------------------------------------------------------- one request, one connection
def raw_request(port: int, path: str = "/", host: str = "127.0.0.1", extra: bytes = b"", method: str = "GET",
                timeout: float = 5.0, family: int = socket.AF_INET, address: object = None) -> tuple[int, dict, bytes]:
    """One request on a new connection with Connection: close; returns (status, headers, body).

    Headers are lower-cased; a repeated header keeps its last value.
    """
    target = address if address is not None else (host, port)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(target)
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n".encode() + extra + b"\r\n")
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return parse_response(data)


def parse_response(data: bytes) -> tuple[int, dict, bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return status, headers, body


def dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


def raw_header_lines(port: int, path: str = "/") -> list[str]:
    """The raw response head lines (status line first), to check headers exactly."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")


def answers(port: int, timeout: float = 2.0) -> bool:
    """A GET / on a new connection is answered 200 (False while nothing answers)."""
    try:
        return raw_request(port, timeout=timeout)[0] == 200
    except OSError:
        return False


class RequestLoop:
    """GETs on new connections in a background thread (``with``), for at most ``max_seconds``;
    counts successes and failures, and the worker pid of each answer (an app answering JSON
    with a "pid", like tests/apps/edge_apps.py's ``info``)."""

    def __init__(self, port: int, path: str = "/", max_seconds: float = 40.0, timeout: float = 5.0,
                 pause: float = 0.002) -> None:
        self.port = port
        self.path = path
        self.timeout = timeout
        self.pause = pause
        self.ok = 0
        self.failures: list[str] = []
        self.pids: list[int] = []
        self.stop_event = threading.Event()
        self.deadline = time.monotonic() + max_seconds
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            try:
                status, _, body = raw_request(self.port, path=self.path, timeout=self.timeout)
                if status == 200:
                    self.ok += 1
                    self.pids.append(json.loads(body)["pid"])
                else:
                    self.failures.append(f"status {status}")
            except Exception as exc:  # counted as a failure
                self.failures.append(repr(exc))
            time.sleep(self.pause)

    def __enter__(self) -> "RequestLoop":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(15)


def curl(*args: str, input: bytes | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    assert shutil.which("curl"), "curl is not installed"
    return subprocess.run(["curl", "--silent", "--show-error", "--max-time", "10", *args],
                          input=input, capture_output=True, timeout=timeout)
