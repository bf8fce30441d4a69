"""The Django ORM: the documented ``connection_created`` signal gives every new database
connection Tether's ``execute_wrapper``, which registers each query with the request whose
thread runs it (sync_to_async carries the request's context into that thread)."""

from __future__ import annotations

from typing import Any

from ..cycle.work import query_started
from . import sync_cancel


def install(module: Any) -> None:
    from django.db.backends.signals import connection_created

    connection_created.connect(_connection_created, weak=False, dispatch_uid="tether.cancel_queries")


def _connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    if _wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.append(_wrapper)


def _wrapper(execute: Any, sql: str, params: Any, many: bool, context: dict) -> Any:
    dbapi = context["connection"].connection
    entry = query_started(dbapi, sync_cancel(dbapi) or sync_cancel(dbapi, "interrupt"))
    try:
        return execute(sql, params, many, context)
    finally:
        if entry is not None:
            entry.close()
