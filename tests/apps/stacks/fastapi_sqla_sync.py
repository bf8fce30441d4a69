"""FastAPI ``def`` endpoint + SQLAlchemy 2 sync engine (psycopg 3 driver), pool of 5.

    GET /sleep?id=ID&s=20   SELECT pg_sleep(s) on a pooled connection
    GET /ok                 SELECT 1 on the same pool
    GET /pool               the pool's checked-out count
"""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import create_engine, text

from . import _record

APP_NAME = "stacks-sqla-sync"
_record.capture_warnings("sqlalchemy")
engine = create_engine(_record.sqlalchemy_url("psycopg"), pool_size=5, max_overflow=0, pool_timeout=10,
                       connect_args={"application_name": APP_NAME})
app = FastAPI()


@app.get("/sleep")
def sleep(id: str = "-", s: float = 20.0) -> dict:
    rid = _record.request_id(id)
    with engine.connect() as conn:
        _record.record("start", rid)
        conn.execute(text(_record.sleep_sql(rid, s)))
    _record.record("end", rid, "completed")
    return {"slept": s}


@app.get("/ok")
def ok() -> dict:
    with engine.connect() as conn:
        return {"one": conn.execute(text("SELECT 1")).scalar_one()}


@app.get("/pool")
def pool() -> dict:
    return {"checked_out": engine.pool.checkedout(), "status": engine.pool.status()}
