"""FastAPI ``def`` endpoint running a long sqlite3 query (a recursive CTE), which records its end.

The row count is calibrated once at import so that the query takes about ``s`` seconds here.

    GET /sqlite?id=ID&s=20
    GET /ok
"""

from __future__ import annotations

import sqlite3
import time

from fastapi import FastAPI

from . import _record

_record.capture_warnings()
COUNT_SQL = ("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?) "
             "SELECT count(*) FROM n")


def _rows_per_second() -> float:
    conn = sqlite3.connect(":memory:")
    try:
        rows = 200_000
        started = time.perf_counter()
        conn.execute(COUNT_SQL, (rows,)).fetchone()
        return rows / max(time.perf_counter() - started, 1e-6)
    finally:
        conn.close()


ROWS_PER_SECOND = _rows_per_second()
app = FastAPI()


@app.get("/sqlite")
def long_query(id: str = "-", s: float = 20.0) -> dict:
    rid = _record.request_id(id)
    rows = int(ROWS_PER_SECOND * _record.seconds(s))
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    _record.record("start", rid)
    started = time.monotonic()
    how = "interrupted"
    try:
        count = conn.execute(COUNT_SQL, (rows,)).fetchone()[0]
        how = "completed"
        return {"rows": count}
    finally:
        _record.record("end", rid, f"{how} after {time.monotonic() - started:.3f}s")
        conn.close()


@app.get("/ok")
def ok() -> dict:
    conn = sqlite3.connect(":memory:")
    try:
        return {"one": conn.execute("SELECT 1").fetchone()[0]}
    finally:
        conn.close()
