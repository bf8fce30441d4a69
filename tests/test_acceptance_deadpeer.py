"""Acceptance: a peer that vanishes without FIN or RST is found by TCP keep-alive.

The client runs in a network namespace of its own, joined to the host by a veth pair; Tether
listens on the host end. Once the request is in, the namespace's end of the link is set down:
the client's socket stays open and nothing reaches Tether any more, as with a pulled cable
(this kernel has no netem; see /work/shared/README.md). With keep-alive probes every second
(idle 1 s, interval 1 s, 2 probes) the kernel declares the peer dead after ~3 s and the app must
get ``http.disconnect`` (bound 15 s). With ``tcp_keepalive=False`` nothing can notice: no
disconnect within 5 s. Skipped unless root and ``ip netns`` works; the namespace is always removed.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

from tests.support.netns import netns_link, start_python, stop_client
from tests.support.probe import Probe
from tests.support.server import serve

pytestmark = pytest.mark.timeout(60)

CLIENT = """
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
sock = socket.create_connection((host, port), timeout=5)
sock.sendall(b"GET /wait HTTP/1.1\\r\\nHost: %s:%d\\r\\n\\r\\n" % (host.encode(), port))
print("sent", flush=True)
time.sleep(30)  # keep the socket open: the peer vanishes, it does not close
"""


def waiting_app(rec: Probe) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        rec.mark("started")
        async def until_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        try:
            await asyncio.wait_for(until_disconnect(), 25)  # (asyncio.timeout() is 3.11+)
            rec.mark("disconnect")
        except asyncio.TimeoutError:  # (not the builtin TimeoutError before 3.11)
            rec.mark("timed_out")

    return app


def keepalive_options(srv: Any) -> list[tuple[int, int, int, int]]:
    """(SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT) of every accepted socket."""

    def read() -> list:
        out = []
        for conn in srv.state.connections:
            sock = conn.sock
            out.append((
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            ))
        return out

    return srv.call(read)


def run_dead_peer(keepalive: bool, wait: float) -> tuple[Probe, float, list]:
    rec = Probe()
    with netns_link() as link, serve(
        waiting_app(rec), host=link.host_addr, lifespan="off", timeout_keep_alive=60, timeout_graceful_shutdown=1,
        tcp_keepalive=keepalive, tcp_keepalive_idle=1, tcp_keepalive_interval=1, tcp_keepalive_count=2,
    ) as srv:
        client = start_python(link, CLIENT, srv.port)
        try:
            if not rec.seen_within("started", 10):
                client.kill()
                pytest.fail(f"the request from the namespace never arrived: {client.communicate(timeout=5)[1]}")
            options = keepalive_options(srv)
            link.pull_cable()
            pulled = time.monotonic()
            rec.seen_within("disconnect", wait)  # (may rightly not come: see below)
            return rec, pulled, options
        finally:
            stop_client(client)


def test_keepalive_finds_a_vanished_peer() -> None:
    rec, pulled, options = run_dead_peer(keepalive=True, wait=15)
    assert options == [(1, 1, 1, 2)], f"accepted socket keep-alive options: {options}"
    assert "disconnect" in rec, "http.disconnect not seen within 15 s of the peer vanishing"
    seconds = rec.since("disconnect", pulled) / 1000
    print(f"\n[deadpeer] keep-alive (idle 1, interval 1, count 2) found the vanished peer after {seconds:.2f} s")
    assert seconds < 15


def test_without_keepalive_a_vanished_peer_goes_unnoticed() -> None:
    rec, pulled, options = run_dead_peer(keepalive=False, wait=5)
    assert [opt[0] for opt in options] == [0], f"keep-alive should be off: {options}"
    assert "disconnect" not in rec, "a disconnect was reported without keep-alive: something else saw the peer?"
