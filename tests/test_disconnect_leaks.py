"""Disconnects leave nothing behind: no app task, connection, file descriptor or loop task.

Keep-alive + pipelining: requests queued behind a blocked one, then the client leaves; and a
thousand connections that each send a request and reset, against one server.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

import pytest

import tether
from tests.support.asgi import START, read_body, signal_of
from tests.support.disconnect import assert_prompt, close_kinds, hang_up
from tests.support.http1 import recv_to_eof, recv_until, request
from tests.support.probe import Probe
from tests.support.server import serve
from tests.support.waiting import wait_until


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _nothing_left(srv: Any) -> bool:
    return srv.call(lambda: not srv.state.tasks and not srv.state.connections)


def _pipelining_app(probe: Probe) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        path = scope["path"]
        probe.mark("started " + path)
        probe.mark("started")
        await read_body(receive)
        if path == "/block":
            try:
                await asyncio.wait_for(signal_of(scope).wait(), 10)
            except asyncio.TimeoutError:
                probe.mark("timeout")
                return
            probe.mark("told " + path)
            probe.mark("told")
            return
        await send(START)
        await send({"type": "http.response.body", "body": b"answer " + path.encode()})
        probe.mark("answered " + path)

    return app


@close_kinds
@pytest.mark.parametrize("policy", ["notify", "cancel"])
@pytest.mark.parametrize("order", [("/block", "/b", "/c"), ("/a", "/block", "/c")], ids=["first-blocks", "second-blocks"])
def test_pipelined_requests_behind_a_blocked_one(how: str, policy: str, order: tuple) -> None:
    """Three pipelined requests, one of which blocks; the client leaves. The started request is
    told (or cancelled), the queued ones never start, and nothing is left behind."""
    probe = Probe()
    app = _pipelining_app(probe)
    if policy == "cancel":
        inner = app

        async def app(scope: dict, receive: Any, send: Any) -> None:  # type: ignore[no-redef]
            try:
                await inner(scope, receive, send)
            except asyncio.CancelledError:
                probe.mark("told")
                raise

    with serve(app, lifespan="off", on_disconnect=policy) as srv:
        sock = srv.connect()
        sock.sendall(b"".join(request(path=path) for path in order))
        if order[0] != "/block":
            recv_until(sock, b"answer " + order[0].encode())
        probe.wait("started /block")
        time.sleep(0.05)
        queued = srv.call(lambda: [len(conn.pipeline) for conn in srv.state.connections])
        assert queued == [2 - order.index("/block")], queued  # the rest wait, reading paused
        left = hang_up(sock, how)
        assert_prompt(probe, "told", left)
        wait_until(lambda: _nothing_left(srv), 5, "no task and no connection left")
        assert "timeout" not in probe
        started = probe.count("started")
        assert started == order.index("/block") + 1, probe.counts  # the queued requests never ran
        assert probe.count("told") == 1


@pytest.mark.parametrize("slow", [0, 1, 2], ids=["first-slow", "second-slow", "third-slow"])
def test_pipelined_requests_then_half_close_all_answered(slow: int) -> None:
    """A client that pipelines and half-closes is not a disconnect: every request is answered."""
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await read_body(receive)
        probe.mark("started")
        if scope["path"] == "/slow":
            await asyncio.sleep(0.2)
        await send(START)
        await send({"type": "http.response.body", "body": b"answer " + scope["path"].encode() + b"\n"})
        probe.mark("told" if signal_of(scope).is_set() else "answered")

    paths = ["/a", "/b", "/c"]
    paths[slow] = "/slow"
    with serve(app, lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(b"".join(request(path=path) for path in paths))
        sock.shutdown(socket.SHUT_WR)
        data = recv_to_eof(sock)
        sock.close()
        answers = [line for line in data.split(b"\r\n\r\n") if line.startswith(b"answer")]
        assert [a.split(b"\n")[0] for a in answers] == [b"answer " + p.encode() for p in paths], data
        assert data.count(b"HTTP/1.1 200 OK\r\n") == 3
        assert probe.count("answered") == 3 and "told" not in probe
        wait_until(lambda: _nothing_left(srv), 5, "no task and no connection left")


@pytest.mark.parametrize("policy", ["notify", "cancel"])
def test_thousand_reset_requests_leave_nothing_behind(policy: str) -> None:
    """notify: the app waits on the disconnect signal; cancel: it sleeps, only the cancel ends it."""
    probe = Probe()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        probe.mark("started")
        try:
            if policy == "cancel":
                await asyncio.sleep(15)
                probe.mark("timeout")
                return
            await asyncio.wait_for(signal_of(scope).wait(), 15)
        except asyncio.TimeoutError:
            probe.mark("timeout")
            return
        except asyncio.CancelledError:
            probe.mark("told")
            raise
        probe.mark("told")

    raw = request(path="/work")
    with serve(app, lifespan="off", on_disconnect=policy) as srv:
        stats_before = tether.stats()
        # Warm up once, so that anything created lazily on first use is in the baseline.
        sock = srv.connect()
        sock.sendall(raw)
        probe.wait("started")
        hang_up(sock, "rst")
        probe.wait("told")
        wait_until(lambda: _nothing_left(srv), 5, "warm-up request cleaned up")
        fds_before = _fd_count()
        tasks_before = srv.call(lambda: len(asyncio.all_tasks(srv.loop)))

        batches, size = 10, 100
        t0 = time.monotonic()
        for batch in range(batches):
            wait_for_all = batch % 2 == 0
            if wait_for_all:  # let late arrivals of the previous batch settle first
                wait_until(lambda: _nothing_left(srv), 10, "the previous batch cleaned up")
            base = probe.count("started")
            socks = [srv.connect() for _ in range(size)]
            for sock in socks:
                sock.sendall(raw)
            if wait_for_all:
                # Reset once every request of the batch has reached the app...
                probe.wait_count("started", base + size, 10)
            # ...or, every other batch, at once (some resets then race the accept or the parse).
            for sock in socks:
                hang_up(sock, "rst")
        wait_until(lambda: _nothing_left(srv), 10, "no task and no connection left after 1,000 resets")
        elapsed = time.monotonic() - t0
        started, told = probe.count("started"), probe.count("told")
        assert told == started, f"{started - told} started requests were never told the client left"
        assert started >= 1 + (batches // 2) * size
        assert "timeout" not in probe
        stats = tether.stats()
        assert stats["abandoned_requests"] - stats_before["abandoned_requests"] == started
        assert stats["disconnects_total"] - stats_before["disconnects_total"] == started
        cancelled = stats["cancelled_requests"] - stats_before["cancelled_requests"]
        assert cancelled == (started if policy == "cancel" else 0)
        assert srv.call(lambda: len(asyncio.all_tasks(srv.loop))) == tasks_before
        fds_after = _fd_count()
        assert fds_after <= fds_before + 5, f"fd count {fds_before} -> {fds_after}"
        print(f"\n1,000 reset requests ({policy}): {started - 1} reached the app, all told; {elapsed:.2f} s")

