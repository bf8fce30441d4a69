"""FastAPI ``def`` endpoint + psycopg2, one connection per request.

    GET /sleep?id=ID&s=20   connect, SELECT pg_sleep(s)
    GET /ok                 connect, SELECT 1
"""

from __future__ import annotations

import psycopg2
from fastapi import FastAPI

from . import _record

APP_NAME = "stacks-psycopg2"
_record.capture_warnings()
app = FastAPI()


def _query(sql: str):  # type: ignore[no-untyped-def]
    conn = psycopg2.connect(_record.conninfo(APP_NAME))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        conn.close()


@app.get("/sleep")
def sleep(id: str = "-", s: float = 20.0) -> dict:
    rid = _record.request_id(id)
    _record.record("start", rid)
    _query(_record.sleep_sql(rid, s))
    _record.record("end", rid, "completed")
    return {"slept": s}


@app.get("/ok")
def ok() -> dict:
    return {"one": _query("SELECT 1")}
