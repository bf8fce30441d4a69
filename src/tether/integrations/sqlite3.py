"""sqlite3: no execution hook, so ``sqlite3.connect`` is wrapped to give each new connection a
connection class whose statements (``execute*`` on the connection and its cursors, and the
fetches, where SQLite does most of a query's work) register themselves; the connection's
``interrupt()`` stops them. An app's own ``factory`` is kept: the tracking class subclasses it."""

from __future__ import annotations

import functools
from typing import Any

from . import reporting_class

_CONNECTIONS: dict = {}
_CURSORS: dict = {}


def install(sqlite3: Any) -> None:
    connect = sqlite3.connect
    if getattr(connect, "_tether", False):
        return

    @functools.wraps(connect)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["factory"] = _connection_class(kwargs.get("factory") or sqlite3.Connection, sqlite3.Cursor)
        return connect(*args, **kwargs)

    wrapper._tether = True  # type: ignore[attr-defined]
    sqlite3.connect = wrapper


def _cursor_class(base: type) -> type:
    names = ("execute", "executemany", "executescript", "fetchone", "fetchmany", "fetchall")
    return reporting_class(base, names, "interrupt", _CURSORS)


def _connection_class(base: type, base_cursor: type) -> type:
    sub = _CONNECTIONS.get(base)
    if sub is None:
        class Tracked(base):  # type: ignore[valid-type,misc]
            def cursor(self, factory: Any = None) -> Any:
                return super().cursor(_cursor_class(factory or base_cursor))

            def execute(self, *args: Any) -> Any:
                return self.cursor().execute(*args)

            def executemany(self, *args: Any) -> Any:
                return self.cursor().executemany(*args)

            def executescript(self, *args: Any) -> Any:
                return self.cursor().executescript(*args)

        Tracked.__name__ = Tracked.__qualname__ = base.__name__
        sub = _CONNECTIONS[base] = Tracked
    return sub
