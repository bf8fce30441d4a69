"""WebSocket sessions with a real client (the websockets library) and raw sockets where the
client must misbehave: the scope, the handshake answers, messages, the close handshake both
ways, the peer leaving (close frame, FIN, RST) while the app waits or is busy, send() after
that, the cancel policy and the extension, backpressure both ways, pings, shutdown."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
import threading
import time
from typing import Any

import pytest
import tether
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.support.http1 import TIMEOUT, RawClient
from tests.support.probe import Probe
from tests.support.server import serve
from tests.support.waiting import wait_until
from tests.support.ws import BINARY, frame, RawWebSocket

pytestmark = pytest.mark.timeout(60)


def ws_url(srv: Any, path: str = "/") -> str:
    return f"ws://127.0.0.1:{srv.port}{path}"


async def accept_and_echo(scope: dict, receive: Any, send: Any, record: Probe) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            record.mark("disconnect", message)
            return
        await send({"type": "websocket.send", **{k: v for k, v in message.items() if k in ("text", "bytes")}})


def echo_app(record: Probe) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            record.mark("scope", scope)
            await accept_and_echo(scope, receive, send, record)
    return app


# ---------------------------------------------------------------------- handshake and scope
def test_scope_of_a_websocket_session() -> None:
    record = Probe()
    with serve(echo_app(record), root_path="/api") as srv:
        with connect(ws_url(srv, "/chat%20room?x=1&y=%20"), subprotocols=["v2.chat", "v1.chat"],
                     additional_headers={"X-Custom": "yes"}, open_timeout=TIMEOUT) as ws:
            ws.send("hi")
            assert ws.recv(TIMEOUT) == "hi"
        scope = record.wait_value("scope")
    assert scope["type"] == "websocket"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/api/chat room" and scope["raw_path"] == b"/chat%20room"
    assert scope["root_path"] == "/api"
    assert scope["query_string"] == b"x=1&y=%20"
    assert scope["subprotocols"] == ["v2.chat", "v1.chat"]
    headers = dict(scope["headers"])
    assert headers[b"x-custom"] == b"yes" and headers[b"upgrade"].lower() == b"websocket"
    assert all(name == name.lower() for name, _ in scope["headers"])
    assert scope["client"][0] == "127.0.0.1" and scope["server"] == ("127.0.0.1", srv.port)
    assert "websocket.http.response" in scope["extensions"] and "tether.disconnect" in scope["extensions"]
    assert isinstance(scope["state"], dict)


def test_accept_with_subprotocol_and_headers() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "v2.chat",
                    "headers": [(b"x-session", b"abc"), (b"set-cookie", b"a=1")]})
        await send({"type": "websocket.close", "code": 1000})

    with serve(app) as srv:
        with connect(ws_url(srv), subprotocols=["v1.chat", "v2.chat"], open_timeout=TIMEOUT) as ws:
            assert ws.subprotocol == "v2.chat"
            assert ws.response.headers["x-session"] == "abc"
            assert ws.response.headers["set-cookie"] == "a=1"
            assert ws.response.headers["server"] == "tether"
            with pytest.raises(ConnectionClosed):
                ws.recv(TIMEOUT)
            assert ws.close_code == 1000


def test_close_before_accept_answers_403() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close"})

    with serve(app) as srv:
        with pytest.raises(InvalidStatus) as info:
            connect(ws_url(srv), open_timeout=TIMEOUT)
        assert info.value.response.status_code == 403


def test_app_failing_before_accept_answers_500_and_the_server_keeps_serving() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            if scope["path"] == "/boom":
                raise ValueError("boom")
            await accept_and_echo(scope, receive, send, Probe())

    with serve(app) as srv:
        with pytest.raises(InvalidStatus) as info:
            connect(ws_url(srv, "/boom"), open_timeout=TIMEOUT)
        assert info.value.response.status_code == 500
        with connect(ws_url(srv), open_timeout=TIMEOUT) as ws:
            ws.send("still")
            assert ws.recv(TIMEOUT) == "still"


def test_denial_response_with_a_streamed_body() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "websocket.http.response.body", "body": b"log in ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"first"})

    with serve(app) as srv:
        client = RawClient.to(srv)
        with client:
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            response = client.read_response()
            assert response.status == 401
            assert response.get("www-authenticate") == "Bearer"
            assert response.body == b"log in first"
            assert client.read_to_eof() == b""


@pytest.mark.parametrize("version, status", [("8", 426), ("", 400)])
def test_bad_handshake_is_refused_and_the_app_not_called(version: str, status: int) -> None:
    record = Probe()
    with serve(echo_app(record)) as srv:
        with RawClient.to(srv) as client:
            version_line = f"Sec-WebSocket-Version: {version}\r\n".encode() if version else b""
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + version_line + b"\r\n")
            response = client.read_response()
            assert response.status == status
            if status == 426:
                assert response.get("sec-websocket-version") == "13"
        assert "scope" not in record


@pytest.mark.parametrize("request_line", [b"POST / HTTP/1.1", b"GET / HTTP/1.0"])
def test_upgrade_that_is_not_get_over_http11_is_refused(request_line: bytes) -> None:
    """RFC 6455 §4.1: a GET over HTTP/1.1 (websockets 17 checks it; Tether does for 16, on 3.10)."""
    record = Probe()
    with serve(echo_app(record)) as srv:
        with RawClient.to(srv) as client:
            client.send(request_line + b"\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                        b"Content-Length: 0\r\n\r\n")
            response = client.read_response()
            assert response.status == 400
            assert b"unsupported HTTP" in response.body
        assert "scope" not in record


def test_bad_websocket_key_is_400() -> None:
    record = Probe()
    with serve(echo_app(record)) as srv:
        with RawClient.to(srv) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n")
            assert client.read_response().status == 400
        assert "scope" not in record


# ---------------------------------------------------------------------- messages
def test_text_binary_large_and_fragmented_messages() -> None:
    record = Probe()
    with serve(echo_app(record)) as srv:
        with connect(ws_url(srv), open_timeout=TIMEOUT, max_size=None) as ws:
            ws.send("text é")
            assert ws.recv(TIMEOUT) == "text é"
            ws.send(b"\x00\xff binary")
            assert ws.recv(TIMEOUT) == b"\x00\xff binary"
            big = bytes(range(256)) * 4096  # 1 MiB
            ws.send(big)
            assert ws.recv(TIMEOUT) == big
            ws.send(["frag", "mented"])  # one message in two frames
            assert ws.recv(TIMEOUT) == "fragmented"


def test_per_message_deflate_is_negotiated_and_can_be_turned_off() -> None:
    for enabled in (True, False):
        with serve(echo_app(Probe()), ws_per_message_deflate=enabled) as srv:
            with connect(ws_url(srv), open_timeout=TIMEOUT) as ws:
                names = [ext.name for ext in ws.protocol.extensions]
                assert names == (["permessage-deflate"] if enabled else [])
                ws.send("compress me " * 100)
                assert ws.recv(TIMEOUT) == "compress me " * 100


def test_message_over_ws_max_size_closes_with_1009() -> None:
    record = Probe()
    with serve(echo_app(record), ws_max_size=1000) as srv:
        with connect(ws_url(srv), open_timeout=TIMEOUT) as ws:
            ws.send(b"x" * 1001)
            with pytest.raises(ConnectionClosed):
                ws.recv(TIMEOUT)
            assert ws.protocol.close_code == 1009
        assert record.wait_value("disconnect")["code"] == 1009


# ---------------------------------------------------------------------- the peer leaving
def busy_app(record: Probe) -> Any:
    """Accepts, starts a listener task for the disconnect, and keeps its main coroutine busy."""
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})

        async def listen() -> None:
            message = await receive()
            record.mark("disconnect", message)
            record.mark("seen_at", time.monotonic())

        listener = asyncio.create_task(listen())
        record.mark("ready")
        for _ in range(600):  # busy elsewhere, up to 30 s
            if listener.done():
                break
            await asyncio.sleep(0.05)
        try:
            for _ in range(3):
                await send({"type": "websocket.send", "text": "after"})
        except OSError as exc:
            record.mark("send_error", exc)
    return app


def test_close_frame_reaches_a_busy_app_at_once_with_code_and_reason() -> None:
    record = Probe()
    with serve(busy_app(record)) as srv:
        ws = connect(ws_url(srv), open_timeout=TIMEOUT).__enter__()
        record.wait("ready")
        started = time.monotonic()
        ws.close(4001, "done here")
        message = record.wait_value("disconnect")
        assert record.wait_value("seen_at") - started < 1.0
    assert (message["code"], message["reason"]) == (4001, "done here")


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_tcp_gone_without_close_frame_is_1006_and_send_raises(how: str) -> None:
    record = Probe()
    with serve(busy_app(record)) as srv:
        raw = RawWebSocket(srv.port)
        assert raw.status == 101
        record.wait("ready")
        started = time.monotonic()
        if how == "rst":
            raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
        assert record.wait_value("disconnect")["code"] == 1006
        assert record.wait_value("seen_at") - started < 1.0
        error = record.wait_value("send_error")
    assert type(error).__name__ == "ClientDisconnected" and isinstance(error, OSError)


def test_send_after_the_peer_left_raises_every_time() -> None:
    record = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        assert (await receive())["type"] == "websocket.disconnect"
        errors = []
        for _ in range(5):
            try:
                await send({"type": "websocket.send", "text": "x"})
            except OSError as exc:
                errors.append(type(exc).__name__)
        record.mark("errors", errors)

    with serve(app) as srv:
        with connect(ws_url(srv), open_timeout=TIMEOUT):
            pass
        assert record.wait_value("errors") == ["ClientDisconnected"] * 5


@pytest.mark.parametrize("ending, code", [("close", 4002), ("return", 1000), ("raise", 1011)])
def test_how_the_app_ends_the_session_is_the_close_code(ending: str, code: int) -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "hello"})
        if ending == "close":
            await send({"type": "websocket.close", "code": 4002, "reason": "app says bye"})
        elif ending == "raise":
            raise RuntimeError("app failure after accept")

    with serve(app) as srv:
        with connect(ws_url(srv), open_timeout=TIMEOUT) as ws:
            assert ws.recv(TIMEOUT) == "hello"
            with pytest.raises(ConnectionClosed):
                ws.recv(TIMEOUT)
            assert ws.protocol.close_code == code
            if ending == "close":
                assert ws.protocol.close_reason == "app says bye"


def test_cancel_policy_cancels_the_session_task_and_the_extension_sees_it() -> None:
    record = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        signal = scope["extensions"]["tether.disconnect"]
        await receive()
        await send({"type": "websocket.accept"})

        async def watcher() -> None:
            await signal.wait()  # without consuming receive()
            record.mark("extension_saw_it", signal.is_set())

        asyncio.create_task(watcher())
        record.mark("ready")
        try:
            await asyncio.sleep(30)  # never reads: only the policy can stop it
        except asyncio.CancelledError:
            record.mark("cancelled", time.monotonic())
            raise

    with serve(app, on_disconnect="cancel", disconnect_grace=0.2) as srv:
        raw = RawWebSocket(srv.port)
        record.wait("ready")
        started = time.monotonic()
        raw.close()  # the peer vanishes: no close frame
        assert record.wait_value("extension_saw_it") is True
        cancelled_at = record.wait_value("cancelled")
    assert 0.15 <= cancelled_at - started < 2.0  # after the grace period, not before


@pytest.mark.parametrize("ending, cleanup", [("close_frame", 0.5), ("vanished", 0.1), ("vanished", 5.0)],
                         ids=["close_frame", "vanished-short-cleanup", "vanished-long-cleanup"])
def test_a_close_frame_is_a_normal_end_not_abandoned_work(ending: str, cleanup: float,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """The peer's close frame ends a session normally: the app's cleanup after
    websocket.disconnect is not cancelled and not logged or counted as abandoned. A peer that
    vanishes without one is a disconnect: counted and logged with the abandoned time; an app
    that was listening (in receive()) gets a moment to end by itself (cycle/work.py REACT),
    then what is left is cancelled."""
    record = Probe()
    caplog.set_level("INFO", logger="tether.access")

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        record.mark("ready")
        try:
            record.mark("disconnect", await receive())
            await asyncio.sleep(cleanup)  # cleanup after the session (e.g. a database write)
            record.mark("cleaned_up")
        except asyncio.CancelledError:
            record.mark("cancelled", time.monotonic())
            raise

    before = tether.stats()["disconnects"]["websocket"]
    with serve(app, on_disconnect="cancel") as srv:
        if ending == "close_frame":
            ws = connect(ws_url(srv), open_timeout=TIMEOUT).__enter__()
            record.wait("ready")
            ws.close(4001, "done here")
            assert record.wait_value("disconnect")["code"] == 4001
            record.wait("cleaned_up")
        else:
            raw = RawWebSocket(srv.port)
            record.wait("ready")
            left = time.monotonic()
            raw.close()
            assert record.wait_value("disconnect")["code"] == 1006
            if cleanup > 1:
                assert 0.2 <= record.wait("cancelled") - left < 2.0  # (after the app's moment to end itself)
            else:
                record.wait("cleaned_up")
        wait_until(lambda: [r for r in caplog.records if r.name == "tether.access"], what="the access line")
    lines = [r.getMessage() for r in caplog.records if r.name == "tether.access"]
    assert len(lines) == 1, lines
    counted = tether.stats()["disconnects"]["websocket"] - before
    if ending == "close_frame":
        assert "websocket closed 4001" in lines[0] and "abandoned" not in lines[0], lines
        assert counted == 0 and "cancelled" not in record
    else:
        assert "websocket closed 1006 abandoned" in lines[0], lines
        assert lines[0].endswith("cancelled") == (cleanup > 1), lines
        assert counted == 1 and ("cleaned_up" in record) == (cleanup < 1)


def test_ws_none_refuses_upgrades_with_400() -> None:
    record = Probe()
    with serve(echo_app(record), ws="none") as srv:
        with pytest.raises(InvalidStatus) as info:
            connect(ws_url(srv), open_timeout=TIMEOUT)
        assert info.value.response.status_code == 400
        assert "scope" not in record


# ---------------------------------------------------------------------- backpressure
def test_reading_pauses_while_the_app_does_not_consume_and_nothing_is_lost() -> None:
    record = Probe()
    release = threading.Event()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while not release.is_set():
            await asyncio.sleep(0.02)
        digest, count = hashlib.sha256(), 0
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect" or message.get("bytes") == b"end":
                break
            digest.update(message["bytes"])
            count += 1
        record.mark("result", (count, digest.hexdigest()))

    with serve(app, ws_max_queue=4, ws_per_message_deflate=False) as srv:
        raw = RawWebSocket(srv.port)
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        raw.sock.setblocking(False)
        chunk = bytes(range(256)) * 256  # 64 KiB
        expected = hashlib.sha256()
        messages, data, offset = 0, b"", 0
        for _ in range(400):  # 25 MiB would go out if nothing pushed back
            data, offset = frame(BINARY, chunk), 0
            offset = _send_until_stalled(raw.sock, data, offset, stall=0.5)
            messages += 1
            expected.update(chunk)
            if offset < len(data):
                break  # the server stopped reading: this frame is stuck half-sent
        assert offset < len(data) and messages < 200, f"the server read {messages} messages nobody consumed"
        release.set()
        raw.sock.setblocking(True)
        raw.sock.settimeout(TIMEOUT)
        raw.sock.sendall(data[offset:] + frame(BINARY, b"end"))
        count, digest = record.wait_value("result", timeout=20)
        raw.close()
    assert (count, digest) == (messages, expected.hexdigest())


def _send_until_stalled(sock: socket.socket, data: bytes, offset: int, stall: float) -> int:
    """Send from ``offset`` until done, or until no byte goes out for ``stall`` seconds."""
    import select

    while offset < len(data):
        _, writable, _ = select.select([], [sock], [], stall)
        if not writable:
            return offset
        try:
            offset += sock.send(data[offset:])
        except BlockingIOError:
            continue
    return offset


def test_send_waits_while_the_client_does_not_read_then_all_arrives_intact() -> None:
    record = Probe()
    total = 200

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        for i in range(total):
            await send({"type": "websocket.send", "bytes": i.to_bytes(4, "big") * 16384})  # 64 KiB
            record.mark("sent", i + 1)
        record.mark("all_sent")

    with serve(app, ws_per_message_deflate=False) as srv:
        raw = RawWebSocket(srv.port)
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        time.sleep(1.0)  # the client reads nothing for a second
        sent_while_stalled = record.count("sent")
        assert sent_while_stalled < total // 2, "send() did not wait for a client that was not reading"
        for i in range(total):
            message = raw.read_message()
            assert message.payload == i.to_bytes(4, "big") * 16384
        record.wait("all_sent")
        raw.close()


# ---------------------------------------------------------------------- pings and shutdown
def test_server_pings_keep_a_healthy_session_open() -> None:
    record = Probe()
    with serve(echo_app(record), ws_ping_interval=0.3, ws_ping_timeout=0.5) as srv:
        with connect(ws_url(srv), open_timeout=TIMEOUT) as ws:  # the client answers pings itself
            time.sleep(2.0)  # several ping intervals
            ws.send("alive")
            assert ws.recv(TIMEOUT) == "alive"
        assert record.wait_value("disconnect")["code"] == 1000


def test_peer_that_never_answers_pings_is_dropped_with_1006() -> None:
    record = Probe()
    with serve(echo_app(record), ws_ping_interval=0.3, ws_ping_timeout=0.5) as srv:
        raw = RawWebSocket(srv.port)  # reads nothing, answers nothing
        started = time.monotonic()
        assert record.wait_value("disconnect", timeout=10)["code"] == 1006
        assert time.monotonic() - started < 5
        raw.close()


def test_graceful_shutdown_closes_open_sessions_with_1012() -> None:
    record = Probe()
    with serve(echo_app(record), timeout_graceful_shutdown=5) as srv:
        ws = connect(ws_url(srv), open_timeout=TIMEOUT).__enter__()
        ws.send("before")
        assert ws.recv(TIMEOUT) == "before"
        srv.loop.call_soon_threadsafe(srv.server.request_exit)
        with pytest.raises(ConnectionClosed):
            ws.recv(TIMEOUT)
        assert ws.protocol.close_code == 1012
        assert record.wait_value("disconnect")["code"] == 1012
