"""Starlette and FastAPI, unmodified, over HTTP/2 (httpx with prior knowledge, and the raw h2
client of tests/support/h2.py for per-stream resets).

The apps are written as the frameworks' docs teach; nothing in them knows about Tether or
HTTP/2. The point of the last test: a reset stream's StreamingResponse generator is closed at
once (its ``finally`` runs), while another stream on the same connection streams on unharmed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.support.disconnect import WITHIN
from tests.support.h2 import H2Client
from tests.support.server import serve

pytest.importorskip("starlette")
pytestmark = pytest.mark.timeout(90)

TIMEOUT = httpx.Timeout(20.0)
FRAMEWORKS = ["starlette", "fastapi"]


def slow_lines(count: int, events: dict, key: str):
    """Lines with a pause between them; records when the generator was closed."""

    async def lines():
        events[key] = "started"
        try:
            for i in range(count):
                yield f"line {i}\n".encode()
                await asyncio.sleep(0.02)
            events[key] = "finished"
        finally:
            events[key + ":closed_at"] = time.monotonic()

    return lines()


def starlette_app(events: dict) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def item(request: Request) -> JSONResponse:
        return JSONResponse({"item_id": request.path_params["item_id"], "q": request.query_params.get("q"),
                             "http_version": request.scope["http_version"]})

    async def stream(request: Request) -> StreamingResponse:
        count = int(request.query_params.get("n", "100"))
        key = request.query_params.get("key", "stream")
        return StreamingResponse(slow_lines(count, events, key), media_type="text/plain")

    return Starlette(routes=[Route("/items/{item_id:int}", item), Route("/stream", stream)])


def fastapi_app(events: dict) -> Any:
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int, q: str | None = None) -> dict:
        return {"item_id": item_id, "q": q}

    @app.get("/stream")
    async def stream(n: int = 100, key: str = "stream") -> StreamingResponse:
        return StreamingResponse(slow_lines(n, events, key), media_type="text/plain")

    return app


def make_app(name: str, events: dict) -> Any:
    if name == "fastapi":
        pytest.importorskip("fastapi")
        return fastapi_app(events)
    return starlette_app(events)


def expected_lines(count: int) -> bytes:
    return b"".join(f"line {i}\n".encode() for i in range(count))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_json_route_over_h2(framework: str) -> None:
    with serve(make_app(framework, {}), lifespan="off") as srv:
        with httpx.Client(http1=False, http2=True, timeout=TIMEOUT) as client:
            response = client.get(srv.url + "/items/42?q=hello")
            assert response.status_code == 200
            assert response.http_version == "HTTP/2"
            assert response.headers["content-type"] == "application/json"
            body = response.json()
            assert body["item_id"] == 42 and body["q"] == "hello"
            if framework == "starlette":
                assert body["http_version"] == "2"
            missing = client.get(srv.url + "/nowhere")
            assert missing.status_code == 404 and missing.http_version == "HTTP/2"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_streaming_route_over_h2(framework: str) -> None:
    events: dict = {}
    with serve(make_app(framework, events), lifespan="off") as srv:
        with httpx.Client(http1=False, http2=True, timeout=TIMEOUT) as client:
            with client.stream("GET", srv.url + "/stream?n=40&key=s") as response:
                assert response.status_code == 200 and response.http_version == "HTTP/2"
                assert response.headers["content-type"].startswith("text/plain")
                chunks = list(response.iter_bytes())
    assert b"".join(chunks) == expected_lines(40)
    assert events["s"] == "finished"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_reset_stream_closes_its_generator_sibling_streams_on(framework: str) -> None:
    events: dict = {}
    with serve(make_app(framework, events), lifespan="off") as srv, H2Client(srv.port) as client:
        # The sibling streams 60 lines over ~1.2 s; the victim would stream for 100 s.
        sibling = client.request("/stream?n=60&key=sibling")
        victim = client.request("/stream?n=5000&key=victim")
        client.wait(lambda: client.streams[victim].data.count(b"\n") >= 5, what="the victim's first lines")
        assert not client.streams[sibling].ended, "the sibling was already done: nothing overlapped"
        left = client.reset(victim)
        client.wait(lambda: "victim:closed_at" in events, timeout=WITHIN + 4, what="the victim's generator finally")
        delay = events["victim:closed_at"] - left
        assert delay < WITHIN, f"the reset stream's generator was closed {delay * 1000:.0f} ms after RST_STREAM"
        assert events["victim"] == "started"  # closed, not run to the end
        result = client.response(sibling, timeout=20)
        assert result.status == 200
        assert bytes(result.data) == expected_lines(60)
        assert events["sibling"] == "finished"
