"""One large HTTP/2 response must not stall anything else (issue: a single 32 MiB
``http.response.body`` blocked every other client of the worker for seconds).

The download is made by Node's ``node:http2`` client; the other traffic by httpx over HTTP/2
(another connection) and by a raw h2 client (another stream on the same connection)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tests.support.h2 import H2Client, node_client, node_result
from tests.support.server import serve

pytestmark = pytest.mark.timeout(120)

BIG = 32 * 1024 * 1024
BIG_BODY = bytes(range(256)) * (BIG // 256)


async def app(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = BIG_BODY if scope["path"] == "/big" else b"hello"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
    await send({"type": "http.response.body", "body": body})


def test_one_large_body_does_not_stall_other_connections() -> None:
    latencies: list[float] = []
    stop = threading.Event()

    def hello_loop(url: str) -> None:
        with httpx.Client(http1=False, http2=True, timeout=30) as client:
            client.get(url + "/hello")  # (connection set up before the download starts)
            ready.set()
            while not stop.is_set():
                started = time.monotonic()
                assert client.get(url + "/hello").content == b"hello"
                latencies.append(time.monotonic() - started)

    ready = threading.Event()
    with serve(app, lifespan="off", access_log=False) as srv:
        worker = threading.Thread(target=hello_loop, args=(srv.url,), daemon=True)
        worker.start()
        assert ready.wait(10)
        # One client with Node's default 64 KiB windows, one that never holds the server back.
        downloads = [node_client(srv.url + "/big", "wait"), node_client(srv.url + "/big", "wait", window=2**31 - 1)]
        results = [node_result(proc) for proc in downloads]
        stop.set()
        worker.join(30)
    for result in results:
        assert [(r["status"], r["bytes"], r["error"]) for r in result["results"]] == [(200, BIG, None)], result
    assert len(latencies) >= 5, latencies
    assert max(latencies) < 1.0, f"a hello on another connection waited {max(latencies):.2f} s behind the large body"


def test_a_small_response_on_the_same_connection_is_not_queued_behind_a_large_one() -> None:
    with serve(app, lifespan="off", access_log=False) as srv, \
            H2Client(srv.port, settings={4: 2**31 - 1}, timeout=30) as client:  # INITIAL_WINDOW_SIZE: no window limits
        client.conn.increment_flow_control_window(2**31 - 1 - 65535)
        client.flush()
        big = client.request("/big")
        client.wait(lambda: len(client.streams[big].data) > 1 << 20, timeout=20, what="the download under way")
        small = client.request("/hello")
        client.wait(lambda: client.streams[small].ended, timeout=20, what="the small response")
        assert bytes(client.streams[small].data) == b"hello"
        assert not client.streams[big].ended, "the small response waited for the whole large one"
        client.response(big, timeout=60)
        assert len(client.streams[big].data) == BIG
