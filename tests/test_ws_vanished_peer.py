"""A WebSocket peer that vanishes without a close frame, FIN or RST (cable pulled) is found by
Tether's pings: no pong within --ws-ping-timeout, and the app gets websocket.disconnect 1006.
The client runs in a network namespace (tests/support/netns.py; see tests/test_acceptance_deadpeer.py
for the HTTP version and why the link is set down rather than netem'd: this kernel has no netem)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.netns import netns_link, start_python, stop_client
from tests.support.probe import Probe
from tests.support.server import serve

pytestmark = pytest.mark.timeout(60)

CLIENT = """
import sys, time
from websockets.sync.client import connect
host, port = sys.argv[1], int(sys.argv[2])
ws = connect(f"ws://{host}:{port}/", open_timeout=5)
ws.send("hello")
print(ws.recv(5), flush=True)
time.sleep(40)  # the link goes down under us: we never close
"""


def session_app(rec: Probe) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"]})
        rec.mark("open")
        message = await receive()
        rec.mark("disconnect", message)

    return app


def test_pings_find_a_vanished_websocket_peer() -> None:
    rec = Probe()
    with netns_link() as link, serve(
        session_app(rec), host=link.host_addr, lifespan="off", timeout_graceful_shutdown=1,
        ws_ping_interval=1, ws_ping_timeout=1, tcp_keepalive=False,  # (only the pings can tell)
    ) as srv:
        client = start_python(link, CLIENT, srv.port)
        try:
            if not rec.seen_within("open", 15):
                client.kill()
                pytest.fail(f"the session from the namespace never opened: {client.communicate(timeout=5)[1]}")
            link.pull_cable()
            pulled = time.monotonic()
            rec.wait("disconnect", 10)
            seconds = rec.since("disconnect", pulled) / 1000
        finally:
            stop_client(client)
    assert rec.values["disconnect"]["code"] == 1006
    print(f"\n[ws deadpeer] ping interval 1 s, timeout 1 s: peer found gone after {seconds:.2f} s")
    assert seconds < 10
