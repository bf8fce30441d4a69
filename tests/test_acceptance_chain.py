"""Acceptance: a disconnect travels down a chain of services.

service1 -> service2 -> service3, three real Tether servers (each its own thread and event loop,
all ``--on-disconnect cancel``), each calling the next with ``httpx.AsyncClient``. service3
sleeps for 30 s. The client talks to service1 over a raw socket and leaves after 300 ms. The
cancel at service1 aborts its httpx call, which closes the connection to service2, which is a
client leaving service2, and so on: service3's handler must get ``CancelledError`` within 1 s
(target 200 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
import pytest

from tests.support.disconnect import hang_up
from tests.support.http1 import send_request
from tests.support.probe import Probe
from tests.support.server import serve

pytestmark = pytest.mark.timeout(60)


def caller(name: str, rec: Probe, next_url: str) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        rec.mark(f"{name}.started")
        try:
            async with httpx.AsyncClient(timeout=60) as client:
                response = await client.get(next_url)
        except asyncio.CancelledError:
            rec.mark(f"{name}.cancelled")
            raise
        await send({"type": "http.response.start", "status": response.status_code, "headers": []})
        await send({"type": "http.response.body", "body": response.content})

    return app


def sleeper(rec: Probe) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        rec.mark("service3.started")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            rec.mark("service3.cancelled")
            raise
        rec.mark("service3.finished")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"slept"})

    return app


def test_disconnect_cancels_the_whole_chain() -> None:
    rec = Probe()
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(serve(sleeper(rec), on_disconnect="cancel", lifespan="off"))
        s2 = stack.enter_context(serve(caller("service2", rec, s3.url + "/sleep"), on_disconnect="cancel", lifespan="off"))
        s1 = stack.enter_context(serve(caller("service1", rec, s2.url + "/call"), on_disconnect="cancel", lifespan="off"))
        sock = send_request(s1.port, "/call")
        try:
            rec.wait("service3.started", 5)
            time.sleep(0.3)
        finally:
            left = hang_up(sock)
        # Each service marks its cancel after httpcore has already closed its connection to the
        # next one, so the next service may mark first: the marks prove the chain (service3's only
        # client is service2, service2's is service1), not an order between neighbours.
        for name in ("service3", "service2", "service1"):
            rec.wait(f"{name}.cancelled", 1.0)
        ms = {name: rec.since(f"{name}.cancelled", left) for name in ("service1", "service2", "service3")}
        print(f"\n[chain] cancelled after the client left: service1 {ms['service1']:.1f} ms, "
              f"service2 {ms['service2']:.1f} ms, service3 {ms['service3']:.1f} ms (target 200 ms)")
        assert "service3.finished" not in rec
        assert max(ms.values()) < 1000
