"""Starlette and FastAPI apps unmodified over HTTP/2: JSON and streamed routes with httpx, and a
stream reset by the client while another stream on the same connection streams on."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from tests.conftest import serve
from tests.realworld import Recorder
from tests.test_h2_streams import H2Client

pytestmark = pytest.mark.timeout(60)


def starlette_app(rec: Recorder) -> Any:
    async def numbers(request: Any) -> StreamingResponse:
        name = request.path_params["name"]

        async def generate() -> Any:
            try:
                for i in range(20 if name == "short" else 10000):
                    yield f"{i}\n"
                    await asyncio.sleep(0.01)
            finally:
                rec.mark(f"{name} finally")
        return StreamingResponse(generate(), media_type="text/plain")

    async def data(request: Any) -> JSONResponse:
        return JSONResponse({"version": request.scope["http_version"], "echo": await request.json()})

    return Starlette(routes=[Route("/stream/{name}", numbers), Route("/json", data, methods=["POST"])])


def fastapi_app(rec: Recorder) -> Any:
    app = FastAPI()

    @app.post("/json")
    async def data(payload: dict) -> dict:
        return {"echo": payload}

    @app.get("/stream/{name}")
    async def numbers(name: str) -> StreamingResponse:
        async def generate() -> Any:
            try:
                for i in range(20 if name == "short" else 10000):
                    yield f"{i}\n"
                    await asyncio.sleep(0.01)
            finally:
                rec.mark(f"{name} finally")
        return StreamingResponse(generate(), media_type="text/plain")

    return app


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app], ids=["starlette", "fastapi"])
def test_json_and_streaming_routes_over_http2(make_app: Any) -> None:
    with serve(make_app(Recorder())) as srv:
        with httpx.Client(http1=False, http2=True, timeout=10) as client:
            response = client.post(srv.url + "/json", json={"a": [1, 2]})
            assert response.http_version == "HTTP/2" and response.json()["echo"] == {"a": [1, 2]}
            streamed = client.get(srv.url + "/stream/short")
            assert streamed.text == "".join(f"{i}\n" for i in range(20))


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app], ids=["starlette", "fastapi"])
def test_reset_stream_stops_its_generator_while_the_sibling_streams_on(make_app: Any) -> None:
    rec = Recorder()
    with serve(make_app(rec)) as srv:
        client = H2Client(srv.port)
        try:
            short = client.request("/stream/short")
            endless = client.request("/stream/endless")
            client.wait_for(lambda e: getattr(e, "stream_id", None) == endless and type(e).__name__ == "DataReceived")
            reset_at = time.monotonic()
            client.reset(endless)
            assert rec.wait("endless finally", 5), "the generator of the reset stream kept running"
            assert rec.since("endless finally", reset_at) < 1000
            assert client.ended(short) == "".join(f"{i}\n" for i in range(20)).encode()
        finally:
            client.close()
