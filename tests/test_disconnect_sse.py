"""Server-sent events: an idle event stream learns that the client left, with default settings.

The generator yields one event, then sleeps 30 s: nothing is being sent, so only the server's
disconnect signal can end it. Its ``finally`` must run within 1 s of the client leaving (the
measured time is printed; run with -s to see it), and nothing may be logged at ERROR level.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse as FastAPIStreamingResponse
from fastapi.sse import EventSourceResponse as FastAPIEventSourceResponse
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from tests.support.disconnect import assert_prompt, close_kinds, hang_up
from tests.support.http1 import recv_until, request
from tests.support.logs import error_records
from tests.support.probe import Probe
from tests.support.server import serve, server_idle


def _events(probe: Probe, first: Any) -> Callable[[], AsyncIterator[Any]]:
    async def events() -> AsyncIterator[Any]:
        try:
            yield first
            probe.mark("yielded")
            await asyncio.sleep(30)
            probe.mark("slept_through")
            yield first
        finally:
            probe.mark("finally")

    return events


def starlette_streaming(probe: Probe) -> Any:
    events = _events(probe, "data: one\n\n")

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/events", stream)])


def fastapi_streaming(probe: Probe) -> Any:
    events = _events(probe, "data: one\n\n")
    api = FastAPI()

    @api.get("/events")
    async def stream() -> FastAPIStreamingResponse:
        return FastAPIStreamingResponse(events(), media_type="text/event-stream")

    return api


def fastapi_native_sse(probe: Probe) -> Any:
    api = FastAPI()

    @api.get("/events", response_class=FastAPIEventSourceResponse)
    async def stream() -> AsyncIterator[dict]:
        try:
            yield {"event": "one"}
            probe.mark("yielded")
            await asyncio.sleep(30)
            probe.mark("slept_through")
            yield {"event": "two"}
        finally:
            probe.mark("finally")

    return api


def sse_starlette_app(probe: Probe) -> Any:
    events = _events(probe, {"data": "one"})

    async def stream(request: Request) -> EventSourceResponse:
        return EventSourceResponse(events())

    return Starlette(routes=[Route("/events", stream)])


def plain_asgi(probe: Probe) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        try:
            await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
            probe.mark("yielded")
            await asyncio.sleep(30)
            probe.mark("slept_through")
            await send({"type": "http.response.body", "body": b""})
        finally:
            probe.mark("finally")

    return app


FRAMEWORKS = {
    "starlette-StreamingResponse": (starlette_streaming, b"data: one"),
    "fastapi-StreamingResponse": (fastapi_streaming, b"data: one"),
    "fastapi-EventSourceResponse": (fastapi_native_sse, b'data: {"event":"one"}'),
    "sse-starlette-EventSourceResponse": (sse_starlette_app, b"data: one"),
}


def _run_sse(app: Any, first: bytes, how: str, tether_logs: Any, label: str, **options: Any) -> None:
    probe = app_probe = Probe()
    with serve(app(app_probe), lifespan="off", **options) as srv:
        sock = srv.connect()
        sock.sendall(request(path="/events", headers=(("Accept", "text/event-stream"),)))
        head = recv_until(sock, first)
        assert head.startswith(b"HTTP/1.1 200 "), head
        probe.wait("yielded")
        left = hang_up(sock, how)
        delay = assert_prompt(probe, "finally", left)
        print(f"\n{label} [{how}]: generator finally ran {delay * 1000:.1f} ms after the client left")
        assert "slept_through" not in probe
        server_idle(srv)
    assert error_records(tether_logs) == [], [r.getMessage() for r in error_records(tether_logs)]


@close_kinds
@pytest.mark.parametrize("framework", list(FRAMEWORKS))
def test_idle_event_stream_learns_the_client_left(framework: str, how: str, tether_logs: Any) -> None:
    factory, first = FRAMEWORKS[framework]
    _run_sse(factory, first, how, tether_logs, framework)


@close_kinds
@pytest.mark.parametrize("framework", list(FRAMEWORKS))
def test_idle_event_stream_under_cancel_policy(framework: str, how: str, tether_logs: Any) -> None:
    """The policy cancel goes through the frameworks' task groups cleanly (no ERROR line)."""
    factory, first = FRAMEWORKS[framework]
    _run_sse(factory, first, how, tether_logs, framework + ", --on-disconnect cancel", on_disconnect="cancel")


@close_kinds
def test_plain_asgi_stream_is_cancelled_under_cancel_policy(how: str, tether_logs: Any) -> None:
    _run_sse(plain_asgi, b"data: one", how, tether_logs, "plain ASGI, --on-disconnect cancel", on_disconnect="cancel")
