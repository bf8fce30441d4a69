"""The sans-I/O pieces the protocols share (protocols/wire.py), byte by byte and without a loop,
then the one header check seen from each protocol over a real socket: a field that could split
a message never reaches the wire, whatever the protocol."""

from __future__ import annotations

import socket
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.support.server import serve
from tether.protocols.wire import (
    NO_BODY_STATUSES, STATUS_LINES, build_head, check_field, chunk, decode_path, declared_length, simple_response,
    trailer_block,
)

EXTRA = b"server: tether\r\n"


# ---------------------------------------------------------------------- check_field
@pytest.mark.parametrize("item", [(b"x-a", b"1"), (b"X-Custom!#$%&'*+-.^_`|~", b"any value \t with tabs"), (b"a", b"")])
def test_check_field_accepts_tokens_and_plain_values(item: tuple) -> None:
    assert check_field(item) == item


@pytest.mark.parametrize("item, message", [
    ((b"x\r\ny", b"1"), "token"),
    ((b"x y", b"1"), "token"),
    ((b"x:y", b"1"), "token"),
    ((b":status", b"200"), "token"),  # (an app cannot forge an HTTP/2 pseudo-header)
    ((b"", b"1"), "token"),
    ((b"x-a", b"a\r\nb"), "CR, LF or NUL"),
    ((b"x-a", b"a\nb"), "CR, LF or NUL"),
    ((b"x-a", b"a\x00b"), "CR, LF or NUL"),
    (("x-a", b"1"), "must be bytes"),
    ((b"x-a", "1"), "must be bytes"),
    ((b"x-a",), "pairs"),
    (b"x-a", "pairs"),
])
def test_check_field_refuses_what_could_split_a_message(item: Any, message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        check_field(item)


# ---------------------------------------------------------------------- build_head
def test_complete_response_gets_a_content_length() -> None:
    info = build_head(200, [(b"content-type", b"text/plain")], 5, False, True, True, False, EXTRA)
    assert info.head == b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nserver: tether\r\ncontent-length: 5\r\n\r\n"
    assert (info.content_length, info.chunked, info.keep_alive) == (None, False, True)


def test_streamed_response_is_chunked_on_http11_and_close_delimited_on_http10() -> None:
    info = build_head(200, [], 3, True, True, True, False, b"")
    assert info.head == b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" and info.chunked
    info = build_head(200, [], 3, True, True, False, False, b"")
    assert info.head == b"HTTP/1.0 200 OK\r\nconnection: close\r\n\r\n"
    assert not info.chunked and not info.keep_alive


def test_app_framing_headers_are_ours_to_write() -> None:
    headers = [(b"Content-Length", b"10"), (b"Transfer-Encoding", b"chunked"), (b"Connection", b"close")]
    info = build_head(200, headers, 0, True, True, True, False, b"")
    assert info.head == b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\n"
    assert (info.content_length, info.chunked, info.keep_alive) == (10, False, False)


@pytest.mark.parametrize("status", sorted(NO_BODY_STATUSES)[:3] + [204, 304])
def test_bodyless_statuses_get_no_length_and_no_chunking(status: int) -> None:
    info = build_head(status, [], 0, True, True, True, False, b"")
    assert b"content-length" not in info.head and b"transfer-encoding" not in info.head


def test_head_request_keeps_an_app_length_and_adds_none() -> None:
    assert b"content-length" not in build_head(200, [], 0, False, True, True, True, b"").head
    assert b"content-length: 7" in build_head(200, [(b"content-length", b"7")], 0, False, True, True, True, b"").head


def test_http10_keep_alive_is_said_explicitly() -> None:
    assert build_head(200, [], 0, False, True, False, False, b"").head.endswith(b"connection: keep-alive\r\n\r\n")


@pytest.mark.parametrize("headers", [[(b"x\r\ny", b"1")], [(b"x", b"a\x00b")], [(b"content-length", b"x1")]])
def test_build_head_refuses_bad_headers(headers: list) -> None:
    with pytest.raises(RuntimeError):
        build_head(200, headers, 0, False, True, True, False, b"")


def test_status_lines_and_unknown_codes() -> None:
    assert STATUS_LINES[404] == b"HTTP/1.1 404 Not Found\r\n"
    assert STATUS_LINES[599] == b"HTTP/1.1 599 \r\n"


# ---------------------------------------------------------------------- chunks, trailers, errors
def test_chunk_and_trailer_block() -> None:
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert chunk(b"") == b""  # (an empty chunk would end the body)
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert trailer_block([(b"x-sum", b"1")]) == b"0\r\nx-sum: 1\r\n\r\n"
    with pytest.raises(RuntimeError, match="trailer"):
        trailer_block([(b"x-sum", b"1\r\nx-evil: 2")])


def test_simple_response() -> None:
    assert simple_response(400, b"bad", EXTRA, False) == (
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 3\r\n"
        b"server: tether\r\nconnection: close\r\n\r\nbad")


# ---------------------------------------------------------------------- requests
@pytest.mark.parametrize("raw, path", [
    (b"/a/b", "/a/b"), (b"/a%20b", "/a b"), (b"/%E2%82%AC", "/\u20ac"), (b"/%FF", "/\udcff"), (b"/a%2Fb", "/a/b"),
])
def test_decode_path(raw: bytes, path: str) -> None:
    assert decode_path(raw) == path


def test_declared_length() -> None:
    assert declared_length([(b"host", b"x"), (b"content-length", b"12")]) == 12
    assert declared_length([(b"host", b"x")]) == 0


# ---------------------------------------------------------------------- the check, on every protocol
BAD_FIELDS = [(b"x\r\ninjected", b"1"), (b"x-ok", b"1\r\ninjected: 2"), (b"x-ok", b"1\x002"), (b"x y", b"1")]


def header_app(field: tuple, where: str) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept", "headers": [field]})
            return
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"text/plain")] + ([field] if where == "headers" else [])
        await send({"type": "http.response.start", "status": 200, "headers": headers, "trailers": where == "trailers"})
        await send({"type": "http.response.body", "body": b"body", "more_body": where == "trailers"})
        if where == "trailers":
            await send({"type": "http.response.body", "body": b""})
            await send({"type": "http.response.trailers", "headers": [field]})
    return app


