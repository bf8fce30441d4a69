"""HTTP/1.1 request smuggling and malformed-input corpus (our own; HTTP Garden and the smuggler
tools need Docker here), drawn from RFC 9112 and published desync research. Each case sends raw
bytes on a fresh connection and asserts the exact outcome: a single error status and the
connection closed with the app never called, or exactly the requests a strict RFC 9112 reading
gives (method, path, body), never a second request smuggled through."""

from __future__ import annotations

import re
import socket
import time
from typing import Any, Iterator

import pytest

from tests.support.http1 import read_until_closed
from tests.support.server import serve

pytestmark = pytest.mark.timeout(60)
H = b"Host: x\r\n"


def post(*headers: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"POST / HTTP/" + version + b"\r\n" + H + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def get(line: bytes = b"GET / HTTP/1.1", *headers: bytes) -> bytes:
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


CHUNKED = b"Transfer-Encoding: chunked"
SECOND = b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
ONE_POST_ABC = [("POST", "/", b"abc")]

# name -> (raw bytes, expected): an int is "that status, connection closed, app not called";
# a list is the exact requests the app must see (each answered 200); BODY_ERROR is a framing
# error inside the body: 400 and close, and the app (already running, since bodies stream) is
# told http.disconnect instead of a complete body.
BODY_ERROR = "400 in the body"
CASES: dict[str, tuple[bytes, Any]] = {
    # Content-Length and Transfer-Encoding together, or Content-Length ambiguous (RFC 9112 §6.1, §6.3)
    "CL and TE": (post(b"Content-Length: 6", CHUNKED, body=b"0\r\n\r\n" + SECOND), 400),
    "TE and CL": (post(CHUNKED, b"Content-Length: 3", body=b"8\r\nSMUGGLED\r\n0\r\n\r\n"), 400),
    "CL and TE, HTTP/1.0": (post(b"Content-Length: 3", CHUNKED, body=b"abc", version=b"1.0"), 400),
    "duplicate identical CL": (post(b"Content-Length: 3", b"Content-Length: 3", body=b"abc"), 400),
    "conflicting CL": (post(b"Content-Length: 3", b"Content-Length: 4", body=b"abcd"), 400),
    "CL list": (post(b"Content-Length: 3, 3", body=b"abc"), 400),
    "CL with plus sign": (post(b"Content-Length: +3", body=b"abc"), 400),
    "CL negative": (post(b"Content-Length: -3", body=b"abc"), 400),
    "CL hex": (post(b"Content-Length: 0x3", body=b"abc"), 400),
    "CL with inner space": (post(b"Content-Length: 1 2", body=b"abc"), 400),
    "CL overflow": (post(b"Content-Length: 99999999999999999999999", body=b"abc"), 400),
    "CL with trailing OWS": (post(b"Content-Length: 3 ", body=b"abc"), ONE_POST_ABC),
    "CL 0 then a second request": (post(b"Content-Length: 0") + SECOND, [("POST", "/", b""), ("GET", "/second", b"")]),
    # Transfer-Encoding obfuscations
    "TE xchunked": (post(b"Transfer-Encoding: xchunked", body=b"3\r\nabc\r\n0\r\n\r\n"), 400),
    "TE chunked, identity": (post(b"Transfer-Encoding: chunked, identity", body=b"3\r\nabc\r\n0\r\n\r\n"), 400),
    "TE identity, chunked": (post(b"Transfer-Encoding: identity, chunked", body=b"3\r\nabc\r\n0\r\n\r\n"), 501),
    "TE gzip, chunked": (post(b"Transfer-Encoding: gzip, chunked", body=b"3\r\nabc\r\n0\r\n\r\n"), 501),
    "TE gzip only": (post(b"Transfer-Encoding: gzip", body=b"abc"), 400),
    "TE with leading spaces": (post(b"Transfer-Encoding:  chunked", body=b"3\r\nabc\r\n0\r\n\r\n"), ONE_POST_ABC),
    "TE with leading tab": (post(b"Transfer-Encoding:\tchunked", body=b"3\r\nabc\r\n0\r\n\r\n"), ONE_POST_ABC),
    "TE with trailing tab": (post(b"Transfer-Encoding: chunked\t", body=b"3\r\nabc\r\n0\r\n\r\n"), 400),
    "TE upper case": (post(b"Transfer-Encoding: CHUNKED", body=b"3\r\nabc\r\n0\r\n\r\n"), ONE_POST_ABC),
    "TE space before colon": (post(b"Transfer-Encoding : chunked", body=b"3\r\nabc\r\n0\r\n\r\n"), 400),
    "TE vertical tab": (post(b"Transfer-Encoding:\x0bchunked", body=b"3\r\nabc\r\n0\r\n\r\n"), 400),
    "TE form feed": (post(b"Transfer-Encoding:\x0cchunked", body=b"3\r\nabc\r\n0\r\n\r\n"), 400),
    "TE twice": (post(CHUNKED, CHUNKED, body=b"3\r\nabc\r\n0\r\n\r\n"), 400),
    "TE chunked then identity": (post(CHUNKED, b"Transfer-Encoding: identity", body=b"3\r\nabc\r\n0\r\n\r\n"), 400),
    "TE in HTTP/1.0 (processed, then closed)": (post(CHUNKED, b"Connection: keep-alive", body=b"3\r\nabc\r\n0\r\n\r\n" + SECOND,
                                                     version=b"1.0"), ONE_POST_ABC),
    # line folding, bare CR/LF, control bytes (RFC 9112 §2.2, §5.2; RFC 9110 §5.5)
    "obs-fold": (get(b"GET / HTTP/1.1", b"Host: x", b"X-A: a", b" b"), 400),
    "obs-fold hiding TE": (post(b"X-A: a", b" Transfer-Encoding: chunked", body=b"3\r\nabc\r\n0\r\n\r\n"), 400),
    "bare CR in a value": (get(b"GET / HTTP/1.1", b"Host: x", b"X-A: a\rb"), 400),
    "bare CR ending the request line": (b"GET / HTTP/1.1\rHost: x\r\n\r\n", 400),
    "bare LF line endings": (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    "bare LF in the head": (b"GET / HTTP/1.1\r\nHost: x\n\r\n", 400),
    "NUL in a value": (get(b"GET / HTTP/1.1", b"Host: x", b"X-A: a\x00b"), 400),
    "NUL in a name": (get(b"GET / HTTP/1.1", b"Host: x", b"X-\x00A: a"), 400),
    "control byte in a value": (get(b"GET / HTTP/1.1", b"Host: x", b"X-A: a\x01b"), 400),
    "DEL in a value": (get(b"GET / HTTP/1.1", b"Host: x", b"X-A: a\x7fb"), 400),
    "control byte in a name": (get(b"GET / HTTP/1.1", b"Host: x", b"X\x01A: a"), 400),
    "space in a name": (get(b"GET / HTTP/1.1", b"Host: x", b"X A: a"), 400),
    "whitespace before the colon": (get(b"GET / HTTP/1.1", b"Host: x", b"X-A : a"), 400),
    "empty header name": (get(b"GET / HTTP/1.1", b"Host: x", b": a"), 400),
    "header without colon": (get(b"GET / HTTP/1.1", b"Host: x", b"X-A a"), 400),
    "first header line indented": (get(b"GET / HTTP/1.1", b" Host: x"), 400),
    # chunked framing (RFC 9112 §7.1)
    "chunk size overflow": (post(CHUNKED, body=b"ffffffffffffffffff\r\nabc\r\n0\r\n\r\n"), BODY_ERROR),
    "negative chunk size": (post(CHUNKED, body=b"-3\r\nabc\r\n0\r\n\r\n"), BODY_ERROR),
    "0x chunk size": (post(CHUNKED, body=b"0x3\r\nabc\r\n0\r\n\r\n"), BODY_ERROR),
    "space before chunk size": (post(CHUNKED, body=b" 3\r\nabc\r\n0\r\n\r\n"), BODY_ERROR),
    "space after chunk size": (post(CHUNKED, body=b"3 \r\nabc\r\n0\r\n\r\n"), BODY_ERROR),
    "chunk extension": (post(CHUNKED, body=b"3;name=value\r\nabc\r\n0\r\n\r\n"), ONE_POST_ABC),
    "chunk extension quoted": (post(CHUNKED, body=b'3;name="a b"\r\nabc\r\n0\r\n\r\n'), ONE_POST_ABC),
    "NUL in a chunk extension": (post(CHUNKED, body=b"3;\x00\r\nabc\r\n0\r\n\r\n"), BODY_ERROR),
    "bare LF in a chunk extension": (post(CHUNKED, body=b"3;a\nb\r\nabc\r\n0\r\n\r\n"), BODY_ERROR),
    # Chunk extensions are bounded (16 KiB a chunk on average; CVE-2024-22019 in Node).
    "100 KB chunk extension": (post(CHUNKED, body=b"3;" + b"e" * 100000 + b"\r\nabc\r\n0\r\n\r\n"), BODY_ERROR),
    "4 KB chunk extension": (post(CHUNKED, body=b"3;" + b"e" * 4000 + b"\r\nabc\r\n0\r\n\r\n"), ONE_POST_ABC),
    "chunk data longer than its size": (post(CHUNKED, body=b"3\r\nabcX\r\n0\r\n\r\n"), BODY_ERROR),
    "LF only after chunk data": (post(CHUNKED, body=b"3\r\nabc\n0\r\n\r\n"), BODY_ERROR),
    "LF only after chunk size": (post(CHUNKED, body=b"3\nabc\r\n0\r\n\r\n"), BODY_ERROR),
    "trailer fields": (post(CHUNKED, body=b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"), ONE_POST_ABC),
    "invalid trailer field": (post(CHUNKED, body=b"3\r\nabc\r\n0\r\nX T: 1\r\n\r\n"), BODY_ERROR),
    "chunked body then a second request": (post(CHUNKED, body=b"0\r\n\r\n" + SECOND), [("POST", "/", b""), ("GET", "/second", b"")]),
    "chunked body with a request inside the data": (post(CHUNKED, body=b"%x\r\n" % len(SECOND) + SECOND + b"\r\n0\r\n\r\n"),
                                                    [("POST", "/", SECOND)]),
    # request line (RFC 9112 §3)
    "HTTP/0.9": (b"GET /\r\n\r\n", 400),
    "HTTP/1.2": (get(b"GET / HTTP/1.2", H.strip()), 400),
    "HTTP/2.0 in an HTTP/1 request line": (get(b"GET / HTTP/2.0", H.strip()), 505),
    "HTTP/9.9": (get(b"GET / HTTP/9.9", H.strip()), 400),
    "lower-case http": (get(b"GET / http/1.1", H.strip()), 400),
    "space after the version": (get(b"GET / HTTP/1.1 ", H.strip()), 400),
    "absolute-form": (get(b"GET http://example.org/abs?q=1 HTTP/1.1", H.strip()), [("GET", "/abs", b"")]),
    "missing Host": (get(b"GET / HTTP/1.1"), 400),
    "duplicate Host": (get(b"GET / HTTP/1.1", b"Host: a", b"Host: b"), 400),
    "HTTP/1.0 without Host": (get(b"GET / HTTP/1.0"), [("GET", "/", b"")]),
    "lower-case method": (get(b"get / HTTP/1.1", H.strip()), 400),
    "method with a bad character": (get(b"G@T / HTTP/1.1", H.strip()), 400),
    "unknown method": (get(b"FOO / HTTP/1.1", H.strip()), 400),
    "tab separators": (get(b"GET\t/\tHTTP/1.1", H.strip()), 400),
    "control byte in the target": (get(b"GET /a\x01b HTTP/1.1", H.strip()), 400),
    "space in the target": (get(b"GET /a b HTTP/1.1", H.strip()), 400),
    "target neither origin- nor absolute-form": (get(b"GET q=1 HTTP/1.1", H.strip()), 400),
    "empty line before the request (ignored)": (b"\r\n" + get(b"GET / HTTP/1.1", H.strip()), [("GET", "/", b"")]),
    # pipelining
    "two pipelined requests": (get(b"GET /1 HTTP/1.1", H.strip()) + get(b"GET /2 HTTP/1.1", H.strip()),
                               [("GET", "/1", b""), ("GET", "/2", b"")]),
    "bad request pipelined behind a good one": (post(b"Content-Length: 3", body=b"abc") + b"GET /second HTTP/1.1\r\n" + H
                                                + b"Content-Length: x\r\n\r\n", (ONE_POST_ABC, 400)),
    "request after Connection: close is not served": (get(b"GET /1 HTTP/1.1", H.strip(), b"Connection: close")
                                                      + get(b"GET /2 HTTP/1.1", H.strip()), [("GET", "/1", b"")]),
    "GET with a body": (get(b"GET / HTTP/1.1", H.strip(), b"Content-Length: 3") + b"abc", [("GET", "/", b"abc")]),
}


class Recording:
    def __init__(self) -> None:
        self.requests: list[tuple] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.requests.append((scope["method"], scope["path"], body, "disconnect"))
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests.append((scope["method"], scope["path"], body))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Any, Recording]]:
    app = Recording()
    with serve(app, timeout_keep_alive=0.2) as srv:
        yield srv, app


def exchange(port: int, raw: bytes) -> tuple[list[int], bool]:
    """Send raw, read until the server closes (or 3 s pass); the statuses it answered."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=3)
    try:
        sock.sendall(raw)
    except OSError:
        pass
    data, closed = read_until_closed(sock, 3)
    sock.close()
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", data)], closed


@pytest.mark.parametrize("raw, expected", list(CASES.values()), ids=list(CASES))
def test_smuggling_case(server: tuple, raw: bytes, expected: Any) -> None:
    srv, app = server
    app.requests.clear()
    statuses, closed = exchange(srv.port, raw)
    time.sleep(0.05)  # (an app that was wrongly started would have recorded by now)
    assert closed, "the connection was left open"
    if expected == BODY_ERROR:
        assert statuses == [400]
        assert len(app.requests) == 1 and app.requests[0][-1] == "disconnect", app.requests
    elif isinstance(expected, int):
        assert statuses == [expected]
        assert app.requests == [], f"the app was called for a request that must be refused: {app.requests}"
    elif isinstance(expected, tuple):  # served requests, then an error status for the bad one behind them
        served, status = expected
        assert statuses == [200] * len(served) + [status]
        assert app.requests == served
    else:
        assert statuses == [200] * len(expected)
        assert app.requests == expected


def test_corpus_size() -> None:
    assert len(CASES) >= 60
