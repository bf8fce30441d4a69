"""The WebSocket session alone: a WebSocketCycle on a bare event loop with a fake wire
(contract.WebSocketWire), no socket. Its states (HANDSHAKE -> OPEN / RESPONDING -> CLOSED),
how each way of ending is answered, and the two ways the peer leaves: a close frame (a normal
end: nothing abandoned, nothing cancelled) and vanishing (abandoned, counted, cancelled)."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import pytest

from tether.cycle import WebSocketCycle
from tether.errors import ClientDisconnected
from tether.logs import STATS
from tests.support.fakes import FakeWorker
from tests.support.logs import access_lines, warning_records

pytestmark = pytest.mark.timeout(10)


class FakeWebSocketWire:
    def __init__(self, worker: FakeWorker) -> None:
        self.settings = worker
        self.loop = worker.loop
        self.calls: list[tuple] = []
        self.write_paused = False

    async def drain(self) -> None:  # (never paused here)
        pass

    def message_consumed(self, queued: int) -> None:
        self.calls.append(("consumed", queued))

    def accept(self, subprotocol: str | None, headers: Any) -> None:
        self.calls.append(("accept", subprotocol))

    def send_text(self, text: str) -> int:
        self.calls.append(("text", text))
        return len(text.encode())

    def send_bytes(self, data: Any) -> int:
        self.calls.append(("bytes", bytes(data)))
        return len(data)

    def close(self, code: int, reason: str) -> None:
        self.calls.append(("close", code, reason))

    def deny(self, status: int) -> None:
        self.calls.append(("deny", status))

    def start_response(self, status: int, headers: Any) -> None:
        self.calls.append(("response", status))

    def send_response_body(self, body: bytes, more: bool) -> None:
        self.calls.append(("response_body", body, more))

    def abort(self) -> None:
        self.calls.append(("abort",))

    def app_finished(self, cycle: Any) -> None:
        self.calls.append(("app_finished",))


def session(app: Callable, cancel: bool = False) -> tuple[asyncio.AbstractEventLoop, WebSocketCycle, FakeWebSocketWire]:
    loop = asyncio.new_event_loop()
    worker = FakeWorker(loop, cancel=cancel)
    wire = FakeWebSocketWire(worker)
    scope = {"type": "websocket", "path": "/chat", "raw_path": b"/chat", "query_string": b"", "http_version": "1.1",
             "client": ("127.0.0.1", 5000), "extensions": {"websocket.http.response": {}}}
    cycle = WebSocketCycle(scope, wire)
    cycle.start(app)
    return loop, cycle, wire


def spin(loop: asyncio.AbstractEventLoop, seconds: float = 0.0) -> None:
    loop.run_until_complete(asyncio.sleep(seconds))
    for _ in range(5):
        loop.run_until_complete(asyncio.sleep(0))


def finish(loop: asyncio.AbstractEventLoop, cycle: WebSocketCycle) -> None:
    loop.run_until_complete(asyncio.wait([cycle.task], timeout=2))  # type: ignore[list-item]
    assert cycle.app_done


async def accept(receive: Any, send: Any) -> None:
    assert (await receive()) == {"type": "websocket.connect"}
    await send({"type": "websocket.accept", "subprotocol": "chat"})


def test_open_session_messages_both_ways_and_backpressure_accounting(tether_logs: Any) -> None:
    got: list[dict] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await accept(receive, send)
        for _ in range(2):
            got.append(await receive())
        await send({"type": "websocket.send", "text": "hé"})
        await send({"type": "websocket.send", "bytes": b"\x00\x01"})
        await send({"type": "websocket.close", "code": 4000, "reason": "bye"})

    loop, cycle, wire = session(app)
    spin(loop)
    assert cycle.session_open
    assert cycle.deliver({"type": "websocket.receive", "text": "a"}) == 1
    assert cycle.deliver({"type": "websocket.receive", "bytes": b"b"}) == 2  # (the protocol pauses past --ws-max-queue)
    finish(loop, cycle)
    assert [m.get("text", m.get("bytes")) for m in got] == ["a", b"b"]
    assert wire.calls == [("accept", "chat"), ("consumed", 1), ("consumed", 0), ("text", "hé"), ("bytes", b"\x00\x01"),
                          ("close", 4000, "bye"), ("app_finished",)]
    assert cycle.session_closed
    assert access_lines(tether_logs) == ["WebSocket /chat 101 5 websocket closed 4000"]
    loop.close()


@pytest.mark.parametrize("ending, answer, code", [
    ("close_before_accept", ("deny", 403), None),
    ("raise_before_accept", ("deny", 500), None),
    ("return_before_accept", ("deny", 500), None),
    ("raise_after_accept", ("close", 1011, ""), 1011),
    ("return_after_accept", ("close", 1000, ""), 1000),
])
def test_each_way_the_app_ends_is_answered(ending: str, answer: tuple, code: int | None) -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await receive()
        if ending == "close_before_accept":
            await send({"type": "websocket.close"})
            return
        if ending.endswith("before_accept"):
            if ending.startswith("raise"):
                raise ValueError("boom")
            return
        await send({"type": "websocket.accept"})
        if ending.startswith("raise"):
            raise ValueError("boom")

    loop, cycle, wire = session(app)
    finish(loop, cycle)
    assert answer in wire.calls
    if code is not None:
        assert cycle.close_code == code
    loop.close()


def test_http_denial_response_streams_then_closes() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"pe"})
        with pytest.raises(RuntimeError, match="after the WebSocket was closed"):
            await send({"type": "websocket.send", "text": "x"})

    loop, cycle, wire = session(app)
    finish(loop, cycle)
    assert wire.calls[:3] == [("response", 401), ("response_body", b"no", True), ("response_body", b"pe", False)]
    assert cycle.session_closed
    loop.close()


@pytest.mark.parametrize("message, error", [
    ({"type": "websocket.send", "text": "x", "bytes": b"x"}, "exactly one"),
    ({"type": "websocket.send", "text": b"x"}, "must be str"),
    ({"type": "websocket.close", "code": "1000"}, "must be an int"),
    ({"type": "websocket.accept", "subprotocol": 1}, "subprotocol"),
    ({"type": "websocket.http.response.start", "status": 101}, "other than 101"),
])
def test_malformed_messages_raise(message: dict, error: str) -> None:
    raised: list[Exception] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await receive()
        if message["type"] == "websocket.send":
            await send({"type": "websocket.accept"})
        try:
            await send(message)
        except RuntimeError as exc:
            raised.append(exc)
        await send({"type": "websocket.close"})

    loop, cycle, wire = session(app)
    finish(loop, cycle)
    assert raised and error in str(raised[0])
    loop.close()


@pytest.mark.parametrize("clean", [True, False], ids=["close_frame", "vanished"])
def test_how_the_peer_left_decides_abandoned_and_cancel(clean: bool, tether_logs: Any) -> None:
    seen: list[str] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await accept(receive, send)
        try:
            message = await receive()
            seen.append(f"{message['type']} {message['code']}")
            await asyncio.sleep(0.05 if clean else 3)  # cleanup (vanished: longer than the app's moment to end itself)
            seen.append("cleaned up")
            with pytest.raises(ClientDisconnected):
                await send({"type": "websocket.send", "text": "late"})
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    before = STATS.snapshot()
    loop, cycle, wire = session(app, cancel=True)
    spin(loop)
    cycle.peer_left(4001 if clean else 1006, "", clean=clean)
    assert cycle.scope["extensions"]["tether.disconnect"].is_set()
    finish(loop, cycle)
    after = STATS.snapshot()
    line = access_lines(tether_logs)[-1]
    if clean:
        assert seen == ["websocket.disconnect 4001", "cleaned up"]
        assert line == "WebSocket /chat 101 0 websocket closed 4001"
        assert after["disconnects"]["websocket"] == before["disconnects"]["websocket"]
    else:
        assert seen == ["websocket.disconnect 1006", "cancelled"]
        assert line.startswith("WebSocket /chat 101 0 websocket closed 1006 abandoned ") and line.endswith(" cancelled")
        assert after["disconnects"]["websocket"] == before["disconnects"]["websocket"] + 1
    assert not warning_records(tether_logs)
    loop.close()


def test_messages_received_before_the_peer_left_are_delivered_first() -> None:
    got: list[str] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await accept(receive, send)
        while True:
            message = await receive()
            got.append(message.get("text") or message["type"])
            if message["type"] == "websocket.disconnect":
                return

    loop, cycle, wire = session(app)
    spin(loop)
    cycle.deliver({"type": "websocket.receive", "text": "one"})
    cycle.deliver({"type": "websocket.receive", "text": "two"})
    cycle.peer_left(1000, "", clean=True)
    finish(loop, cycle)
    assert got == ["one", "two", "websocket.disconnect"]
    loop.close()
