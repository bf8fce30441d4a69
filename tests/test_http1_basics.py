"""HTTP/1.1 connection management: keep-alive, pipelining, HTTP/1.0, Connection: close,
the keep-alive timeout, default response headers, and a few runs with curl.

The raw-socket HTTP/1.1 client that parses responses byte-exactly is tests/support/http1.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from typing import Any, Iterator

import httpx

from tests.support.asgi import echo_path, read_body, respond
from tests.support.http1 import TIMEOUT, chunked, curl, RawClient, request
from tests.support.server import serve


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
