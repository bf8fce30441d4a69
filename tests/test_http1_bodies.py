"""HTTP/1.1 request and response bodies: Content-Length and chunked requests, large bodies and
backpressure, Expect: 100-continue, response framing (computed length, chunked, close-delimited,
app-provided length), HEAD, 204/304, http.response.pathsend and http.response.trailers.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from typing import Any, Iterator

import httpx
import pytest

from tests.support.asgi import Gate, read_body, respond
from tests.support.http1 import TIMEOUT, chunked, curl, RawClient, request
from tests.support.server import serve, server_idle
from tests.support.waiting import wait_until

MB = 1024 * 1024


class BodyRecorder:
    """An app that records every http.request message it receives, then answers with a digest."""

    def __init__(self, delay: float = 0.0) -> None:
        self.messages: list[tuple[int, bool]] = []
        self.delay = delay
        self.gate: Gate | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.gate is not None:
            await self.gate.wait(15)
        elif self.delay:
            await asyncio.sleep(self.delay)
        digest = hashlib.sha256()
        size = 0
        for _ in range(100000):
            message = await receive()
            assert message["type"] == "http.request", message
            body = message.get("body", b"")
            self.messages.append((len(body), message.get("more_body", False)))
            digest.update(body)
            size += len(body)
            if not message.get("more_body", False):
                break
        await respond(send, f"{size} {digest.hexdigest()}".encode())


def digest_line(data: bytes) -> bytes:
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode()


def payload(size: int) -> bytes:
    return os.urandom(size)


# ---------------------------------------------------------------------- request bodies
def test_content_length_body_is_received() -> None:
    app = BodyRecorder()
    with serve(app, lifespan="off") as srv:
        data = b"x" * 1000 + b"end"
        response = httpx.post(srv.url, content=data, timeout=TIMEOUT)
        assert response.content == digest_line(data)
        with RawClient.to(srv) as client:
            client.send(request("POST", "/", [("Content-Length", "5")], b"hello"))
            assert client.read_response().body == digest_line(b"hello")
            # A body split across many writes arrives whole.
            client.send(request("POST", "/", [("Content-Length", "10")]))
            for byte in b"0123456789":
                client.send(bytes([byte]))
                time.sleep(0.002)
            assert client.read_response().body == digest_line(b"0123456789")
    assert app.messages[-1][1] is False


def test_chunked_request_body_is_received() -> None:
    app = BodyRecorder()
    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request("POST", "/", [("Transfer-Encoding", "chunked")],
                                chunked(b"hello ", b"chunked ", b"world", trailers=b"X-T: 1\r\n")))
            assert client.read_response().body == digest_line(b"hello chunked world")
            # Chunks trickling in, with a chunk extension.
            client.send(request("POST", "/", [("Transfer-Encoding", "chunked")]))
            for piece in (b"3;ext=1\r\nabc\r\n", b"2\r\n", b"de\r\n", b"0\r\n\r\n"):
                client.send(piece)
                time.sleep(0.01)
            assert client.read_response().body == digest_line(b"abcde")

        def gen() -> Iterator[bytes]:
            for i in range(20):
                yield b"%03d" % i

        response = httpx.post(srv.url, content=gen(), timeout=TIMEOUT)
        assert response.content == digest_line(b"".join(b"%03d" % i for i in range(20)))


def test_empty_bodies() -> None:
    app = BodyRecorder()
    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request())
            assert client.read_response().body == digest_line(b"")
            client.send(request("POST", "/", [("Content-Length", "0")]))
            assert client.read_response().body == digest_line(b"")
            client.send(request("POST", "/", [("Transfer-Encoding", "chunked")], b"0\r\n\r\n"))
            assert client.read_response().body == digest_line(b"")
    # Each time: a single message with an empty body and more_body False.
    assert app.messages == [(0, False)] * 3


def test_large_body_is_streamed_to_the_app_in_chunks() -> None:
    app = BodyRecorder()
    data = payload(4 * MB)
    with serve(app, lifespan="off") as srv:
        response = httpx.post(srv.url, content=data, timeout=15)
        assert response.content == digest_line(data)
        chunks = len(app.messages)
        assert chunks > 4, app.messages  # delivered piecewise, not buffered whole
        assert all(more for _, more in app.messages[:-1]) and not app.messages[-1][1]
        assert max(size for size, _ in app.messages) < 2 * MB

        app.messages.clear()
        response = httpx.post(srv.url, content=(data[i:i + 300000] for i in range(0, len(data), 300000)),
                              timeout=15)
        assert response.content == digest_line(data)
        assert len(app.messages) > 4


def test_backpressure_pauses_reading_while_the_app_does_not_consume() -> None:
    app = BodyRecorder()
    app.gate = Gate()
    data = payload(5 * MB)
    result: dict = {}

    with serve(app, lifespan="off") as srv:
        def upload() -> None:
            try:
                result["response"] = httpx.post(srv.url, content=data, timeout=20)
            except BaseException as exc:  # reported below
                result["error"] = exc

        thread = threading.Thread(target=upload, daemon=True)
        thread.start()
        try:
            wait_until(lambda: srv.call(lambda: [c.read_paused for c in srv.state.connections]) == [True],
                       10, "reading paused")
            # While paused, the server holds a bounded amount of the body: the rest waits in
            # the kernel buffers and in the client.
            buffered = srv.call(lambda: [len(c.parsing.body) for c in srv.state.connections if c.parsing])
            assert buffered and buffered[0] < 2 * MB, buffered
            time.sleep(0.2)
            assert srv.call(lambda: [c.read_paused for c in srv.state.connections]) == [True]
        finally:
            app.gate.open()
        thread.join(20)
        assert not thread.is_alive()
        assert "error" not in result, result
        assert result["response"].content == digest_line(data)
        assert len(app.messages) > 2
        assert srv.call(lambda: [c.read_paused for c in srv.state.connections]) in ([], [False])


def test_backpressure_with_chunked_upload_over_raw_socket() -> None:
    app = BodyRecorder()
    app.gate = Gate()
    data = payload(5 * MB)
    with serve(app, lifespan="off") as srv:
        client = RawClient.to(srv)
        done = threading.Event()

        def upload() -> None:
            client.send(request("POST", "/", [("Transfer-Encoding", "chunked")]))
            for i in range(0, len(data), 100000):
                client.send(b"%x\r\n%b\r\n" % (len(data[i:i + 100000]), data[i:i + 100000]))
            client.send(b"0\r\n\r\n")
            done.set()

        thread = threading.Thread(target=upload, daemon=True)
        thread.start()
        try:
            wait_until(lambda: srv.call(lambda: [c.read_paused for c in srv.state.connections]) == [True],
                       10, "reading paused")
            time.sleep(0.2)
            assert srv.call(lambda: [c.read_paused for c in srv.state.connections]) == [True]
        finally:
            app.gate.open()
        thread.join(20)
        assert done.is_set()
        assert client.read_response(timeout=10).body == digest_line(data)
        client.close()


def test_unread_request_body_does_not_stall_the_connection() -> None:
    """The app answers without reading a large body: the rest is drained, the connection lives on."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["path"] == "/reject":
            await respond(send, b"too big", status=413)
        else:
            await respond(send, b"next ok")

    data = payload(5 * MB)
    with serve(app, lifespan="off") as srv:
        client = RawClient.to(srv)
        errors: list = []

        def upload() -> None:
            try:
                client.send(request("POST", "/reject", [("Content-Length", str(len(data)))]) + data)
            except OSError as exc:
                errors.append(exc)

        thread = threading.Thread(target=upload, daemon=True)
        thread.start()
        response = client.read_response(timeout=10)
        assert response.status == 413
        thread.join(10)
        assert not thread.is_alive(), "the upload stalled: the server stopped reading the unread body"
        assert errors == []
        # The connection stays usable: the unread rest was drained, not parsed as a request.
        assert response.get("connection") is None
        client.send(request(path="/next"))
        assert client.read_response().body == b"next ok"
        client.close()


