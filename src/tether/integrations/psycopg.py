"""psycopg 3 (sync and async): no execution hook, so ``Connection.connect`` and
``AsyncConnection.connect`` are wrapped to give each new connection (psycopg_pool's too) cursor
classes that register their ``execute``/``executemany``; the connection's ``cancel()`` stops them.
An app's own cursor_factory is kept: the tracking class subclasses it."""

from __future__ import annotations

import functools
from typing import Any

from . import reporting_class

_SUBCLASSES: dict = {}


def install(psycopg: Any) -> None:
    for cls, is_async in ((psycopg.Connection, False), (psycopg.AsyncConnection, True)):
        connect = cls.__dict__["connect"].__func__
        if getattr(connect, "_tether", False):
            continue
        wrapped = _async_connect(connect) if is_async else _connect(connect)
        wrapped._tether = True  # type: ignore[attr-defined]
        cls.connect = classmethod(wrapped)
    psycopg.connect = psycopg.Connection.connect  # (psycopg binds its module-level connect at import)


def _track(conn: Any) -> Any:
    conn.cursor_factory = _tracking(conn.cursor_factory)
    conn.server_cursor_factory = _tracking(conn.server_cursor_factory)
    return conn


def _connect(connect: Any) -> Any:
    @functools.wraps(connect)
    def wrapper(cls: Any, *args: Any, **kwargs: Any) -> Any:
        return _track(connect(cls, *args, **kwargs))
    return wrapper


def _async_connect(connect: Any) -> Any:
    @functools.wraps(connect)
    async def wrapper(cls: Any, *args: Any, **kwargs: Any) -> Any:
        return _track(await connect(cls, *args, **kwargs))
    return wrapper


def _tracking(base: type) -> type:
    if getattr(base, "_tether", False):
        return base
    return reporting_class(base, ("execute", "executemany"), "cancel", _SUBCLASSES)
