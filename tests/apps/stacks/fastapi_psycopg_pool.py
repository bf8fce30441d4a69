"""FastAPI ``async def`` + psycopg 3 ``AsyncConnectionPool``.

    GET /sleep?id=ID&s=20   SELECT pg_sleep(s) on a pooled connection (pool of 10 to 40)
    GET /ok                 SELECT 1 on the same pool
    GET /pool               the pool's statistics
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from . import _record

APP_NAME = "stacks-psycopg-pool"
_record.capture_warnings("psycopg", "psycopg.pool")

pool = AsyncConnectionPool(_record.conninfo(APP_NAME), min_size=10, max_size=40, open=False, timeout=10,
                           kwargs={"autocommit": True})


@asynccontextmanager
async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
    await pool.open(wait=True, timeout=10)
    yield
    await pool.close(timeout=5)


app = FastAPI(lifespan=lifespan)


@app.get("/sleep")
async def sleep(id: str = "-", s: float = 20.0) -> dict:
    rid = _record.request_id(id)
    async with pool.connection() as conn:
        _record.record("start", rid)
        await conn.execute(_record.sleep_sql(rid, s))
    _record.record("end", rid, "completed")
    return {"slept": s}


@app.get("/ok")
async def ok() -> dict:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT 1")
        return {"one": (await cur.fetchone())[0]}


@app.get("/pool")
async def pool_stats() -> dict:
    return pool.get_stats()
