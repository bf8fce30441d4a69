"""HTTP/1.1 error handling: malformed requests (400), oversized heads (431), application
failures (500, truncated responses), invalid ASGI message sequences, --limit-concurrency (503),
and Upgrade requests (WebSocket refused, h2c served as HTTP/1.1).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.support.asgi import echo_path, Gate, read_body, respond
from tests.support.http1 import TIMEOUT, RawClient, request
from tests.support.logs import error_records
from tests.support.server import serve, server_idle
from tests.support.waiting import wait_until

START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}


def assert_still_serving(srv: Any) -> None:
    response = httpx.get(srv.url + "/still", timeout=TIMEOUT)
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------------- malformed requests
MALFORMED = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "bad version": b"GET / HTTP/9.Z\r\nHost: x\r\n\r\n",
    "space in target": b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n",
    "header without colon": b"GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "invalid header name": b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
    "bad content-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "two content-lengths": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "bad chunk size": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "length and chunked": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"0\r\n\r\n"),
}


@pytest.mark.parametrize("raw", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_request_gets_400_and_close(raw: bytes) -> None:
    calls: list = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await read_body(receive)
        await respond(send)

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(raw)
            response = client.read_response()
            assert response.status == 400
            assert response.get("connection") == "close"
            assert client.closed_by_server()
        assert_still_serving(srv)
        server_idle(srv)


def test_error_responses_carry_the_default_headers() -> None:
    with serve(echo_path, lifespan="off", headers=["X-A: 1"]) as srv:
        for raw in (b"GARBAGE\r\n\r\n", request(headers=[("X-Big", "b" * 70000)])):
            with RawClient.to(srv) as client:
                client.send(raw)
                response = client.read_response()
                assert response.status in (400, 431)
                assert response.get("server") == "tether" and response.get("x-a") == "1"
                assert response.get("date", "").endswith(" GMT")  # RFC 9110 §6.6.1: 4xx carry Date
                assert response.get("content-length") == str(len(response.body))
    with serve(echo_path, lifespan="off", server_header=False, date_header=False) as srv:
        with RawClient.to(srv) as client:
            client.send(b"GARBAGE\r\n\r\n")
            response = client.read_response()
            assert response.status == 400 and "server" not in response and "date" not in response


def test_malformed_request_after_a_good_one_on_the_same_connection() -> None:
    with serve(echo_path, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request(path="/good"))
            assert client.read_response().body == b"GET /good 0"
            client.send(b"NOT HTTP AT ALL\r\n\r\n")
            assert client.read_response().status == 400
            assert client.closed_by_server()
        # Pipelined behind a request in flight: that one is answered, then the connection closes.
        with RawClient.to(srv) as client:
            client.send(request(path="/first") + b"\x00\x01garbage\r\n\r\n")
            assert client.read_response().body == b"GET /first 0"
            rest = client.read_to_eof()
            assert rest in (b"",) or rest.startswith(b"HTTP/1.1 400"), rest


def test_unparseable_body_of_a_request_in_flight_does_not_hang() -> None:
    """The app is waiting for the body when the chunked framing turns out invalid."""
    seen: list = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        await respond(send)

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request("POST", "/", [("Transfer-Encoding", "chunked")], b"3\r\nabc\r\n"))
            wait_until(lambda: seen, what="the first chunk reached the app")
            client.send(b"not-hex\r\n")
            response = client.read_response()
            assert response.status == 400
            assert client.closed_by_server()
        server_idle(srv)
        assert seen[-1] == {"type": "http.disconnect"}, seen


def test_header_block_over_64k_gets_431_and_close() -> None:
    # (many fields allowed, so that the whole-head bound is what is tested)
    with serve(echo_path, lifespan="off", limit_request_fields=1000) as srv:
        # Many headers.
        with RawClient.to(srv) as client:
            headers = [(f"X-Header-{i}", "v" * 100) for i in range(700)]  # ~75 KiB
            client.send(request(headers=headers))
            response = client.read_response()
            assert response.status == 431
            assert response.get("connection") == "close"
            assert client.closed_by_server()
        # One huge header value, sent in pieces.
        with RawClient.to(srv) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(20):  # 160 KiB, never finished: the server must not wait for the end
                try:
                    client.send(b"a" * 8192)
                except (BrokenPipeError, ConnectionResetError):
                    break
            assert client.read_response().status == 431
            assert client.closed_by_server()
        # A huge request target.
        with RawClient.to(srv) as client:
            try:
                client.send(b"GET /" + b"p" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert client.read_response().status == 414  # (--limit-request-line)
        # Just under the limit is fine.
        with RawClient.to(srv) as client:
            client.send(request(headers=[(f"X-Header-{i}", "v" * 100) for i in range(500)]))
            assert client.read_response().status == 200
        assert_still_serving(srv)


# ---------------------------------------------------------------------- application failures
def test_app_raising_before_start_gets_500_and_server_keeps_serving(tether_logs: Any) -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["path"] == "/boom":
            raise ValueError("boom before start")
        await respond(send, b"fine")

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request(path="/boom"))
            response = client.read_response()
            assert response.status == 500
            assert response.body == b"Internal Server Error"
            assert "date" in response and "server" in response
            if response.get("connection") != "close":  # kept alive: the next request works here too
                client.send(request(path="/ok"))
                assert client.read_response().body == b"fine"
        # The next request on a new connection works.
        response = httpx.get(srv.url + "/ok", timeout=TIMEOUT)
        assert response.status_code == 200 and response.text == "fine"
        response = httpx.get(srv.url + "/boom", timeout=TIMEOUT)
        assert response.status_code == 500
    errors = error_records(tether_logs)
    assert errors and all(r.exc_info and isinstance(r.exc_info[1], ValueError) for r in errors), errors


def test_app_raising_after_start_but_before_body_still_gets_500(tether_logs: Any) -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(START)
        raise ValueError("boom after start")

    with serve(app, lifespan="off") as srv:
        response = httpx.get(srv.url, timeout=TIMEOUT)
        assert response.status_code == 500
    assert any(r.exc_info and isinstance(r.exc_info[1], ValueError) for r in error_records(tether_logs))


@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_app_raising_mid_response_truncates_and_closes(framing: str, tether_logs: Any) -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["path"] == "/still":
            await respond(send)
            return
        headers = [(b"content-length", b"100")] if framing == "length" else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await asyncio.sleep(0.05)
        raise ValueError("boom mid-stream")

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request())
            head = client.read_until(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            rest = client.read_to_eof()  # the server closes: the body is visibly incomplete
            assert b"partial" in rest
            assert not rest.endswith(b"0\r\n\r\n")
            if framing == "length":
                assert rest == b"partial"
        with pytest.raises(httpx.HTTPError):  # a real client sees a broken response, not a complete one
            httpx.get(srv.url, timeout=TIMEOUT)
        assert_still_serving(srv)
    assert any(r.exc_info and isinstance(r.exc_info[1], ValueError) for r in error_records(tether_logs))


def test_app_returning_without_responding_gets_500(tether_logs: Any) -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["path"] == "/start-only":
            await send(START)
        elif scope["path"] == "/mid-stream":
            await send(START)
            await send({"type": "http.response.body", "body": b"half", "more_body": True})

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request(path="/nothing"))
            assert client.read_response().status == 500
        with RawClient.to(srv) as client:
            client.send(request(path="/start-only"))
            assert client.read_response().status == 500
        with RawClient.to(srv) as client:
            client.send(request(path="/mid-stream"))
            data = client.read_to_eof()
            assert data.startswith(b"HTTP/1.1 200") and not data.endswith(b"0\r\n\r\n")
    messages = [r.getMessage() for r in error_records(tether_logs)]
    assert sum("returned without" in m for m in messages) == 3, messages


# ---------------------------------------------------------------------- invalid message sequences
async def _body_before_start(send: Any) -> None:
    await send({"type": "http.response.body", "body": b"x"})


async def _start_twice(send: Any) -> None:
    await send(START)
    await send(START)


async def _body_is_str(send: Any) -> None:
    await send(START)
    await send({"type": "http.response.body", "body": "text"})


async def _status_not_int(send: Any) -> None:
    await send({"type": "http.response.start", "status": "200", "headers": []})


async def _header_value_str(send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-value", "text")]})
    await send({"type": "http.response.body", "body": b"x"})


async def _header_name_str(send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [("x-name", b"v")]})
    await send({"type": "http.response.body", "body": b"x"})


async def _header_with_newline(send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"v\r\nx-injected: 1")]})
    await send({"type": "http.response.body", "body": b"x"})


async def _unknown_message(send: Any) -> None:
    await send({"type": "http.response.bogus"})


async def _body_longer_than_length(send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"too long"})


INVALID_SEQUENCES = {
    "body before start": (_body_before_start, "Unexpected ASGI message 'http.response.body'"),
    "start twice": (_start_twice, "Unexpected ASGI message 'http.response.start'"),
    "body is str": (_body_is_str, "must be bytes"),
    "status not int": (_status_not_int, "'status'"),
    "header value str": (_header_value_str, "must be bytes"),
    "header name str": (_header_name_str, "must be bytes"),
    "header with newline": (_header_with_newline, "CR, LF or NUL"),
    "unknown message": (_unknown_message, "http.response.bogus"),
    "body longer than content-length": (_body_longer_than_length, "longer than Content-Length"),
}


@pytest.mark.parametrize("name", list(INVALID_SEQUENCES))
def test_invalid_message_sequence_gets_500_and_a_clear_error(name: str, tether_logs: Any) -> None:
    sequence, expected = INVALID_SEQUENCES[name]

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["path"] == "/still":
            await respond(send)
        else:
            await sequence(send)

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request())
            response = client.read_response(timeout=2)
            assert response.status == 500, response
            assert b"injected" not in response.raw
        assert_still_serving(srv)
        server_idle(srv)
    errors = [r for r in error_records(tether_logs) if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert errors, [r.getMessage() for r in tether_logs.records]
    assert expected in str(errors[0].exc_info[1]), str(errors[0].exc_info[1])


def test_message_after_the_final_body_is_an_error_but_the_response_stands(tether_logs: Any) -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await respond(send, b"complete")
        await send({"type": "http.response.body", "body": b"extra"})

    with serve(app, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            client.send(request())
            response = client.read_response()
            assert response.status == 200 and response.body == b"complete"
            # Nothing of the extra message reaches the wire; the connection still works.
            client.send(request())
            assert client.read_response().body == b"complete"
            assert client.nothing_within(0.2)
        server_idle(srv)
    errors = [r for r in error_records(tether_logs) if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert errors and "after the response was complete" in str(errors[0].exc_info[1])


# ---------------------------------------------------------------------- --limit-concurrency
def test_limit_concurrency_answers_503_while_the_limit_is_reached() -> None:
    gate = Gate()
    entered: list = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        entered.append(scope["path"])
        if scope["path"] == "/block":
            await gate.wait()
        await respond(send, scope["path"].encode())

    with serve(app, lifespan="off", limit_concurrency=1) as srv:
        blocked = RawClient.to(srv)
        try:
            blocked.send(request(path="/block"))
            wait_until(lambda: entered == ["/block"], what="the first app call started")
            response = httpx.get(srv.url + "/second", timeout=TIMEOUT)
            assert response.status_code == 503
            assert entered == ["/block"]  # the app was not called for the rejected request
            with RawClient.to(srv) as client:
                client.send(request(path="/third"))
                assert client.read_response().status == 503
        finally:
            gate.open()
        assert blocked.read_response().body == b"/block"
        blocked.close()
        server_idle(srv)
        assert httpx.get(srv.url + "/after", timeout=TIMEOUT).text == "/after"


# ---------------------------------------------------------------------- Upgrade
def test_websocket_upgrade_is_refused_with_400_when_ws_is_off() -> None:
    calls: list = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        calls.append(scope["type"])
        await respond(send)

    with serve(app, lifespan="off", ws="none") as srv:
        with RawClient.to(srv) as client:
            client.send(request(path="/ws", headers=[
                ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ]))
            response = client.read_response()
            assert response.status == 400
            assert client.closed_by_server()
        assert calls == []  # not passed to the app as an http request
        assert_still_serving(srv)


def test_h2c_upgrade_is_served_as_http11_with_http_1() -> None:
    with serve(echo_path, lifespan="off", http="1") as srv:
        with RawClient.to(srv) as client:
            client.send(request(path="/h2c", headers=[
                ("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ]))
            response = client.read_response()
            assert response.status == 200 and response.version == "HTTP/1.1"
            assert response.body == b"GET /h2c 0"
            assert "upgrade" not in response
        result = httpx.get(srv.url + "/h2c2", headers={"Upgrade": "h2c", "Connection": "Upgrade"}, timeout=TIMEOUT)
        assert result.status_code == 200 and result.text == "GET /h2c2 0"


def test_h2c_upgrade_without_http2_settings_is_served_as_http11() -> None:
    with serve(echo_path, lifespan="off") as srv:  # RFC 7540 §3.2.1: HTTP2-Settings is required
        result = httpx.get(srv.url + "/h2c3", headers={"Upgrade": "h2c", "Connection": "Upgrade"}, timeout=TIMEOUT)
        assert result.status_code == 200 and result.text == "GET /h2c3 0" and result.http_version == "HTTP/1.1"


def test_upgrade_header_without_connection_upgrade_is_a_plain_request() -> None:
    with serve(echo_path, lifespan="off") as srv:
        with RawClient.to(srv) as client:
            for _ in range(2):
                client.send(request(path="/plain", headers=[("Upgrade", "websocket")]))
                assert client.read_response().body == b"GET /plain 0"
