"""Request limits and client timeouts (README "Security and limits"): each limit yields its
status on a real socket, the app is not called (or is told http.disconnect), and the worker
keeps serving. HTTP/1.1 with raw sockets, HTTP/2 with the h2 library on a raw socket."""

from __future__ import annotations

import socket
import time
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.settings
import httpx
import pytest

from tests.support.asgi import respond
from tests.support.h2 import H2Client
from tests.support.http1 import TIMEOUT, RawClient, recv_until, request
from tests.support.server import serve
from tests.support.waiting import wait_until

OK = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}


class Seen:
    """What the app under test saw: requests started, the messages receive() gave it, send errors."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.messages: list[str] = []
        self.send_errors: list[BaseException] = []


def reading_app(seen: Seen) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.calls.append(scope["path"])
        while True:
            message = await receive()
            seen.messages.append(message["type"])
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        if seen.messages[-1] != "http.disconnect":
            await respond(send, b"done")
    return app


def refused(srv: Any, raw: bytes, status: int) -> None:
    with RawClient.to(srv) as client:
        client.send(raw)
        response = client.read_response()
        assert response.status == status, response.raw
        assert response.get("connection") == "close"
        assert client.read_to_eof() == b""


def still_serving(srv: Any) -> None:
    assert httpx.get(srv.url + "/still", timeout=TIMEOUT).status_code == 200


# ---------------------------------------------------------------------- HTTP/1.1 limits
def test_request_line_over_limit_gets_414() -> None:
    seen = Seen()
    with serve(reading_app(seen), limit_request_line=100) as srv:
        refused(srv, request(path="/" + "a" * 100), 414)
        with RawClient.to(srv) as client:  # exactly at the limit is fine
            client.send(request(path="/" + "a" * 99))
            assert client.read_response().status == 200
        assert seen.calls == ["/" + "a" * 99]


def test_too_many_header_fields_gets_431() -> None:
    seen = Seen()
    with serve(reading_app(seen), limit_request_fields=5) as srv:
        refused(srv, request(headers=[(f"x-{i}", "v") for i in range(5)]), 431)  # Host makes 6
        with RawClient.to(srv) as client:
            client.send(request(headers=[(f"x-{i}", "v") for i in range(4)]))
            assert client.read_response().status == 200
        assert seen.calls == ["/"]


def test_header_field_over_size_limit_gets_431() -> None:
    seen = Seen()
    with serve(reading_app(seen), limit_request_field_size=50) as srv:
        refused(srv, request(headers=[("x-long", "v" * 45)]), 431)  # 6 + 45 > 50
        with RawClient.to(srv) as client:
            client.send(request(headers=[("x-long", "v" * 44)]))
            assert client.read_response().status == 200
        assert seen.calls == ["/"]


def test_declared_body_over_limit_gets_413_before_the_app_runs() -> None:
    seen = Seen()
    with serve(reading_app(seen), limit_request_body=10) as srv:
        refused(srv, request("POST", headers=[("Content-Length", "11")], body=b"x" * 11), 413)
        assert seen.calls == []
        with RawClient.to(srv) as client:
            client.send(request("POST", headers=[("Content-Length", "10")], body=b"x" * 10))
            assert client.read_response().body == b"done"
        still_serving(srv)


def test_chunked_body_over_limit_gets_413_and_the_app_is_told() -> None:
    seen = Seen()
    with serve(reading_app(seen), limit_request_body=10) as srv:
        with RawClient.to(srv) as client:
            client.send(request("POST", headers=[("Transfer-Encoding", "chunked")]) + b"6\r\nabcdef\r\n")
            deadline = time.monotonic() + TIMEOUT
            while not seen.messages and time.monotonic() < deadline:
                time.sleep(0.01)
            client.send(b"6\r\nghijkl\r\n")  # 12 > 10
            response = client.read_response()
            assert response.status == 413
            assert client.read_to_eof() == b""
        deadline = time.monotonic() + TIMEOUT
        while "http.disconnect" not in seen.messages and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen.messages == ["http.request", "http.disconnect"]
        still_serving(srv)


@pytest.mark.parametrize("how", ["with_head", "after_head", "trickled"])
def test_unbounded_chunk_extension_gets_400(how: str) -> None:
    """A chunk-size line with 200 kB of extension (the class of CVE-2024-22019): 400 and close,
    whether it comes in the same read as the head, later, or a little at a time."""
    seen = Seen()
    head = request("POST", headers=[("Transfer-Encoding", "chunked")])
    line = b"5;" + b"x" * 200_000
    with serve(reading_app(seen)) as srv:
        with RawClient.to(srv) as client:
            if how == "with_head":
                client.send(head + line)
            elif how == "after_head":
                client.send(head)
                wait_until(lambda: seen.calls, what="the app started")
                client.send(line)
            else:
                client.send(head + line[:1000])
                for start in range(1000, len(line), 4000):
                    try:
                        client.send(line[start:start + 4000])
                    except OSError:
                        break  # (refused already: the server closed)
                    time.sleep(0.002)
            response = client.read_response()
            assert response.status == 400, response.raw_head
            assert b"Chunk extension" in response.body
        still_serving(srv)


def test_ordinary_chunked_bodies_are_not_mistaken_for_long_extensions() -> None:
    """Many tiny chunks, short extensions, trailers and pipelined requests stay within the bound."""
    seen = Seen()
    with serve(reading_app(seen)) as srv:
        with RawClient.to(srv) as client:
            tiny = b"".join(b"1;n=v\r\n%c\r\n" % (65 + i % 26) for i in range(20_000))  # 9 bytes of framing per byte
            body = tiny + b"0\r\nX-Trailer: " + b"t" * 4000 + b"\r\n\r\n"
            get = request("GET", headers=[("X-Pad", "p" * 8000)])
            client.send(get + request("POST", headers=[("Transfer-Encoding", "chunked")]) + body + get)
            for _ in range(3):
                assert client.read_response().status == 200
        assert seen.messages.count("http.disconnect") == 0
        still_serving(srv)


# ---------------------------------------------------------------------- HTTP/1.1 timeouts
def test_slow_request_head_gets_408_after_timeout_request_header() -> None:
    seen = Seen()
    with serve(reading_app(seen), timeout_request_header=1, timeout_keep_alive=30) as srv:
        with RawClient.to(srv) as client:
            started = time.monotonic()
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
            for _ in range(3):  # a slowloris keeps trickling: that does not extend the deadline
                time.sleep(0.4)
                client.send(b"X-Drip: 1\r\n")
            response = client.read_response(timeout=10)
            assert response.status == 408
            assert client.read_to_eof() == b""
            assert 1 <= time.monotonic() - started < 6
        assert seen.calls == []
        still_serving(srv)


def test_hundreds_of_slow_heads_timing_out_together_all_get_408() -> None:
    # The sweep checks connections in slices, one slice per pass of the loop: every slice must
    # run, and a normal client is served while they are cut.
    with serve(reading_app(Seen()), timeout_request_header=1, timeout_keep_alive=30) as srv:
        slow = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(300)]
        try:
            for sock in slow:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            still_serving(srv)
            answers = []
            for sock in slow:
                answers.append(recv_until(sock, b"\r\n", 10).split(b"\r\n", 1)[0])
            assert answers == [b"HTTP/1.1 408 Request Timeout"] * 300
            still_serving(srv)
        finally:
            for sock in slow:
                sock.close()


def test_stalled_upload_is_cut_and_the_app_gets_disconnect() -> None:
    seen = Seen()
    with serve(reading_app(seen), timeout_request_body=1) as srv:
        with RawClient.to(srv) as client:
            client.send(request("POST", headers=[("Content-Length", "100")], body=b"x" * 10))
            started = time.monotonic()
            response = client.read_response(timeout=10)
            assert response.status == 408
            assert 1 <= time.monotonic() - started < 6
        # The 408 is written before the app's receive() returns in a later loop pass: wait for it.
        wait_until(lambda: "http.disconnect" in seen.messages, TIMEOUT, "the app told of the stalled upload")
        assert seen.messages == ["http.request", "http.disconnect"]


def test_a_slow_but_moving_upload_is_not_cut() -> None:
    seen = Seen()
    with serve(reading_app(seen), timeout_request_body=1) as srv:
        with RawClient.to(srv) as client:
            client.send(request("POST", headers=[("Content-Length", "6")]))
            for byte in b"abcdef":  # 3 s in all, never 1 s without progress
                time.sleep(0.5)
                client.send(bytes([byte]))
            assert client.read_response(timeout=10).body == b"done"


def test_client_that_stops_reading_is_cut_after_timeout_write_and_send_raises() -> None:
    seen = Seen()
    chunk = b"x" * 65536

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(OK)
        try:
            for _ in range(100000):  # ~6.5 GB: far more than any socket buffer
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except OSError as exc:
            seen.send_errors.append(exc)

    with serve(app, timeout_write=1) as srv:
        sock = srv.connect(TIMEOUT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(request())
        deadline = time.monotonic() + 15
        while not seen.send_errors and time.monotonic() < deadline:
            time.sleep(0.05)
        sock.close()
        assert seen.send_errors, "send() kept waiting on a client that never reads"
        assert type(seen.send_errors[0]).__name__ == "ClientDisconnected"


# ---------------------------------------------------------------------- HTTP/2
def test_http2_declared_body_over_limit_gets_413() -> None:
    seen = Seen()
    with serve(reading_app(seen), limit_request_body=10) as srv:
        with H2Client(srv.port) as client:
            stream_id = client.request("/", "POST", ((b"content-length", b"11"),), b"x" * 11)
            client.wait(lambda: client.streams[stream_id].headers, what="the response")
            assert client.streams[stream_id].status == 413
            ok_id = client.request("/", "POST", ((b"content-length", b"3"),), b"abc")
            client.wait(lambda: client.streams[ok_id].headers, what="the second response")
            assert client.streams[ok_id].status == 200


def test_http2_undeclared_body_over_limit_gets_413_and_the_app_is_told() -> None:
    seen = Seen()
    with serve(reading_app(seen), limit_request_body=10) as srv:
        with H2Client(srv.port) as client:
            stream_id = client.request("/", "POST", body=b"x" * 8, end=False)
            wait_until(lambda: seen.messages, TIMEOUT, "the first part of the body reaching the app")
            client.send_body(stream_id, b"y" * 8)
            client.wait(lambda: client.streams[stream_id].headers, what="the response")
            assert client.streams[stream_id].status == 413
            wait_until(lambda: "http.disconnect" in seen.messages, TIMEOUT, "the app told http.disconnect")
            assert seen.messages == ["http.request", "http.disconnect"]


def test_http2_stream_held_at_zero_window_is_reset_after_timeout_write() -> None:
    seen = Seen()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(OK)
        try:
            for _ in range(100):
                await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
        except OSError as exc:
            seen.send_errors.append(exc)

    with serve(app, timeout_write=1) as srv:
        # INITIAL_WINDOW_SIZE 0: the server may send no DATA at all
        with H2Client(srv.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}) as client:
            stream_id = client.request("/")
            client.wait(lambda: client.streams[stream_id].reset is not None, 15, "the stream reset")
            assert client.streams[stream_id].reset == h2.errors.ErrorCodes.CANCEL
        wait_until(lambda: seen.send_errors, TIMEOUT, "send() raising")
        assert type(seen.send_errors[0]).__name__ == "ClientDisconnected"


# ---------------------------------------------------------------------- configuration
@pytest.mark.parametrize("option, value", [
    ("limit_request_line", 0), ("limit_request_fields", 0), ("limit_request_field_size", 0),
    ("limit_request_body", -1), ("timeout_request_header", -1), ("timeout_write", -1),
])
def test_invalid_limit_is_a_config_error(option: str, value: int) -> None:
    from tether.config import Config
    from tether.errors import ConfigError

    with pytest.raises(ConfigError, match=option.replace("_", "-")):
        Config(app=None, **{option: value})


# ---------------------------------------------------------------------- a cut response is not logged complete
BIG = 8 * 1024 * 1024


@pytest.mark.parametrize("protocol", ["http1", "http2"])
def test_a_response_cut_by_the_write_timeout_is_logged_499_not_200(protocol: str, caplog: pytest.LogCaptureFixture) -> None:
    """One 8 MiB send to a client that stops reading: --timeout-write cuts it, send() raises, and
    the access line says 499 "response cut", never "200 8388608" (all of it never reached the
    kernel). The line is written only once the whole response reached it, or not at all."""
    seen = Seen()
    caplog.set_level("INFO", logger="tether.access")

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(OK)
        try:
            await send({"type": "http.response.body", "body": b"x" * BIG})
        except OSError as exc:
            seen.send_errors.append(exc)

    with serve(app, timeout_write=1) as srv:
        sock = srv.connect(TIMEOUT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        if protocol == "http1":
            sock.sendall(request())
        else:  # HTTP/2 with windows wide open, so that only the socket holds the response back
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
            conn.increment_flow_control_window(2**31 - 1 - 65535)
            conn.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")],
                              end_stream=True)
            sock.sendall(conn.data_to_send())
        wait_until(lambda: seen.send_errors, 15, "send() raising on a client that never reads")
        sock.close()
        assert type(seen.send_errors[0]).__name__ == "ClientDisconnected"
    lines = [r.getMessage() for r in caplog.records if r.name == "tether.access"]
    assert len(lines) == 1, lines
    assert '" 499 ' in lines[0] and "response cut" in lines[0], lines
