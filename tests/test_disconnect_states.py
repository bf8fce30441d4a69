"""Instant disconnect, by request state: the app learns within 1 s that the client left.

Every scenario runs against a real Tether over a raw socket, once with a FIN (``close()``) and
once with an RST (``SO_LINGER {1, 0}`` then ``close()``). The app reports what it saw, with a
``time.monotonic()`` timestamp, through a ``Probe``; the test compares it with the moment the
client hung up (tests/support/disconnect.py). The 1 s bound is generous on purpose (loopback
delivers FIN/RST in microseconds): a server that only notices when the app finishes, or on the
next read, fails it by seconds.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any, Callable

import pytest

import tether
from tests.support.asgi import START, read_body, signal_of
from tests.support.disconnect import assert_prompt, close_kinds, hang_up
from tests.support.http1 import recv_to_eof, recv_until, request
from tests.support.logs import error_records
from tests.support.probe import Probe
from tests.support.server import serve, server_idle
from tests.support.waiting import wait_until


# ---------------------------------------------------------------------- 1. states
@close_kinds
def test_receive_after_body_returns_disconnect(how: str) -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        probe.mark("body")
        message = await receive()
        probe.mark("disconnect", message)

    with serve(app, lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(request())
        probe.wait("body")
        left = hang_up(sock, how)
        assert_prompt(probe, "disconnect", left)
        assert probe.value("disconnect") == {"type": "http.disconnect"}
        server_idle(srv)


@close_kinds
def test_listener_task_told_while_app_is_busy_elsewhere(how: str) -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        async def listen() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    probe.mark("disconnect")
                    return

        listener = asyncio.get_running_loop().create_task(listen())
        probe.mark("busy")
        for _ in range(200):  # the main coroutine is elsewhere; bounded at 10 s
            if listener.done():
                break
            await asyncio.sleep(0.05)
        probe.mark("main_saw_listener_done", listener.done())
        listener.cancel()

    with serve(app, lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(request())
        probe.wait("busy")
        time.sleep(0.05)
        left = hang_up(sock, how)
        assert_prompt(probe, "disconnect", left)
        probe.wait("main_saw_listener_done")
        assert probe.value("main_saw_listener_done") is True
        server_idle(srv)


@close_kinds
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_disconnect_mid_body_upload(how: str, framing: str) -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                probe.mark("disconnect", received)
                return
            received += len(message["body"])
            probe.mark("chunk")
            if not message["more_body"]:
                probe.mark("complete")  # must not happen: the body was cut short
                await send(START)
                await send({"type": "http.response.body", "body": b"?"})
                return

    part = b"x" * 1000
    if framing == "chunked":
        head = request("POST", "/upload", (("Transfer-Encoding", "chunked"),))
        data = head + b"%x\r\n%b\r\n" % (len(part), part)
    else:
        data = request("POST", "/upload", (("Content-Length", "100000"),)) + part
    with serve(app, lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(data)
        probe.wait("chunk")
        left = hang_up(sock, how)
        assert_prompt(probe, "disconnect", left)
        assert "complete" not in probe
        assert probe.value("disconnect") == len(part)
        server_idle(srv)


def _paused_connections(srv: Any) -> int:
    return srv.call(lambda: sum(1 for conn in srv.state.connections if conn.read_paused))


@close_kinds
def test_disconnect_while_reading_is_paused_for_backpressure(how: str) -> None:
    """The app does not consume the body: Tether stops reading, yet still sees the client go."""
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        probe.mark("started")
        try:
            await asyncio.wait_for(signal_of(scope).wait(), 10)
        except asyncio.TimeoutError:
            probe.mark("timeout")
            raise
        probe.mark("disconnect")
        message = await asyncio.wait_for(receive(), 1)  # buffered body first, that is fine
        while message["type"] == "http.request" and message["more_body"]:
            message = await asyncio.wait_for(receive(), 1)
        probe.mark("receive_after", message["type"])

    with serve(app, lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(request("POST", "/upload", (("Content-Length", str(10 * 1024 * 1024)),)))
        probe.wait("started")
        if how == "fin":
            # A FIN queued behind bytes the server has not read reaches it only if the bytes
            # fit in the kernel buffers: ~100 KB does, and is more than Tether buffers (64 KiB).
            sock.sendall(b"x" * 100_000)
        else:
            # An RST overtakes anything: fill every buffer until the client's send blocks.
            sock.setblocking(False)
            sent, deadline = 0, time.monotonic() + 5
            while sent < 64 * 1024 * 1024 and time.monotonic() < deadline:
                try:
                    sent += sock.send(b"x" * 65536)
                except BlockingIOError:
                    time.sleep(0.05)
                    try:
                        sent += sock.send(b"x" * 65536)
                    except BlockingIOError:
                        break
            assert sent > 200_000
        wait_until(lambda: _paused_connections(srv) == 1, 5, "reading paused for backpressure")
        time.sleep(0.1)
        assert "disconnect" not in probe
        left = hang_up(sock, how)
        assert_prompt(probe, "disconnect", left)
        probe.wait("receive_after")
        assert probe.value("receive_after") == "http.disconnect"
        server_idle(srv)


@close_kinds
def test_disconnect_during_streamed_response(how: str) -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(START)
        try:
            for i in range(200):  # bounded: 10 s
                await send({"type": "http.response.body", "body": b"tick %d\n" % i, "more_body": True})
                probe.mark("streaming")
                await asyncio.sleep(0.05)
        except tether.ClientDisconnected as exc:
            probe.mark("disconnect", exc)
            raise
        probe.mark("never_told")
        await send({"type": "http.response.body", "body": b""})

    with serve(app, lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(request())
        recv_until(sock, b"tick 1\n")
        left = hang_up(sock, how)
        assert_prompt(probe, "disconnect", left)
        assert isinstance(probe.value("disconnect"), OSError)
        server_idle(srv)


@close_kinds
def test_blocked_send_raises_when_client_leaves(how: str) -> None:
    """The client stops reading: send() blocks on backpressure, then raises when it leaves."""
    probe = Probe()
    in_send: dict[str, float] = {}

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(START)
        chunk = b"x" * 65536
        try:
            for i in range(2048):  # at most 128 MiB
                in_send["since"] = time.monotonic()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                in_send.pop("since", None)
                probe.mark("sent")
        except OSError as exc:
            probe.mark("disconnect", exc)
            raise
        probe.mark("never_blocked")

    with serve(app, lifespan="off") as srv:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", srv.port))
        sock.sendall(request())
        probe.wait("sent")

        def blocked() -> bool:
            since = in_send.get("since")
            return since is not None and time.monotonic() - since > 0.3

        wait_until(blocked, 10, "send() blocked on a client that does not read")
        assert "never_blocked" not in probe and "disconnect" not in probe
        if how == "fin":
            # close() with unread bytes sends an RST; empty the (tiny) buffer so a FIN goes out.
            sock.setblocking(False)
            for _ in range(100):
                try:
                    if not sock.recv(65536):
                        break
                except BlockingIOError:
                    break
        left = hang_up(sock, how)
        assert_prompt(probe, "disconnect", left)
        assert isinstance(probe.value("disconnect"), tether.ClientDisconnected)
        server_idle(srv)


# ---------------------------------------------------------------------- 2. half-close
def _answer_after_300ms(probe: Probe) -> Callable:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        probe.mark("started")
        await asyncio.sleep(0.3)
        gone = signal_of(scope)
        probe.mark("told_before_answer", gone.is_set())
        try:
            await send(START)
            await send({"type": "http.response.body", "body": b"the answer"})
        except tether.ClientDisconnected:
            probe.mark("send_raised")
            raise
        probe.mark("answered", gone.is_set())

    return app


def test_half_close_still_gets_its_response() -> None:
    probe = Probe()
    with serve(_answer_after_300ms(probe), lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(request())
        sock.shutdown(socket.SHUT_WR)
        data = recv_to_eof(sock)
        sock.close()
        assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), data
        assert data.endswith(b"\r\n\r\nthe answer"), data
        assert probe.value("told_before_answer") is False
        assert probe.value("answered") is False
        assert "send_raised" not in probe
        server_idle(srv)


@close_kinds
def test_full_close_after_complete_request_is_a_disconnect(how: str) -> None:
    """Same request, but the client closes: the probe draws an RST and the app is told."""
    probe = Probe()
    with serve(_answer_after_300ms(probe), lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(request())
        probe.wait("started")
        hang_up(sock, how)
        probe.wait("told_before_answer")
        assert probe.value("told_before_answer") is True
        probe.wait("send_raised")
        assert "answered" not in probe
        server_idle(srv)


@close_kinds
def test_full_close_is_seen_before_the_app_answers(how: str) -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        probe.mark("started")
        try:
            await asyncio.wait_for(signal_of(scope).wait(), 5)
        except asyncio.TimeoutError:
            return
        probe.mark("disconnect")

    with serve(app, lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(request())
        probe.wait("started")
        left = hang_up(sock, how)
        assert_prompt(probe, "disconnect", left)
        server_idle(srv)


# ---------------------------------------------------------------------- 3. after the response
def test_receive_after_complete_response_returns_disconnect_at_once() -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        await send(START)
        await send({"type": "http.response.body", "body": b"done"})
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            message = await asyncio.wait_for(receive(), 2)
        except asyncio.TimeoutError:
            probe.mark("receive", "hung")
            return
        probe.mark("receive", (message, loop.time() - started))

    with serve(app, lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(request())  # keep-alive: the connection stays open
        recv_until(sock, b"done")
        probe.wait("receive")
        message, took = probe.value("receive")
        assert message == {"type": "http.disconnect"}
        assert took < 0.5
        sock.close()
        server_idle(srv)


@pytest.mark.parametrize(
    "headers, body",
    [((("Content-Length", "100000"),), b"x" * 10), ((("Content-Length", "100"), ("Expect", "100-continue")), b"")],
    ids=["partial-body", "expect-100-continue"],
)
def test_receive_after_complete_response_with_unread_body_does_not_hang(headers: tuple, body: bytes) -> None:
    """The app answers without reading the (incomplete) body: receive() must not wait for it."""
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(START)
        await send({"type": "http.response.body", "body": b"early answer"})
        messages = []
        for _ in range(3):
            try:
                message = await asyncio.wait_for(receive(), 2)
            except asyncio.TimeoutError:
                messages.append("hung")
                break
            messages.append(message["type"])
            if message["type"] == "http.disconnect":
                break
        probe.mark("messages", messages)

    with serve(app, lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(request("POST", "/", headers) + body)
        recv_until(sock, b"early answer")
        probe.wait("messages")
        messages = probe.value("messages")
        assert messages[-1] == "http.disconnect", messages
        assert set(messages[:-1]) <= {"http.request"}, messages  # buffered body first is fine
        sock.close()
        server_idle(srv)


@close_kinds
@pytest.mark.parametrize("started", [False, True], ids=["before-start", "after-start"])
def test_send_after_disconnect_always_raises(how: str, started: bool) -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        if started:
            await send(START)
        probe.mark("ready")
        await asyncio.wait_for(signal_of(scope).wait(), 5)
        outcomes = []
        for message in (START, {"type": "http.response.body", "body": b"x", "more_body": True},
                        {"type": "http.response.body", "body": b""}):
            if started and message is START:
                message = {"type": "http.response.body", "body": b"y", "more_body": True}
            try:
                await asyncio.wait_for(send(message), 1)
            except asyncio.TimeoutError:
                outcomes.append("hung")
            except Exception as exc:  # noqa: BLE001 - recorded for the assertion
                outcomes.append(exc)
            else:
                outcomes.append("returned")
        probe.mark("outcomes", outcomes)

    with serve(app, lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(request())
        probe.wait("ready")
        hang_up(sock, how)
        probe.wait("outcomes")
        outcomes = probe.value("outcomes")
        assert len(outcomes) == 3
        for outcome in outcomes:
            assert isinstance(outcome, tether.ClientDisconnected), outcomes
            assert isinstance(outcome, OSError)
        server_idle(srv)


@close_kinds
def test_client_disconnected_propagating_from_the_app_is_not_logged_as_error(how: str, tether_logs: Any) -> None:
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(START)
        for i in range(200):
            await send({"type": "http.response.body", "body": b"tick %d\n" % i, "more_body": True})
            probe.mark("streaming")
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b""})

    _leave_mid_stream(app, how)
    assert error_records(tether_logs) == []
    # The path under test was taken: the app ended with ClientDisconnected after the client left.
    assert any("ClientDisconnected" in r.getMessage() for r in tether_logs.records if r.name == "tether.error"), [
        r.getMessage() for r in tether_logs.records
    ]


def _leave_mid_stream(app: Any, how: str) -> None:
    """Serve ``app``, leave (``how``) once its first tick arrived, wait until the server is idle."""
    with serve(app, lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(request())
        recv_until(sock, b"tick 0\n")
        hang_up(sock, how)
        server_idle(srv)


@close_kinds
def test_client_disconnected_inside_an_exception_group_is_not_logged_as_error(how: str, tether_logs: Any) -> None:
    """The same through an anyio task group (Starlette, FastAPI): on 3.10 anyio raises the
    exceptiongroup backport's group, not a builtin one."""
    import anyio

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(START)

        async def stream() -> None:
            for i in range(200):
                await send({"type": "http.response.body", "body": b"tick %d\n" % i, "more_body": True})
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as group:
            group.start_soon(stream)

    _leave_mid_stream(app, how)
    assert error_records(tether_logs) == []
    assert any("ended with ExceptionGroup after the client left" in r.getMessage() for r in tether_logs.records
               if r.name == "tether.error"), [r.getMessage() for r in tether_logs.records]
