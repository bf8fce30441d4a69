"""Acceptance: behind a real nginx, the app still learns at once that the client left.

nginx (generated minimal config, ``proxy_ignore_client_abort`` at its default ``off``) proxies to
an in-process Tether. A client leaves nginx mid-request; nginx closes its upstream connection,
and Tether must turn that close into ``http.disconnect`` (and the extension's event) within 1 s.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.support.components import run_nginx
from tests.support.disconnect import hang_up
from tests.support.http1 import send_request
from tests.support.probe import Probe
from tests.support.server import serve
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


def waiting_app(rec: Probe) -> Any:
    """Waits (at most 30 s) for the client to leave, via receive() and via the extension."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/ping":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"pong"})
            return
        rec.mark("started")
        signal = scope["extensions"]["tether.disconnect"]

        async def watch_extension() -> None:
            await signal.wait()
            rec.mark("extension")

        async def until_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            rec.mark("disconnect")

        watcher = asyncio.ensure_future(watch_extension())
        try:
            await asyncio.wait_for(until_disconnect(), 30)  # (asyncio.timeout() is 3.11+)
            await asyncio.wait_for(watcher, 1)
        finally:
            watcher.cancel()

    return app


def test_client_leaving_nginx_is_seen_through_the_upstream_close() -> None:
    rec = Probe()
    with serve(waiting_app(rec), lifespan="off") as srv, run_nginx(srv.port) as (port, tmp):
        # The proxy works at all (a normal request through nginx).
        with send_request(port, "/ping") as sock:
            sock.settimeout(5)
            data = b""
            while b"pong" not in data:
                chunk = sock.recv(4096)
                assert chunk, f"nginx closed without the response: {data!r}"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200")

        sock = send_request(port, "/wait")
        try:
            rec.wait("started", 5)
            time.sleep(0.3)
        finally:
            left = hang_up(sock)
        rec.wait("disconnect", 1.0)
        rec.wait("extension", 1.0)
        ms = rec.since("disconnect", left)
        print(f"\n[nginx] http.disconnect {ms:.1f} ms after the client left nginx")
        assert ms < 1000
        # nginx's side of the story: it logged the client's abort as 499.
        access = tmp / "access.log"
        wait_until(lambda: access.exists() and '"GET /wait HTTP/1.1" 499' in access.read_text(), 5,
                   lambda: "nginx logging 499: " + (access.read_text() if access.exists() else "no nginx access log"))
