"""FastAPI ``def`` endpoint + psycopg 3 (sync), one connection per request.

FastAPI runs ``def`` endpoints in anyio's thread pool (40 threads by default), so 110 abandoned
requests must never hold more than 40 threads or PostgreSQL connections.

    GET /sleep?id=ID&s=20   (def) connect, SELECT pg_sleep(s)
    GET /ok                 (async def) connect, SELECT 1: PostgreSQL still takes connections
"""

from __future__ import annotations

import psycopg
from fastapi import FastAPI

from . import _record

APP_NAME = "stacks-psycopg-sync"
_record.capture_warnings("psycopg")
app = FastAPI()


@app.get("/sleep")
def sleep(id: str = "-", s: float = 20.0) -> dict:
    rid = _record.request_id(id)
    with psycopg.connect(_record.conninfo(APP_NAME), autocommit=True) as conn:
        _record.record("start", rid)
        conn.execute(_record.sleep_sql(rid, s))
    _record.record("end", rid, "completed")
    return {"slept": s}


@app.get("/ok")
async def ok() -> dict:
    async with await psycopg.AsyncConnection.connect(_record.conninfo(APP_NAME + "-ok")) as conn:
        cur = await conn.execute("SELECT 1")
        return {"one": (await cur.fetchone())[0]}