# ---------------------------------------------------------------------- Expect: 100-continue
def test_expect_100_continue_is_sent_only_when_the_app_first_receives() -> None:
    gate = Gate()
    seen: list = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await gate.wait()
        body = await read_body(receive)
        seen.append(body)
        await respond(send, b"got " + body)

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request("POST", "/", [("Content-Length", "5"), ("Expect", "100-continue")]))
            assert client.nothing_within(0.4), f"sent before the app asked for the body: {client.buf!r}"
            gate.open()
            interim = client.read_response(allow_interim=True)
            assert interim.status == 100
            assert interim.raw == b"HTTP/1.1 100 Continue\r\n\r\n"
            client.send(b"hello")
            response = client.read_response()
            assert response.status == 200 and response.body == b"got hello"
            # The next request on the connection asks again and gets its own 100.
            client.send(request("POST", "/", [("Content-Length", "3"), ("Expect", "100-continue")]))
            assert client.read_response(allow_interim=True).status == 100
            client.send(b"abc")
            assert client.read_response().body == b"got abc"
    assert seen == [b"hello", b"abc"]


def test_expect_100_not_sent_when_the_app_answers_without_reading() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await respond(send, b"no thanks", status=417)

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request("POST", "/", [("Content-Length", "40"), ("Expect", "100-continue")]))
            response = client.read_response()
            assert response.status == 417 and response.body == b"no thanks"
            # The body never came, so the connection cannot carry another request: bytes the
            # client sends next must not be parsed as that body (or as a request).
            assert response.get("connection") == "close"
            assert client.closed_by_server()


