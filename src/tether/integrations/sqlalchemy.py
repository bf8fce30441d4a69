"""SQLAlchemy (sync and asyncio engines): the documented engine events, on the Engine class so
that every engine reports its queries. The query is registered under its DBAPI connection, so
that the driver's own hook (psycopg, psycopg2, sqlite3) and this one make one entry; asyncpg's
connection gets a cancel of Tether's own (see asyncpg.py)."""

from __future__ import annotations

from typing import Any

from ..cycle.work import query_started
from . import asyncpg, sync_cancel

_ENTRY = "_tether_query"


def install(module: Any) -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.listen(Engine, "before_cursor_execute", _before)
    event.listen(Engine, "after_cursor_execute", _after)
    event.listen(Engine, "handle_error", _error)


def _dbapi(conn: Any) -> Any:
    dbapi = conn.connection.dbapi_connection
    inner = getattr(dbapi, "driver_connection", None)  # (the asyncio adapters wrap the driver's)
    return inner if inner is not None else dbapi


def _before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
    dbapi = _dbapi(conn)
    entry = query_started(dbapi, sync_cancel(dbapi) or sync_cancel(dbapi, "interrupt") or asyncpg.stop_for(dbapi))
    if entry is not None and context is not None:
        setattr(context, _ENTRY, entry)


def _after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
    entry = getattr(context, _ENTRY, None)
    if entry is not None:
        setattr(context, _ENTRY, None)
        entry.close()


def _error(exception_context: Any) -> None:
    context = exception_context.execution_context
    entry = getattr(context, _ENTRY, None) if context is not None else None
    if entry is not None:
        setattr(context, _ENTRY, None)
        entry.close()
