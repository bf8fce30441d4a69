"""FastAPI ``async def`` + SQLAlchemy 2 asyncio + asyncpg; ``app_middleware`` is the same app
behind a pass-through Starlette ``BaseHTTPMiddleware`` (which runs the route in a child task).

    GET /sleep?id=ID&s=20   SELECT pg_sleep(s) in a session from a pool of 5
    GET /ok                 SELECT 1 on the same pool
    GET /pool               the pool's checked-out count

STACKS_SLOW_ASYNCPG_CANCEL=S delays asyncpg's own cancel request (the task of the connection
that sends it) by S seconds: a loaded machine, or a database far away, where SQLAlchemy's
checkin terminates the connection before that request is out.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from starlette.middleware.base import BaseHTTPMiddleware

from . import _record

_record.capture_warnings("sqlalchemy")

if os.environ.get("STACKS_SLOW_ASYNCPG_CANCEL"):
    from asyncpg.connection import Connection

    _own_cancel = Connection._cancel

    async def _slow_cancel(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        await asyncio.sleep(float(os.environ["STACKS_SLOW_ASYNCPG_CANCEL"]))
        return await _own_cancel(self, *args, **kwargs)

    Connection._cancel = _slow_cancel


class PassThrough(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):  # type: ignore[no-untyped-def]
        return await call_next(request)


def build(app_name: str, middleware: bool = False) -> FastAPI:
    engine = create_async_engine(
        _record.sqlalchemy_url("asyncpg"), pool_size=5, max_overflow=0, pool_timeout=10,
        connect_args={"server_settings": {"application_name": app_name}},
    )
    sessions = async_sessionmaker(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/sleep")
    async def sleep(id: str = "-", s: float = 20.0) -> dict:
        rid = _record.request_id(id)
        async with sessions() as session:
            _record.record("start", rid)
            await session.execute(text(_record.sleep_sql(rid, s)))
        _record.record("end", rid, "completed")
        return {"slept": s}

    @app.get("/ok")
    async def ok() -> dict:
        async with sessions() as session:
            return {"one": (await session.execute(text("SELECT 1"))).scalar_one()}

    @app.get("/pool")
    async def pool() -> dict:
        return {"checked_out": engine.pool.checkedout(), "status": engine.pool.status()}

    if middleware:
        app.add_middleware(PassThrough)
    return app


app = build("stacks-sqla-asyncpg")
app_middleware = build("stacks-sqla-asyncpg-mw", middleware=True)