def test_expect_100_ignored_for_http10_and_when_body_already_sent() -> None:
    with serve(BodyRecorder(), lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request("POST", "/", [("Content-Length", "2"), ("Expect", "100-continue")], b"hi"))
            response = client.read_response()  # no interim response: asserts it is the final one
            assert response.body == digest_line(b"hi")
        with RawClient.to(srv) as client:
            client.send(request("POST", "/", [("Content-Length", "2"), ("Expect", "100-continue")], b"hi",
                                version="1.0"))
            assert client.read_response().body == digest_line(b"hi")


def test_curl_expect_100_continue_upload() -> None:
    data = payload(300000)
    with serve(BodyRecorder(), lifespan="off") as srv:
        result = curl("-v", "--expect100-timeout", "5", "-H", "Expect: 100-continue", "--data-binary", "@-",
                      srv.url + "/up", input=data)
        assert result.returncode == 0, result.stderr
        assert result.stdout == digest_line(data)
        assert b"HTTP/1.1 100 Continue" in result.stderr


def test_curl_chunked_upload() -> None:
    data = payload(200000)
    with serve(BodyRecorder(), lifespan="off") as srv:
        result = curl("-H", "Transfer-Encoding: chunked", "--data-binary", "@-", srv.url, input=data)
        assert result.returncode == 0, result.stderr
        assert result.stdout == digest_line(data)


@pytest.mark.parametrize("framing", [[], ["-H", "Transfer-Encoding: chunked"]], ids=["length", "chunked"])
def test_curl_http2_upgrade_with_a_body_is_served_as_http11_with_its_body(framing: list[str]) -> None:
    # curl --http2 on http:// sends "Upgrade: h2c" even with a body. Tether does not upgrade a
    # request with a body, and llhttp skips the body of an upgrade request: it must still reach the app.
    data = payload(300000)
    with serve(BodyRecorder(), lifespan="off") as srv:
        result = curl("-v", "--http2", *framing, "--data-binary", "@-", srv.url, input=data)
        assert result.returncode == 0, result.stderr
        assert b"Upgrade: h2c" in result.stderr and b"HTTP/1.1 200" in result.stderr
        assert result.stdout == digest_line(data)


# ---------------------------------------------------------------------- response framing
def streaming_app(parts: list[bytes], headers: list | None = None, status: int = 200) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        for part in parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    return app


def test_single_body_message_gets_a_computed_content_length() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await respond(send, b"0123456789" * 100)

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request())
            response = client.read_response()
            assert response.framing == "length"
            assert response.get("content-length") == "1000"
            assert response.body == b"0123456789" * 100
            assert "transfer-encoding" not in response


