"""Starlette and FastAPI WebSocket endpoints served unmodified: echo, subprotocol, and
WebSocketDisconnect raised in the endpoint with the client's code (1006 when TCP vanishes)."""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket as FastAPIWebSocket
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.sync.client import connect

from tests.support.http1 import TIMEOUT
from tests.support.probe import Probe
from tests.support.server import serve
from tests.support.ws import RawWebSocket

pytestmark = pytest.mark.timeout(60)


def starlette_app(rec: Probe) -> Any:
    async def endpoint(websocket: WebSocket) -> None:
        offered = websocket.scope["subprotocols"]
        await websocket.accept(subprotocol=offered[0] if offered else None)
        try:
            while True:
                text = await websocket.receive_text()
                await websocket.send_text(f"starlette: {text}")
        except WebSocketDisconnect as exc:
            rec.mark("disconnect", exc.code)

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)])


def fastapi_app(rec: Probe) -> Any:
    app = FastAPI()

    @app.websocket("/ws")
    async def endpoint(websocket: FastAPIWebSocket) -> None:
        offered = websocket.scope["subprotocols"]
        await websocket.accept(subprotocol=offered[0] if offered else None)
        try:
            while True:
                data = await websocket.receive_json()
                await websocket.send_json({"fastapi": data})
        except WebSocketDisconnect as exc:
            rec.mark("disconnect", exc.code)

    return app


def test_starlette_echo_subprotocol_and_close_code() -> None:
    rec = Probe()
    with serve(starlette_app(rec)) as srv:
        with connect(f"ws://127.0.0.1:{srv.port}/ws", subprotocols=["chat"], open_timeout=TIMEOUT) as ws:
            assert ws.subprotocol == "chat"
            ws.send("hi")
            assert ws.recv(TIMEOUT) == "starlette: hi"
            ws.close(4000, "bye")
        rec.wait("disconnect", 5)
    assert rec.values["disconnect"] == 4000


def test_fastapi_json_echo_and_close_code() -> None:
    rec = Probe()
    with serve(fastapi_app(rec)) as srv:
        with connect(f"ws://127.0.0.1:{srv.port}/ws", open_timeout=TIMEOUT) as ws:
            ws.send('{"n": 1}')
            assert ws.recv(TIMEOUT) == '{"fastapi":{"n":1}}'
        rec.wait("disconnect", 5)
    assert rec.values["disconnect"] == 1000


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app], ids=["starlette", "fastapi"])
def test_framework_endpoint_learns_of_a_vanished_client_with_1006(make_app: Any) -> None:
    rec = Probe()
    with serve(make_app(rec)) as srv:
        raw = RawWebSocket(srv.port, "/ws")
        assert raw.status == 101
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()  # RST, no close frame
        rec.wait("disconnect", 5)
    assert rec.values["disconnect"] == 1006


def test_starlette_route_not_found_closes_before_accept() -> None:
    rec = Probe()
    with serve(starlette_app(rec)) as srv:
        raw = RawWebSocket(srv.port, "/nowhere")
        assert raw.status == 403  # Starlette closes unknown WebSocket routes before accepting
        raw.close()
