"""asyncpg under SQLAlchemy: a cancel request of Tether's own for the query in flight.

asyncpg cancels a query on the server when its task is cancelled, but from a task of the
connection's own (``Connection._cancel``, which opens a connection to the server to send the
cancel request), and a connection terminated before that task has sent it cancels the task
(``Connection._clean_tasks``): the query then runs on to its end on the server. SQLAlchemy's
pool terminates the connection of a cancelled task when it checks it in, a few milliseconds
after the cancel; whenever the cancel request took longer than that (a loaded machine, a
database across a network), the abandoned query ran on, its backend outside the pool's bound.

So the query SQLAlchemy reports gets the stop below: the same cancel request
(``asyncpg.connect_utils._cancel``, asyncpg's own code, private but stable since 0.27), sent as
a task of no connection, which the connection's end does not cancel. Used directly (no
SQLAlchemy), asyncpg's own cancel is enough: its pool waits for it before reusing the
connection, so nothing is registered there.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

CANCEL_TIMEOUT = 5.0  # the most a cancel request may take (a thread of the stop pool waits)


def stop_for(connection: Any) -> Callable[[], Any] | None:
    """The thread-safe stop for the query in flight on an asyncpg ``Connection`` (None for
    anything else, or an asyncpg whose internals differ)."""
    module = type(connection).__module__
    if not module.startswith("asyncpg"):
        return None
    try:
        from asyncpg import connect_utils
        protocol = connection._protocol
        loop, addr, params = connection._loop, connection._addr, connection._params
        pid, secret = protocol.backend_pid, protocol.backend_secret
        send = connect_utils._cancel
    except (ImportError, AttributeError):
        return None

    def stop() -> None:
        request = send(loop=loop, addr=addr, params=params, backend_pid=pid, backend_secret=secret)
        asyncio.run_coroutine_threadsafe(request, loop).result(CANCEL_TIMEOUT)

    return stop