def test_streamed_body_is_chunked_on_http11() -> None:
    parts = [b"first ", b"", b"second ", b"x" * 70000]
    with serve(streaming_app(parts), lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request())
            response = client.read_response()
            assert response.framing == "chunked"
            assert "content-length" not in response
            assert response.body == b"".join(parts)
            # Empty more_body messages produce no chunk (a 0-size chunk would end the body).
            assert response.raw.count(b"\r\n0\r\n\r\n") == 1 and response.raw.endswith(b"\r\n0\r\n\r\n")
            client.send(request())
            assert client.read_response().body == b"".join(parts)  # keep-alive still fine
        assert httpx.get(srv.url, timeout=TIMEOUT).content == b"".join(parts)


def test_streamed_body_on_http10_is_close_delimited() -> None:
    parts = [b"one ", b"two ", b"three"]
    with serve(streaming_app(parts), lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request(version="1.0", headers=[("Connection", "keep-alive")]))
            response = client.read_response()
            assert response.framing == "close"
            assert response.get("connection") == "close"
            assert "transfer-encoding" not in response and "content-length" not in response
            assert response.body == b"one two three"
            assert client.eof


def test_app_provided_content_length_is_respected_when_streaming() -> None:
    parts = [b"abc", b"defg", b"hij"]
    app = streaming_app(parts, headers=[(b"content-length", b"10"), (b"content-type", b"text/plain")])
    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            for _ in range(2):
                client.send(request())
                response = client.read_response()
                assert response.framing == "length"
                assert response.get_all("content-length") == ["10"]
                assert "transfer-encoding" not in response
                assert response.body == b"abcdefghij"
            # HTTP/1.0 with a length can stay open too.
            client.send(request(version="1.0", headers=[("Connection", "keep-alive")]))
            response = client.read_response()
            assert response.body == b"abcdefghij" and response.get("connection") == "keep-alive"


def test_app_transfer_encoding_header_is_not_duplicated() -> None:
    app = streaming_app([b"a", b"b"], headers=[(b"Transfer-Encoding", b"chunked")])
    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request())
            response = client.read_response()
            assert response.get_all("transfer-encoding") == ["chunked"]
            assert response.body == b"ab"


def test_head_sends_no_body_but_the_length_get_would_send() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["path"] == "/stream":
            await streaming_app([b"a" * 10, b"b" * 10])(scope, receive, send)
        else:
            await respond(send, b"hello, head")

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request("GET"))
            get = client.read_response()
            client.send(request("HEAD"))
            head = client.read_response(head=True)
            assert head.status == 200
            assert head.get("content-length") == get.get("content-length") == "11"
            # Byte-exact: the next thing on the wire is the next response, not a body.
            client.send(request("HEAD", "/stream"))
            stream_head = client.read_response(head=True)
            assert "content-length" not in stream_head
            client.send(request("GET"))
            assert client.buf == b""
            assert client.read_response().body == b"hello, head"
            assert client.nothing_within(0.2)
        response = httpx.head(srv.url, timeout=TIMEOUT)
        assert response.headers["content-length"] == "11" and response.content == b""


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status: int) -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        headers = [(b"etag", b'"v1"')]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"must not be sent"})

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            for _ in range(2):
                client.send(request())
                response = client.read_response()
                assert response.status == status
                assert "transfer-encoding" not in response
                assert "content-length" not in response
            client.send(request())
            assert client.read_response().status == status  # nothing stray between responses
            assert client.nothing_within(0.2), client.buf


def test_304_keeps_app_content_length() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 304, "headers": [(b"content-length", b"42")]})
        await send({"type": "http.response.body", "body": b""})

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request() + request())
            for _ in range(2):
                response = client.read_response()
                assert response.status == 304 and response.get("content-length") == "42"
            assert client.nothing_within(0.2)


# ---------------------------------------------------------------------- pathsend
@pytest.fixture
def big_file(tmp_path: Any) -> tuple[str, bytes]:
    data = payload(MB + 12345)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    return str(path), data


def pathsend_app(path: str, headers: list | None = None) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        assert "http.response.pathsend" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200,
                    "headers": headers or [(b"content-type", b"application/octet-stream")]})
        await send({"type": "http.response.pathsend", "path": path})
    return app


