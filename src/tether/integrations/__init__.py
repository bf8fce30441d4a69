"""Database queries as part of a request's work: while one runs for a request it is registered
with that request (cycle/work.query_started), so that stopping the work cancels it on the
database server, not only the task or thread that waits for it.

One module per library; each installs itself when the app imports that library (a post-import
hook: nothing is imported for an app that does not use it), at worker start-up, when
``--on-disconnect cancel`` or ``--timeout-request`` is set and ``--cancel-queries`` is on:

* ``sqlalchemy``: the documented engine events (before/after_cursor_execute, handle_error) on
  the Engine class, so every engine, sync or asyncio, reports its queries;
* ``django``: the documented ``connection_created`` signal and ``execute_wrapper``;
* ``psycopg`` (3), ``psycopg2``, ``sqlite3``: these drivers have no execution hook, so their
  ``connect`` is wrapped, as OpenTelemetry's instrumentations do, to give each new connection
  a cursor class that reports its ``execute``; an app's own cursor or connection class is kept
  (subclassed), and nothing else changes.

asyncpg sends the server-side cancel itself when its task is cancelled; under SQLAlchemy, whose
pool may terminate the connection before that cancel is out, the query gets a cancel request
of Tether's own (``asyncpg``: not a hook, the stop SQLAlchemy's events register).
Stopping a query uses the driver's own thread-safe cancel: ``conn.cancel()`` (psycopg 3 and 2:
the server's cancel request, no new login) or sqlite3's ``interrupt()``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import inspect
import sys
import threading
from typing import Any, Callable

from ..cycle.work import query_started
from ..logs import error_logger

# module name -> (this package's module, its install(module) function's name)
_TARGETS = {
    "sqlalchemy.engine": "sqlalchemy",
    "django.db": "django",
    "psycopg": "psycopg",
    "psycopg2": "psycopg2",
    "sqlite3": "sqlite3",
}
_installed: set = set()
_lock = threading.Lock()


def install() -> None:
    """Install each integration now if its library is imported, else when it is."""
    finder = None
    for name in _TARGETS:
        if name in sys.modules:
            _install(name)
        elif finder is None:
            finder = _AfterImport()
    if finder is not None and not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, finder)


def _install(name: str) -> None:
    with _lock:
        if name in _installed:
            return
        _installed.add(name)
    try:
        module = importlib.import_module(f"{__name__}.{_TARGETS[name]}")
        module.install(sys.modules[name])
    except Exception:  # an integration must never stop the app from importing its library
        error_logger.warning("could not hook into %s to cancel its queries", name, exc_info=True)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``_install`` right after one of _TARGETS has been imported (by whoever imports it)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _TARGETS or fullname in _installed:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return None
        spec.loader = _InstallingLoader(loader, fullname)
        return spec


class _InstallingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any, name: str) -> None:
        self.loader = loader
        self.name = name

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        _install(self.name)

    def __getattr__(self, name: str) -> Any:  # (get_resource_reader, is_package, ...)
        return getattr(self.loader, name)


def sync_cancel(connection: Any, name: str = "cancel") -> Callable[[], Any] | None:
    """The connection's thread-safe cancel, if it has a synchronous one."""
    method = getattr(connection, name, None)
    if method is None or inspect.iscoroutinefunction(method):
        return None
    return method


def reporting(method: Any, stop: str) -> Any:
    """``method`` of a cursor class, reporting its query to the current request while it runs:
    the connection is ``self.connection``, its cancel the method named ``stop``."""
    if inspect.iscoroutinefunction(method):
        @functools.wraps(method)
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            conn = self.connection
            entry = query_started(conn, getattr(conn, stop))
            try:
                return await method(self, *args, **kwargs)
            finally:
                if entry is not None:
                    entry.close()
        return wrapper

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[no-redef]
        conn = self.connection
        entry = query_started(conn, getattr(conn, stop))
        try:
            return method(self, *args, **kwargs)
        finally:
            if entry is not None:
                entry.close()
    return wrapper


def reporting_class(base: type, names: tuple, stop: str, cache: dict) -> type:
    """A subclass of the cursor class ``base`` whose methods ``names`` report their queries."""
    sub = cache.get(base)
    if sub is None:
        methods = {name: reporting(getattr(base, name), stop) for name in names if hasattr(base, name)}
        sub = cache[base] = type(base.__name__, (base,), {**methods, "__module__": base.__module__, "_tether": True})
    return sub