@pytest.mark.parametrize("field", BAD_FIELDS)
def test_http1_response_header_that_could_split_gets_500(field: tuple) -> None:
    with serve(header_app(field, "headers"), lifespan="off") as srv:
        response = httpx.get(srv.url, timeout=10)
        assert response.status_code == 500
        assert b"injected" not in response.content and "injected" not in response.headers


@pytest.mark.parametrize("field", BAD_FIELDS)
def test_http2_response_header_that_could_split_gets_500(field: tuple) -> None:
    with serve(header_app(field, "headers"), lifespan="off") as srv:
        with httpx.Client(http1=False, http2=True, timeout=10) as client:
            response = client.get(srv.url)
        assert response.http_version == "HTTP/2" and response.status_code == 500
        assert "injected" not in response.headers and "x y" not in response.headers


@pytest.mark.parametrize("field", BAD_FIELDS)
def test_http2_trailer_that_could_split_resets_the_stream(field: tuple) -> None:
    """The body had started: the stream is reset, and no such trailer is sent."""
    with serve(header_app(field, "trailers"), lifespan="off") as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        conn.send_headers(1, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x"), (b":path", b"/"),
                              (b"te", b"trailers")], end_stream=True)
        sock.sendall(conn.data_to_send())
        events: list = []
        while not any(isinstance(e, (h2.events.StreamReset, h2.events.StreamEnded)) for e in events):
            data = sock.recv(65536)
            assert data, "the connection closed instead of resetting the stream"
            events += conn.receive_data(data)
            sock.sendall(conn.data_to_send())
        sock.close()
        assert not any(isinstance(e, h2.events.TrailersReceived) for e in events), events
        assert any(isinstance(e, h2.events.StreamReset) for e in events), events


@pytest.mark.parametrize("field", BAD_FIELDS)
def test_websocket_accept_header_that_could_split_gets_500(field: tuple) -> None:
    with serve(header_app(field, "headers"), lifespan="off") as srv:
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{srv.port}/", open_timeout=10)
        assert refused.value.response.status_code == 500