def test_pathsend_sends_the_exact_file_with_content_length(big_file: tuple[str, bytes]) -> None:
    path, data = big_file
    with serve(pathsend_app(path), lifespan="off") as srv:
        response = httpx.get(srv.url, timeout=TIMEOUT)
        assert response.status_code == 200
        assert response.headers["content-length"] == str(len(data))
        assert response.content == data
        with RawClient.to(srv) as client:
            for _ in range(2):  # keep-alive after a file
                client.send(request())
                response = client.read_response(timeout=10)
                assert response.framing == "length" and response.body == data
            client.send(request("HEAD"))
            head = client.read_response(head=True)
            assert head.get("content-length") == str(len(data))
            client.send(request())
            assert client.read_response(timeout=10).body == data
        result = curl(srv.url)
        assert result.returncode == 0 and result.stdout == data


def test_pathsend_over_http10_with_app_length(big_file: tuple[str, bytes]) -> None:
    path, data = big_file
    app = pathsend_app(path, headers=[(b"content-length", str(len(data)).encode())])
    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request(version="1.0"))
            response = client.read_response(timeout=10)
            assert response.get_all("content-length") == [str(len(data))]
            assert response.body == data
            assert client.closed_by_server()


# ---------------------------------------------------------------------- trailers
def trailers_app(parts: list[bytes], trailers: list, more_trailers: list | None = None) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        assert "http.response.trailers" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"trailer", b"x-checksum")]})
        for i, part in enumerate(parts):
            await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})
        if more_trailers:
            await send({"type": "http.response.trailers", "headers": more_trailers, "more_trailers": True})
        await send({"type": "http.response.trailers", "headers": trailers})
    return app


def test_trailers_follow_the_last_chunk() -> None:
    app = trailers_app([b"hello ", b"world"], [(b"x-checksum", b"abc123")], more_trailers=[(b"x-first", b"1")])
    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request(headers=[("TE", "trailers")]))
            response = client.read_response()
            assert response.framing == "chunked"
            assert response.body == b"hello world"
            assert response.trailers == [("x-first", "1"), ("x-checksum", "abc123")]
            assert response.raw.endswith(b"5\r\nworld\r\n0\r\nx-first: 1\r\nx-checksum: abc123\r\n\r\n")
            client.send(request())
            assert client.read_response().trailers == [("x-first", "1"), ("x-checksum", "abc123")]
            assert client.nothing_within(0.2)


def test_trailers_with_a_single_body_message_are_chunked() -> None:
    app = trailers_app([b"all at once"], [(b"x-checksum", b"z")])
    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request())
            response = client.read_response()
            assert response.framing == "chunked" and "content-length" not in response
            assert response.body == b"all at once" and response.trailers == [("x-checksum", "z")]


def test_trailers_are_dropped_when_the_body_is_not_chunked() -> None:
    """HTTP/1.0, HEAD, 204 and an app-provided length: no trailer block may reach the wire."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        status = 204 if scope["path"] == "/204" else 200
        headers = [(b"content-length", b"4")] if scope["path"] == "/length" else []
        # HTTP/1.0 has no trailers: the extension is not advertised, so the app sends none.
        trailers = "http.response.trailers" in scope["extensions"]
        assert trailers == (scope["http_version"] == "1.1")
        await send({"type": "http.response.start", "status": status, "trailers": trailers, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if status == 204 else b"body"})
        if trailers:
            await send({"type": "http.response.trailers", "headers": [(b"x-t", b"1")]})

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request(path="/204"))
            assert client.read_response().status == 204
            client.send(request("HEAD"))
            client.read_response(head=True)
            client.send(request(path="/length"))
            response = client.read_response()
            assert response.body == b"body" and response.framing == "length"
            client.send(request())
            assert client.read_response().trailers == [("x-t", "1")]
            assert client.nothing_within(0.2), f"stray bytes: {client.buf!r}"
        with RawClient.to(srv) as client:
            client.send(request(version="1.0"))
            response = client.read_response()
            assert response.body == b"body"
            assert b"x-t" not in response.raw
            assert client.closed_by_server()
        server_idle(srv)
