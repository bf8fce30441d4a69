"""Litestar: an ``async def`` handler with an asyncpg pool, and a ``def`` handler
(``sync_to_thread=True``) with psycopg 3 (one connection per request).

    GET /sleep?id=ID&s=20        async def + asyncpg pool of 5
    GET /sleep-sync?id=ID&s=20   def in a thread + psycopg
    GET /ok                      SELECT 1 on the asyncpg pool
"""

from __future__ import annotations

import asyncpg
import psycopg
from litestar import Litestar, get

from . import _record

ASYNC_APP_NAME = "stacks-litestar-asyncpg"
SYNC_APP_NAME = "stacks-litestar-psycopg"
_record.capture_warnings("litestar")
_pools: dict = {}


async def open_pool() -> None:
    _pools["pg"] = await asyncpg.create_pool(_record.dsn(), min_size=1, max_size=5, timeout=10,
                                             server_settings={"application_name": ASYNC_APP_NAME})


async def close_pool() -> None:
    await _pools["pg"].close()


@get("/sleep")
async def sleep(id: str = "-", s: float = 20.0) -> dict:
    rid = _record.request_id(id)
    async with _pools["pg"].acquire() as conn:
        _record.record("start", rid)
        await conn.execute(_record.sleep_sql(rid, s))
    _record.record("end", rid, "completed")
    return {"slept": s}


@get("/sleep-sync", sync_to_thread=True)
def sleep_sync(id: str = "-", s: float = 20.0) -> dict:
    rid = _record.request_id(id)
    with psycopg.connect(_record.conninfo(SYNC_APP_NAME), autocommit=True) as conn:
        _record.record("start", rid)
        conn.execute(_record.sleep_sql(rid, s))
    _record.record("end", rid, "completed")
    return {"slept": s}


@get("/ok")
async def ok() -> dict:
    async with _pools["pg"].acquire() as conn:
        return {"one": await conn.fetchval("SELECT 1")}


app = Litestar([sleep, sleep_sync, ok], on_startup=[open_pool], on_shutdown=[close_pool])
