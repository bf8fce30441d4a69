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

from tests.conftest import serve
from tests.realworld import Recorder
from tests.test_http1_basics import TIMEOUT
from tests.wsraw import RawWebSocket

pytestmark = pytest.mark.timeout(60)


def starlette_app(rec: Recorder) -> Any:
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


def fastapi_app(rec: Recorder) -> Any:
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
    rec = Recorder()
    with serve(starlette_app(rec)) as srv:
        with connect(f"ws://127.0.0.1:{srv.port}/ws", subprotocols=["chat"], open_timeout=TIMEOUT) as ws:
            assert ws.subprotocol == "chat"
            ws.send("hi")
            assert ws.recv(TIMEOUT) == "starlette: hi"
            ws.close(4000, "bye")
        assert rec.wait("disconnect", 5)
    assert rec.values["disconnect"] == 4000


def test_fastapi_json_echo_and_close_code() -> None:
    rec = Recorder()
    with serve(fastapi_app(rec)) as srv:
        with connect(f"ws://127.0.0.1:{srv.port}/ws", open_timeout=TIMEOUT) as ws:
            ws.send('{"n": 1}')
            assert ws.recv(TIMEOUT) == '{"fastapi":{"n":1}}'
        assert rec.wait("disconnect", 5)
    assert rec.values["disconnect"] == 1000


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app], ids=["starlette", "fastapi"])
def test_framework_endpoint_learns_of_a_vanished_client_with_1006(make_app: Any) -> None:
    rec = Recorder()
    with serve(make_app(rec)) as srv:
        raw = RawWebSocket(srv.port, "/ws")
        assert raw.status == 101
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()  # RST, no close frame
        assert rec.wait("disconnect", 5), "the endpoint never got WebSocketDisconnect"
    assert rec.values["disconnect"] == 1006


def test_starlette_route_not_found_closes_before_accept() -> None:
    rec = Recorder()
    with serve(starlette_app(rec)) as srv:
        raw = RawWebSocket(srv.port, "/nowhere")
        assert raw.status == 403  # Starlette closes unknown WebSocket routes before accepting
        raw.close()
