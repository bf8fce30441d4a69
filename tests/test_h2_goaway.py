"""A GOAWAY ends an HTTP/2 connection gracefully: the streams already opened complete.

RFC 9113 section 6.8. h2 closes its connection state on a received GOAWAY (python-hyper/h2#1181);
Tether corrects that in one place (``protocols/http2._Connection``). The clients here are real:
Node's built-in ``node:http2`` (whose ``session.close()`` sends GOAWAY NO_ERROR and then waits
for its open streams, and which answers a server's GOAWAY the same way) and a raw-frame client.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest

from tests.support.h2 import NO_ERROR, PROTOCOL_ERROR, H2Client, goaway, node_client, node_result
from tests.support.probe import Probe
from tests.support.server import cli_server, serve
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


def slow_app(probe: Probe, delay: float = 0.3) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        probe.mark("started")
        await asyncio.sleep(delay)
        if scope["extensions"]["tether.disconnect"].is_set():
            probe.mark("told_gone")
        body = b"x" * 100_000  # more than one window's worth: the stream needs WINDOW_UPDATEs after GOAWAY
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})
        probe.mark("answered")
    return app


@pytest.mark.parametrize("count", [1, 3])
def test_node_session_close_lets_its_open_streams_finish(count: int, caplog: pytest.LogCaptureFixture) -> None:
    probe = Probe()
    caplog.set_level("INFO", logger="tether.access")
    with serve(slow_app(probe), lifespan="off") as srv:
        result = node_result(node_client(srv.url + "/slow", "close", count))
        assert result["goaway"] is None, "the server should not answer a client's graceful GOAWAY with its own"
        assert [r["status"] for r in result["results"]] == [200] * count, result
        assert all(r["bytes"] == 100_000 and r["error"] is None for r in result["results"]), result
        assert "told_gone" not in probe
        wait_until(lambda: not srv.state.connections, what="the connection closing after its last stream")
    lines = [r.getMessage() for r in caplog.records if r.name == "tether.access"]
    assert len(lines) == count and all('" 200 100000' in line for line in lines), lines


def test_node_request_in_flight_survives_graceful_shutdown() -> None:
    """SIGINT: Tether sends GOAWAY; Node answers with its own GOAWAY and waits; the request in
    flight completes with 200 before the server exits."""
    with cli_server("edge_apps:info", "--lifespan", "off", "--timeout-graceful-shutdown", "10") as (proc, port):
        client = node_client(f"http://127.0.0.1:{port}/sleep?s=1", "wait")
        assert client.stderr is not None
        assert client.stderr.readline().strip() == "sent"
        time.sleep(0.3)  # the request is running in the app
        proc.send_signal(signal.SIGINT)
        result = node_result(client)
        assert [r["status"] for r in result["results"]] == [200], result
        assert result["results"][0]["error"] is None
        assert result["goaway"] == 0  # NO_ERROR
        assert proc.wait(15) == 0


def test_raw_client_goaway_no_error_then_response_and_close() -> None:
    probe = Probe()
    with serve(slow_app(probe), lifespan="off") as srv, H2Client(srv.port) as client:
        sid = client.request("/slow")
        probe.wait("started")
        client.sock.sendall(goaway(code=NO_ERROR))  # (beside h2's back: the client's state stays open)
        stream = client.response(sid)
        assert dict(stream.headers)[b":status"] == b"200" and len(stream.data) == 100_000
        client.wait(lambda: client.eof, what="the server closing after the last stream")
        assert "told_gone" not in probe


def test_raw_client_goaway_with_error_disconnects_its_streams() -> None:
    """An error code says the client gave up on the connection: its streams are abandoned."""
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        probe.mark("started")
        await asyncio.wait_for(scope["extensions"]["tether.disconnect"].wait(), 10)
        probe.mark("told_gone")

    with serve(app, lifespan="off") as srv, H2Client(srv.port) as client:
        client.request("/wait")
        probe.wait("started")
        left = time.monotonic()
        client.sock.sendall(goaway(code=PROTOCOL_ERROR))
        probe.wait("told_gone", timeout=5)
        assert probe.times["told_gone"] - left < 1.0
        client.wait(lambda: client.eof, what="the server closing the connection")
