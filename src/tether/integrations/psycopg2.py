"""psycopg2: no execution hook, so ``psycopg2.connect`` is wrapped to give each new connection a
connection class whose cursors (of whatever cursor_factory the app asks for) register their
``execute``/``executemany``/``callproc``; the connection's ``cancel()`` stops them. An app's own
connection_factory is kept: the tracking class subclasses it."""

from __future__ import annotations

import functools
from typing import Any

from . import reporting_class

_CURSORS: dict = {}
_CONNECTIONS: dict = {}


def install(psycopg2: Any) -> None:
    connect = psycopg2.connect
    if getattr(connect, "_tether", False):
        return
    base_connection = psycopg2.extensions.connection
    base_cursor = psycopg2.extensions.cursor

    @functools.wraps(connect)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["connection_factory"] = _connection_class(kwargs.get("connection_factory") or base_connection, base_cursor)
        return connect(*args, **kwargs)

    wrapper._tether = True  # type: ignore[attr-defined]
    psycopg2.connect = wrapper


def _connection_class(base: type, base_cursor: type) -> type:
    sub = _CONNECTIONS.get(base)
    if sub is None:
        class Tracked(base):  # type: ignore[valid-type,misc]
            def cursor(self, *args: Any, **kwargs: Any) -> Any:
                factory = kwargs.get("cursor_factory") or self.cursor_factory or base_cursor
                kwargs["cursor_factory"] = _cursor_class(factory)
                return super().cursor(*args, **kwargs)

        Tracked.__name__ = Tracked.__qualname__ = base.__name__
        sub = _CONNECTIONS[base] = Tracked
    return sub


def _cursor_class(base: type) -> type:
    return reporting_class(base, ("execute", "executemany", "callproc"), "cancel", _CURSORS)
