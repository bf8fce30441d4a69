"""Acceptance: a client that leaves stops a real PostgreSQL query and gives the pool its connection back.

A throwaway PostgreSQL 15 cluster (the ``postgres`` fixture, tests/support/components.py), an ASGI app with an asyncpg
pool of exactly two connections, and an endpoint running ``SELECT pg_sleep(30)``. The client
sends its request over a raw socket and closes it after 200 ms. The acceptance criterion is
seen from PostgreSQL's side: no ``pg_sleep`` is active in ``pg_stat_activity`` any more (asked
over a separate connection), and the pool is whole again (two idle connections, acquire works).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest

from tests.support.asgi import lifespan_ok
from tests.support.components import PgCluster
from tests.support.disconnect import hang_up
from tests.support.http1 import send_request
from tests.support.probe import Probe
from tests.support.server import serve
from tests.support.waiting import wait_until

asyncpg = pytest.importorskip("asyncpg")

pytestmark = pytest.mark.timeout(60)

SLEEP_QUERY = "SELECT pg_sleep(30) /* tether-acceptance */"
ACTIVE_SLEEPS = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE state = 'active' AND query LIKE '%pg_sleep(30) /* tether-acceptance */%' AND pid <> pg_backend_pid()"
)


def make_app(pg: PgCluster, rec: Probe, policy: str) -> tuple[Any, dict]:
    """The app: a pool created at startup; ``/sleep`` holds a connection for a 30 s query."""
    holder: dict = {}

    async def startup() -> None:
        holder["pool"] = await asyncpg.create_pool(pg.dsn, min_size=2, max_size=2, timeout=10)

    async def shutdown() -> None:
        await asyncio.wait_for(holder["pool"].close(), 10)

    lifespan = lifespan_ok(startup, shutdown)

    async def cancel_policy_endpoint(send: Any) -> None:
        pool = holder["pool"]
        try:
            async with pool.acquire() as conn:
                rec.mark("started")
                await conn.fetchval(SLEEP_QUERY)
        except asyncio.CancelledError:
            rec.mark("cancelled")
            raise
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"slept"})

    async def notify_policy_endpoint(scope: dict, send: Any) -> None:
        # The app races its query against the disconnect signal and stops the query itself.
        signal = scope["extensions"]["tether.disconnect"]
        pool = holder["pool"]
        async with pool.acquire() as conn:
            rec.mark("started")
            query = asyncio.ensure_future(conn.fetchval(SLEEP_QUERY))
            gone = asyncio.ensure_future(signal.wait())
            done, _ = await asyncio.wait({query, gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone in done:
                rec.mark("disconnect_seen")
                query.cancel()
                try:
                    await query
                except asyncio.CancelledError:
                    rec.mark("query_cancelled")
                return  # nobody to answer
            gone.cancel()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"slept"})

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(scope, receive, send)
        if policy == "cancel":
            await cancel_policy_endpoint(send)
        else:
            await notify_policy_endpoint(scope, send)

    return app, holder


class PgMonitor:
    """A separate connection, on a loop of its own, that counts our active pg_sleep queries."""

    def __init__(self, pg: PgCluster) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.conn = self._run(asyncpg.connect(pg.dsn, timeout=5))

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def active_sleeps(self) -> int:
        return self._run(self.conn.fetchval(ACTIVE_SLEEPS, timeout=5))

    def close(self) -> None:
        try:
            self._run(self.conn.close(timeout=5))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


def pool_state(srv: Any, holder: dict) -> tuple[int, int]:
    pool = holder["pool"]
    return srv.call(lambda: (pool.get_size(), pool.get_idle_size()))


def acquire_works(srv: Any, holder: dict) -> int:
    """Acquire both connections at once on the server's loop: proves none is stuck."""

    async def both() -> int:
        pool = holder["pool"]
        async with pool.acquire(timeout=5) as a, pool.acquire(timeout=5) as b:
            return await a.fetchval("SELECT 1") + await b.fetchval("SELECT 1")

    return asyncio.run_coroutine_threadsafe(both(), srv.loop).result(10)


def run_scenario(pg: PgCluster, policy: str) -> tuple[Probe, float, float]:
    rec = Probe()
    app, holder = make_app(pg, rec, policy)
    monitor = PgMonitor(pg)
    with contextlib.closing(monitor), serve(app, on_disconnect=policy, lifespan="on") as srv:
        assert pool_state(srv, holder) == (2, 2)
        sock = send_request(srv.port, "/sleep")
        try:
            rec.wait("started", 5)
            wait_until(lambda: monitor.active_sleeps() == 1, 5, "pg_sleep active in pg_stat_activity", interval=0.02)
            time.sleep(0.2)
        finally:
            left = hang_up(sock)
        # PostgreSQL's view: the query is gone (target 500 ms, generous bound 2 s).
        gone = wait_until(lambda: monitor.active_sleeps() == 0 and time.monotonic(), 2,
                          "pg_sleep gone from pg_stat_activity after the client left", interval=0.02)
        query_gone_ms = (gone - left) * 1000
        # The pool's view: its connection is back, nothing leaked or replaced by a new one.
        wait_until(lambda: pool_state(srv, holder) == (2, 2), 2,
                   lambda: f"the pool whole again after the client left (size, idle) = {pool_state(srv, holder)}")
        pool_back_ms = (time.monotonic() - left) * 1000
        assert acquire_works(srv, holder) == 2
        assert pool_state(srv, holder) == (2, 2)
    return rec, query_gone_ms, pool_back_ms


def test_cancel_policy_stops_the_query_and_returns_the_connection(postgres: PgCluster) -> None:
    rec, query_gone_ms, pool_back_ms = run_scenario(postgres, "cancel")
    assert "cancelled" in rec, "the handler was not cancelled"
    print(f"\n[postgres/cancel] pg_sleep gone from pg_stat_activity {query_gone_ms:.0f} ms after the client left "
          f"(pool whole after <= {pool_back_ms:.0f} ms)")
    assert query_gone_ms < 2000


def test_notify_policy_app_cancels_the_query_itself(postgres: PgCluster) -> None:
    rec, query_gone_ms, pool_back_ms = run_scenario(postgres, "notify")
    assert "disconnect_seen" in rec, "tether.disconnect.wait() never returned"
    assert "query_cancelled" in rec, "the query task was not cancelled by the app"
    print(f"\n[postgres/notify] pg_sleep gone from pg_stat_activity {query_gone_ms:.0f} ms after the client left "
          f"(pool whole after <= {pool_back_ms:.0f} ms)")
    assert query_gone_ms < 2000
